# `make bench`: 5 seeds, every task on the data that ships with the dependencies.
# Hyper-parameters come from tuned.json, which the tune profile chose on validation
# splits of the training data (`python tools/benchmark.py --profile tune`).
_base_ = "_base.py"

seeds = [0, 1, 2, 3, 4]
selection = dict(mode="tuned", file="tuned.json")

# 3e costs ~0.06-0.09 s per iteration on one CPU thread plus a few seconds per run: 300 of
# the configs' 2000 iterations over the first 2 seeds (8 runs, ~4 minutes), so that the
# whole profile stays under 20 minutes on 2 shared cores.
tasks = dict(
    segmentation=dict(iters=300, max_seeds=2),
    # 3 seeds x 3 repeats = 9 paired training seeds, about 80 s on one CPU thread.
    skip_settled=dict(repeats=3),
)
