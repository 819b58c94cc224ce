# `make bench-beyond`: the tasks beyond the paper's claims (docs/divisor.md,
# docs/adaptive_margins.md, docs/skip_settled.md, docs/margin_scaling.md,
# docs/anomaly_segmentation.md, docs/settled_rule.md), with quick's settings, seeds and tuned.json; results in
# benchmarks/beyond/:
#   python -m hem_plugins.benchmark --profile beyond --out benchmarks/beyond
_base_ = "quick.py"

# Its tasks: hem_plugins.benchmark.tasks.BEYOND_TASKS (the loader's `only_tasks` for beyond).
tasks = dict(
    # 5 seeds x 3 repeats = 15 paired training seeds, about a minute of CPU time.
    skip_settled=dict(repeats=3),
    # Adaptive margins and the divisor: their DigitMosaic parts have 3e's recipe and seeds.
    adaptive_margins=dict(segmentation=dict(max_seeds=3)),
    divisor=dict(segmentation=dict(max_seeds=3)),
    # 4 losses x 3 seeds of 3e's DigitMosaic runs, 3e's lr (tuned.json's segmentation keys);
    # LogitNorm's lr chosen on validation in the task (3e has none).
    anomaly_segmentation=dict(max_seeds=3),
)
