# Two commands on a fresh machine: `make test` and `make bench`.
# tools/setup_env.py creates .venv and installs the stack pinned in
# pyproject.toml (building mmcv's wheel once, cached outside the repo); on a
# warm machine it installs nothing.
PY := .venv/bin/python
PYTEST_ARGS ?=

.PHONY: test bench lint format env

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

# The benchmark suite (quick profile: report.md, plots, results.json), then the loss timing.
bench: env
	$(PY) -m hem_plugins.benchmark --profile quick --out work_dirs/benchmark/quick
	$(PY) tools/bench_loss.py --out work_dirs/bench_loss.json \
		--e2e configs/mmseg/fcn-r18tiny_digitmosaic_hemplus.py --e2e-batch 8
