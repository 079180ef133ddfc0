# Two commands: `make run` (the main job) and `make test` (the suite).
# Both create .venv with the interpreter named by PYTHON and install what is needed.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# Real library models for the tests. PyPI's torchvision wheel is linked to a CUDA torch, so the
# release matching the CPU torch goes in without its dependencies (the model builders need none of
# its compiled ops); timm and mcunet likewise.
REAL_MODELS := torchvision==0.28.0 timm==1.0.31 mcunet==0.1.1.post202206170200

.PHONY: run test bench clean

$(STAMP): pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q -e ".[dev]"
	$(BIN)/python -m pip install -q --no-deps $(REAL_MODELS)
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/tinycl run $(ARGS)

test: $(STAMP)
	$(BIN)/python -m pytest -q -n 2 -p no:cacheprovider

clean:
	rm -rf $(VENV) build *.egg-info src/*.egg-info
