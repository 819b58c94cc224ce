# `make bench`: 3 seeds, every classification task on digits and MNIST-1D.
_base_ = "_base.py"

# 3e costs ~0.06-0.09 s per iteration on one CPU thread plus a few seconds per run: 300 of
# the configs' 2000 iterations over the first 2 seeds (8 runs, ~4 minutes), so that the
# whole profile stays under 20 minutes on 2 shared cores.
tasks = dict(
    segmentation=dict(iters=300, max_seeds=2),
    # 3 seeds x 3 repeats = 9 paired training seeds, about 80 s on one CPU thread.
    skip_settled=dict(repeats=3),
)
