"""Time and memory of the HEM losses against cross-entropy (``tools/bench_loss.py``,
``python -m hem_plugins.benchmark.timing``).

* :mod:`.cli`: the command line;
* :mod:`.cases`: the shapes, inputs and losses timed (``--implementation`` picks what
  ``hem_loss`` runs, through :func:`hem_plugins.implementations.use`);
* :mod:`.timing`: the clocks, the interleaved sampling loop, the saved-for-backward bytes;
* :mod:`.memory`: the peak memory of one forward+backward;
* :mod:`.shapes`: one row of the bandwidth / memory table per shape, and the profiler view;
* :mod:`.e2e`: one mmseg training iteration with the registry-built loss against CE
  (:mod:`.mmseg_setup`: the config's model dict and a synthetic batch);
* :mod:`.suite`: ``--suite small`` (MLP training steps, loss-only calls at many shapes);
* :mod:`.report`: the printed tables and the JSON.
"""
