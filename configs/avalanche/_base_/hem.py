# HEM recipe: HEM's gradient does not shrink as the errors vanish (it is normalised by the
# number of kept errors), so it wants a smaller lr than CE: lr 0.02 was the best of
# {0.01, 0.02, 0.05, 0.1} for Replay on class-incremental SplitDigits by the final accuracy
# on a validation stream carved from the training experiences (20 %, seed 0; the test stream
# unseen): `python tools/benchmark.py --profile tune --tasks continual --seeds 0`
# (README, Avalanche: Recipe).
# Cosine schedule restarted at every experience. ExperienceMarginsPlugin sets the margin from the
# number of samples trained on in each experience (dataset + replay buffer).
criterion = dict(type="HEMLoss")
optimizer = dict(type="SGD", lr=0.02, momentum=0.9)
lr_scheduler = dict(type="CosineAnnealingLR")
plugins = [dict(type="ExperienceMarginsPlugin")]
