# Both targets do all set-up on a fresh machine: a venv, torch 2.13.0 pinned first (here the pin resolves to the
# local CPU build; an unpinned torch pulls a multi-GB CUDA build), then the package in editable mode with its
# dev, sweep and embed extras. A CUDA machine: make install TORCH_INDEX=<PyTorch's wheel index for its CUDA>.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
TORCH ?= torch==2.13.0
TORCH_INDEX ?=

.PHONY: demo test install bench lint clean

$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $(TORCH) $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX))
	$(PY) -m pip install -q -e '.[dev,sweep,embed]' $(TORCH)
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(PY) -m mvqa.demo

test: $(STAMP)
	$(PY) -m pytest -q

lint: $(STAMP)
	$(PY) -m ruff check mvqa tests bench *.py

bench: $(STAMP)
	for b in bench/*.py; do $(PY) $$b || exit 1; done

clean:
	rm -rf outputs multirun .cache
