# Chooses the hyper-parameters of the quick and beyond profiles on validation data and
# writes tuned.json (both profiles read it):
#   python -m hem_plugins.benchmark --profile tune --out work_dirs/benchmark/tune
# Run it before quick and beyond: tuned.json is part of their results' content hash
# (hem_plugins/benchmark/provenance.py). Same settings as beyond (which has quick's), but
# every run selects (the whole grid is trained on the training data less its validation
# carve); the validation scores are averaged over these seeds.
_base_ = "beyond.py"

# Seeds that no evaluated profile uses (quick and full use 0-4): the validation carves,
# long-tailed subsamples and initialisations that choose the hyper-parameters are never those
# of a run that reports a test number. The test split itself is one per dataset, the same for
# every seed (hem_plugins.benchmark.data.TEST_SPLIT_SEED), and no seed's carve holds a test
# sample.
seeds = [100, 101]
selection = dict(mode="validation")
write_tuned = "tuned.json"
# Its tasks: hem_plugins.benchmark.tasks.TUNE_TASKS (the loader's `only_tasks` for tune), quick's
# and beyond's but 3g (lr_sensitivity), which selects nothing.
# skip_settled selects the lr of its full training run only: no repeats, no continual part.
# 3d and 3e select on seed 100 alone: their grids cost 36 keys x 5 trainings of ~2 s (3d) and
# 3 lrs x 6 losses x ~30 s (3e) per seed.
tasks = dict(
    skip_settled=dict(repeats=1, continual=None),
    continual=dict(max_seeds=1),
    segmentation=dict(max_seeds=1),
    adaptive_margins=dict(segmentation=dict(max_seeds=1)),
    # 3g trains every lr of its grid (no selection); 3e's part selects on seed 100 alone.
    divisor=dict(parts=["openset", "imbalanced", "segmentation"], segmentation=dict(max_seeds=1)),
)
