# More seeds, epochs and data (hours on 2 CPU cores; minutes with --device cuda).
_base_ = "_base.py"

seeds = [0, 1, 2, 3, 4]
dataset_options = dict(mnist1d=dict(num_samples=10000))
train = dict(epochs=60)
tasks = dict(
    adversarial=dict(pgd_steps=20, apgd_steps=50, max_eval=2000),
    imbalanced=dict(ratios=[10, 50, 100]),
    lr_sensitivity=dict(lrs=[0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5]),
    # 3d: PermutedDigits with the recipe's 10 epochs per experience, as SplitDigits
    continual=dict(
        scenarios=dict(domain_incremental=dict(options=dict(strategy=dict(train_epochs=10))))
    ),
    segmentation=dict(iters=2400, curve_points=8),  # every seed, twice quick's iterations
    skip_settled=dict(repeats=4, continual=dict(epochs=20)),
)
