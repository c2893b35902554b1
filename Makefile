# Both targets do all set-up on a fresh machine: a venv, torch 2.13.0 pinned first (here the pin resolves to the
# local CPU build; an unpinned torch pulls a multi-GB CUDA build), then the package in editable mode with its
# dev, sweep and embed extras. A CUDA machine: make install TORCH_INDEX=<PyTorch's wheel index for its CUDA>.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
TORCH ?= torch==2.13.0
TORCH_INDEX ?=

.PHONY: demo test test-fast install bench lint clean

# torch comes from pip (pip's configuration finds the local CPU wheel here; uv reads no pip.conf), everything
# else from uv, several times faster than pip at resolving and installing the ~150 other packages. Passing
# $(TORCH) again keeps the installed torch: 2.13.0+cpu satisfies ==2.13.0. --compile-bytecode writes the .pyc
# files once (pip does for torch; uv does not by default): where PYTHONDONTWRITEBYTECODE=1 is set, as on these
# machines, every Python process otherwise compiles lightning, transformers, peft, sklearn... from source,
# about 20 s each, and the demo and the suite start dozens of them.
$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q uv
	$(PY) -m pip install -q $(TORCH) $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX))
	$(VENV)/bin/uv pip install -q --compile-bytecode --python $(PY) -e '.[dev,sweep,embed]' $(TORCH)
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(PY) -m mvqa.demo

# The whole suite (what CI runs, CI=true: the real-data tests fail instead of skipping without MVQA_DATA), on
# TEST_WORKERS pytest-xdist workers (default 2, one per core here; 0: one process), one OpenMP thread each, a
# file's tests on one worker (--dist loadfile: module-scoped fixtures built once), the longest files first
# (tests/conftest.py). From a fresh clone on this 2-core machine two workers took 6 min 58 s of tests; one
# process took 13 min 40 s before this round (tiny models' small matrices gain little from a second thread).
TEST_WORKERS ?= 2
test: $(STAMP)
	$(if $(filter-out 0,$(TEST_WORKERS)),OMP_NUM_THREADS=1) $(PY) -m pytest -q \
		$(if $(filter-out 0,$(TEST_WORKERS)),-n $(TEST_WORKERS) --dist loadfile)

# The development loop: everything not marked slow (a spawned entry, a training run, a model build), on the
# same workers.
test-fast: $(STAMP)
	OMP_NUM_THREADS=1 $(PY) -m pytest -q -m "not slow" \
		$(if $(filter-out 0,$(TEST_WORKERS)),-n $(TEST_WORKERS) --dist loadfile)

lint: $(STAMP)
	$(PY) -m ruff check mvqa tests bench *.py

bench: $(STAMP)
	for b in bench/*.py; do $(PY) $$b || exit 1; done

clean:
	rm -rf outputs multirun .cache
