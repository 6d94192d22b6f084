# The two commands of the README: `make run` and `make test`.
# Both create .venv (if absent), install the pinned dependencies and the package, then run.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
RUN_ARGS ?=

.PHONY: run test install clean

install: $(STAMP)

$(STAMP): requirements.txt requirements-dev.txt setup.py
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -r requirements.txt -r requirements-dev.txt
	$(PY) -m pip install -q --no-deps --no-build-isolation -e .
	touch $(STAMP)

# Train and evaluate the default model (MICRO) on the offline default dataset (MovieLens-100k).
run: $(STAMP)
	$(PY) run_recbole_micro.py $(RUN_ARGS)

test: $(STAMP)
	$(PY) -m pytest -q --durations=10 tests

clean:
	rm -rf log log_tensorboard saved build *.egg-info
