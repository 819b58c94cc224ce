# `make bench-beyond`: the tasks beyond the paper's claims (docs/divisor.md,
# docs/adaptive_margins.md, docs/skip_settled.md), with quick's settings, seeds and
# tuned.json; results in benchmarks/beyond/:
#   python -m hem_plugins.benchmark --profile beyond --out benchmarks/beyond
_base_ = "quick.py"

only_tasks = ["adaptive_margins", "skip_settled", "divisor"]
tasks = dict(
    # 3 seeds x 3 repeats = 9 paired training seeds, about 80 s on one CPU thread.
    skip_settled=dict(repeats=3),
    # Adaptive margins: 3e's DigitMosaic at 500 iterations (not 300, where HEM+ is just below
    # the 0.5 train-mAcc health threshold), every seed: 4 losses x 5 seeds = 20 runs of ~40 s
    # on one idle thread. The lr grid is cut to {0.05, 0.1} (0.02 was never chosen by HEM+
    # or CE in 3e's tuning) to fit the tune run in ~10 minutes.
    adaptive_margins=dict(
        segmentation=dict(iters=500, max_seeds=None, selection=dict(grid=dict(lr=[0.05, 0.1])))
    ),
    # HEM's divisor: the classification parts on every seed (~5 CPU minutes), 3e as above.
    divisor=dict(segmentation=dict(iters=300, max_seeds=2)),
)
