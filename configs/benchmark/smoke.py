# Every task end to end on tiny settings (tests use it): one seed, 2 epochs; every run
# selects its lr on validation data from a grid of two.
_base_ = "_base.py"

seeds = [0]
dataset_options = dict(mnist1d=dict(num_samples=500))
train = dict(epochs=2)
selection = dict(
    grid=dict(lr=[0.03, 0.1]),
    grid_by_loss=dict(logitnorm=dict(lr=[0.1], temperature=[0.04, 0.5])),
)
tasks = dict(
    adversarial=dict(eps=[0.05], pgd_steps=2, apgd_steps=2, max_eval=200),
    imbalanced=dict(ratios=[10]),
    lr_sensitivity=dict(lrs=[0.01, 0.1], curve_lr=0.1),
    continual=dict(epochs=1, selection=dict(grid=dict(lr=[0.02, 0.1]))),
    # a few SGD steps per loss and lr: the pipeline (selection, test, health), not the numbers
    segmentation=dict(
        iters=4, curve_points=2, selection=dict(mode="validation", grid=dict(lr=[0.003, 0.01]))
    ),
    adaptive_margins=dict(
        ratios=[10],
        segmentation=dict(
            iters=4, curve_points=2, selection=dict(mode="validation", grid=dict(lr=[0.01]))
        ),
    ),
    margin_scaling=dict(
        sizes=dict(mnist1d=[100, 200, 400], digits=[50, 100, 200]),
        val_size=dict(mnist1d=200, digits=100),
        factors=[0.354, 1.0, 2.83],
        steps=10,
        dataset_options=dict(mnist1d=dict(num_samples=1000)),
    ),
    anomaly_segmentation=dict(
        iters=4,
        own_lr=dict(logitnorm=[0.01]),
        selection=dict(mode="validation", grid=dict(lr=[0.01])),
    ),
    skip_settled=dict(repeats=1, classification=dict(epochs=3), continual=dict(epochs=1)),
    settled_rule=dict(repeats=1, epochs=2, pgd_steps=2),
    divisor=dict(
        floors=[0.1, 1.0],
        imbalanced=dict(ratios=[10]),
        lr_sensitivity=dict(lrs=[0.1]),
        segmentation=dict(
            iters=4, curve_points=2, selection=dict(mode="validation", grid=dict(lr=[0.01]))
        ),
    ),
)
