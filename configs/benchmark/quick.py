# `make bench`: the paper's claims 3a-3g, 5 seeds, on the data that ships with the
# dependencies (the tasks beyond the paper are the beyond profile's, `make bench-beyond`).
# Hyper-parameters come from tuned.json, which the tune profile chose on validation
# splits of the training data (`python -m hem_plugins.benchmark --profile tune`): run that
# first when the code or configs change, then this profile and beyond.
_base_ = "_base.py"

seeds = [0, 1, 2, 3, 4]
selection = dict(mode="tuned", file="tuned.json")
only_tasks = [
    "openset",
    "adversarial",
    "imbalanced",
    "continual",
    "segmentation",
    "ablation",
    "lr_sensitivity",
]

# 3e costs ~8 s per 100 iterations on one CPU thread (2-3x that when the 2 cores are
# shared) plus ~6 s per run (Runner set-up, validation, test and train-fit evaluation): 300
# of the configs' 2000 iterations over the first 2 seeds (6 losses x 2 seeds = 12 runs,
# ~6 minutes with the tuned lr) keeps the whole profile under 20 minutes on 2 shared cores.
# It is short of training: train mAcc at 300 iterations (lr 0.05, seed 0) CE 0.14, CE+OHEM
# 0.13, Focal 0.09, Dice 0.09, HEM 0.34, HEM+ 0.50; CE (lr 0.1) 0.15 / 0.26 / 0.44 / 0.81
# at 300 / 600 / 1000 / 2000. Health needs 0.5, so 3e names those runs unhealthy and
# draws no verdict from them; its verdicts come from the full profile.
tasks = dict(
    # 3d: 36 trainings of ~2 s per seed; 3 seeds (3d is not among the tasks that need 5).
    continual=dict(max_seeds=3),
    segmentation=dict(iters=300, max_seeds=2),
)
