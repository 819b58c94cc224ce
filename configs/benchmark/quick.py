# `make bench`: 3 seeds, every classification task on digits and MNIST-1D.
_base_ = "_base.py"

tasks = dict(
    # 3 seeds x 3 repeats = 9 paired training seeds, about 80 s on one CPU thread.
    skip_settled=dict(repeats=3),
)
