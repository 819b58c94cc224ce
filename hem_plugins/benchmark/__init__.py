"""The benchmark suite: the paper's experiments in miniature (``tools/benchmark.py``).

Not imported by ``import hem_plugins``: this subpackage needs the ``bench``
extras (scikit-learn, mnist1d, torchmetrics, torchattacks, matplotlib, rich).

Layout:

* :mod:`.config` -- profiles (``configs/benchmark/*.py``, plain Python with ``_base_``).
* :mod:`.data` -- digits, MNIST-1D, and MNIST / CIFAR from ``--data-root``; open-set
  and long-tailed splits.
* :mod:`.models`, :mod:`.losses`, :mod:`.training`, :mod:`.metrics` -- the shared
  model, the losses by name, the training loop and library-backed metrics;
  :mod:`.baselines` -- the rival losses no installed library provides;
  :mod:`.protocol` -- selection on validation data, health, paired verdicts.
* :mod:`.tasks` -- one module per task, registered in :data:`.tasks.TASKS`; each is a
  :class:`.tasks.base.Task` (``units``, ``run_seed``, ``render``, ``summary``, ``headline``).
* :mod:`.settled_runs`, :mod:`.settled_plain` -- the runs that measure skipping settled
  samples (task ``skip_settled``; ``tools/skip_settled.py``).
* :mod:`.report` -- aggregation (mean +- std over seeds), ``report.md``, the headline
  table; :mod:`.runner` -- runs a profile and writes ``results.json`` and the report;
  :mod:`.cli` -- ``python -m hem_plugins.benchmark``.
* :mod:`.mmseg`, :mod:`.avalanche` -- the toolkits' experiment side (DigitMosaic and the
  mmseg runner; SplitDigits, models and the Avalanche runner); :mod:`.digits` --
  scikit-learn's digits; :mod:`.timing` -- time and memory of the losses
  (``tools/bench_loss.py``).
"""
