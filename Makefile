# Two commands on a fresh machine: `make test` and `make bench`.
# tools/setup_env.py creates .venv and installs the stack pinned in
# pyproject.toml (building mmcv's wheel once, cached outside the repo); on a
# warm machine it installs nothing.
PY := .venv/bin/python
PYTEST_ARGS ?=

.PHONY: test bench bench-beyond lint format env test-torch-range

env:
	python3 tools/setup_env.py

lint: env
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

format: env
	$(PY) -m ruff format .
	$(PY) -m ruff check --fix .

test: env lint
	$(PY) -m pytest --doctest-modules hem_plugins tests $(PYTEST_ARGS)

# The benchmark suite (quick profile, the paper's claims 3a-3g: report.md, plots,
# results.json), then the loss timing. quick and beyond read configs/benchmark/tuned.json:
# after a change of code or configs, the tune profile first (docs/benchmarks.md, "Provenance").
bench: env
	$(PY) -m hem_plugins.benchmark --profile quick --out work_dirs/benchmark/quick --jobs 2
	$(PY) tools/bench_loss.py --out work_dirs/bench_loss.json \
		--e2e configs/mmseg/fcn-r18tiny_digitmosaic_hemplus.py --e2e-batch 8

# The tasks beyond the paper (divisor, adaptive margins, skipping settled samples, the
# margin's scaling law): the beyond profile, quick's settings and seeds.
bench-beyond: env
	$(PY) -m hem_plugins.benchmark --profile beyond --out work_dirs/benchmark/beyond --jobs 2

# The core's tests (hem_plugins with torch alone) on the oldest torch it supports and on the
# newest one pip offers, each in a venv of its own with the package installed editable, no
# extras; created once (a few GB), the newest upgraded on each run. Before a release; not
# part of `make test`. numpy<2 for torch 2.1, which is built against numpy 1.
TORCH_oldest := "torch==2.1.2" "numpy<2"
TORCH_newest := torch numpy
CORE_TESTS := tests/core tests/implementations

# .venv-torch-oldest and .venv-torch-newest: the torch of TORCH_<end>, then the package.
.venv-torch-%/.installed:
	rm -rf .venv-torch-$*
	python3 -m venv .venv-torch-$*
	.venv-torch-$*/bin/python -m pip install --quiet $(TORCH_$*) pytest pytest-timeout
	.venv-torch-$*/bin/python -m pip install --quiet -e .
	touch $@

test-torch-range: .venv-torch-oldest/.installed .venv-torch-newest/.installed
	.venv-torch-newest/bin/python -m pip install --quiet --upgrade $(TORCH_newest)
	for v in oldest newest; do \
		.venv-torch-$$v/bin/python -c "import torch; print('torch', torch.__version__)" && \
		.venv-torch-$$v/bin/python -m pytest -q -p no:cacheprovider $(CORE_TESTS) $(PYTEST_ARGS) \
			|| exit 1; \
	done
