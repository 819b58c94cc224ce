# Cross-entropy recipe: SGD with momentum, cosine schedule restarted at every experience.
criterion = dict(type="CrossEntropyLoss")
optimizer = dict(type="SGD", lr=0.05, momentum=0.9)
lr_scheduler = dict(type="CosineAnnealingLR")
plugins = []
