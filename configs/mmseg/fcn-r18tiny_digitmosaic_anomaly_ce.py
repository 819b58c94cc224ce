# Anomaly segmentation on DigitMosaic: the digits 8 and 9 never appear in training; in the
# val mosaics their pixels are labelled 254 (the anomaly label). The tiny FCN with CE
# learns the 9 known classes (background + digits 0-7); validation reports mIoU over the
# known classes and, from the decode head's logits, the unknown-rejection metrics of
# AnomalyMetric (AUROC, AP, FPR95 of MSP, max logit and energy). The _hem and _hemplus
# configs change only the loss. See docs/mmseg.md and docs/anomaly_segmentation.md.
#   python tools/train_seg.py configs/mmseg/fcn-r18tiny_digitmosaic_anomaly_ce.py
_base_ = "./fcn-r18tiny_digitmosaic_ce.py"
custom_imports = dict(
    imports=["hem_plugins.mmseg", "hem_plugins.benchmark.mmseg"], allow_failed_imports=False
)
unknown_digits = (8, 9)
num_classes = 9  # background + the 8 known digits
anomaly_label = 254
train_dataloader = dict(
    dataset=dict(type="DigitMosaicAnomalyDataset", unknown_digits=unknown_digits)
)
val_dataloader = dict(dataset=dict(type="DigitMosaicAnomalyDataset", unknown_digits=unknown_digits))
test_dataloader = val_dataloader
model = dict(
    decode_head=dict(num_classes=num_classes),
    auxiliary_head=dict(num_classes=num_classes),
)
# IoUMetric: the anomaly pixels (254) are no class of its, so they add to no class's
# ground truth; what the model predicts there still counts against the predicted class.
val_evaluator = [
    dict(type="IoUMetric", iou_metrics=["mIoU"]),
    dict(
        type="AnomalyMetric",
        anomaly_label=anomaly_label,
        ignore_index=255,
        scores=("msp", "max_logit", "energy"),
    ),
]
test_evaluator = val_evaluator
