# Cross-entropy recipe: SGD with momentum, cosine schedule restarted at every experience.
# lr 0.1 was the best of {0.01, 0.02, 0.05, 0.1} for Replay on class-incremental SplitDigits
# by the final accuracy on a validation stream carved from the training experiences (20 %,
# seed 0; the test stream unseen): `python tools/benchmark.py --profile tune --tasks continual --seeds 0`
# (README, Avalanche: Recipe).
criterion = dict(type="CrossEntropyLoss")
optimizer = dict(type="SGD", lr=0.1, momentum=0.9)
lr_scheduler = dict(type="CosineAnnealingLR")
plugins = []
