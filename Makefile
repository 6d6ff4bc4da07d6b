VENV ?= .venv
PYTHON ?= python3
PIP := $(VENV)/bin/pip
STAMP := $(VENV)/.installed

.PHONY: test demo install clean

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): $(VENV)/bin/python pyproject.toml
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

test: $(STAMP)
	$(VENV)/bin/pytest -q -ra $(PYTEST_ARGS)

demo: $(STAMP)
	$(VENV)/bin/python -m cli.demo

clean:
	rm -rf $(VENV) .demo build *.egg-info
