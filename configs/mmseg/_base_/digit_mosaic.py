# DigitMosaic (hem_plugins.benchmark.mmseg.DigitMosaicDataset): 64x64 canvases of scikit-learn digits,
# 11 classes (background + 10 digits), 400 train / 100 val images, generated once into
# ~/.cache/hem_plugins/digit_mosaic/. No download.
custom_imports = dict(imports=["hem_plugins.benchmark.mmseg"], allow_failed_imports=False)

dataset_type = "DigitMosaicDataset"
train_pipeline = [
    dict(type="LoadImageFromFile"),
    dict(type="LoadAnnotations"),
    dict(type="PackSegInputs"),
]
test_pipeline = [
    dict(type="LoadImageFromFile"),
    dict(type="LoadAnnotations"),
    dict(type="PackSegInputs"),
]
train_dataloader = dict(
    batch_size=8,
    num_workers=1,
    persistent_workers=True,
    sampler=dict(type="InfiniteSampler", shuffle=True),
    dataset=dict(type=dataset_type, split="train", pipeline=train_pipeline),
)
val_dataloader = dict(
    batch_size=10,
    num_workers=1,
    persistent_workers=True,
    sampler=dict(type="DefaultSampler", shuffle=False),
    dataset=dict(type=dataset_type, split="val", pipeline=test_pipeline),
)
test_dataloader = val_dataloader
val_evaluator = dict(type="IoUMetric", iou_metrics=["mIoU"])
test_evaluator = val_evaluator
