"""The benchmark suite: the paper's experiments in miniature (``tools/benchmark.py``).

Not imported by ``import hem_plugins``: this subpackage needs the ``bench``
extras (scikit-learn, mnist1d, torchmetrics, torchattacks, matplotlib, rich).

Layout:

* :mod:`.config` -- profiles (``configs/benchmark/*.py``, plain Python with ``_base_``).
* :mod:`.data` -- digits, MNIST-1D, and MNIST / CIFAR from ``--data-root``; open-set
  and long-tailed splits.
* :mod:`.models`, :mod:`.losses`, :mod:`.training`, :mod:`.metrics` -- the shared
  model, the losses by name, the training loop and library-backed metrics.
* :mod:`.tasks` -- one module per task, registered in :data:`.tasks.TASKS`; each
  has ``run_seed(settings, seed, ctx) -> dict`` and ``render(result, out_dir) -> str``.
* :mod:`.report` -- aggregation (mean +- std over seeds), ``report.md``, the headline
  table; :mod:`.runner` -- runs a profile and writes ``results.json`` and the report.
"""
