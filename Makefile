# hoiweb: `make demo` runs the whole product on a synthetic video; `make test` runs the test suite.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: setup demo test lint browser services-down clean

setup: $(STAMP)

$(STAMP): pyproject.toml requirements.lock
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.lock
	# anny's warp dependency and mediapipe's jax/opencv-contrib are optional: see shared stack notes
	$(PY) -m pip install -q --no-deps anny==0.6.2 mediapipe==0.10.14 smplx==0.1.28
	# sam2 (an sdist) declares torchvision, which only its image predictor imports: the video predictor that
	# stage 2 uses runs on this venv's torch. Built here against it, without the optional CUDA extension.
	SAM2_BUILD_CUDA=0 $(PY) -m pip install -q --no-deps --no-build-isolation sam2==1.1.0
	# MoGe (depth backend): the model needs none of dlr-moge's declared torchvision/gradio/moderngl
	$(PY) -m pip install -q --no-deps dlr-moge==2.0.0 dlr-utils3d==1.3 dlr-pipeline==1.0.0 huggingface_hub==0.36.2
	touch $(STAMP)

# Debian chromium for the Playwright browser tests (never `playwright install`: it downloads).
browser:
	@command -v chromium >/dev/null || { \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	  else echo "install Debian's chromium (apt-get install chromium) for the browser tests" >&2; fi; }

demo: setup
	$(PY) -m hoiweb.demo

test: setup browser
	$(PY) -m hoiweb.devservices up --mode auto --env-file var/test-services.env >/dev/null
	source var/test-services.env && DEBUG=1 SECRET_KEY=test-only $(VENV)/bin/ruff check . && \
	  DEBUG=1 SECRET_KEY=test-only $(PY) -m pytest $(PYTEST_ARGS); rc=$$?; \
	  if [ $$rc = 5 ]; then echo "pytest collected no tests" >&2; exit 1; fi; exit $$rc

lint: setup
	$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check .

services-down:
	$(PY) -m hoiweb.devservices down

clean: services-down
	rm -rf var test-artifacts
