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

# The container image, built with buildah and no network inside the build:
# deploy/image/build.sh makes a Debian base with debootstrap and the wheels on
# this host first, caching both under build/image. IMAGE names the result;
# BASE=IMAGE builds on a base image of the site's registry instead.
IMAGE ?=
BASE ?=

.PHONY: image

image: $(STAMP)
	IMAGE='$(IMAGE)' BASE='$(BASE)' PYTHON='$(VENV)/bin/python' deploy/image/build.sh
