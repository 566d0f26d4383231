# fewnorm: `make demo` is the README's quick start; `make test` (CI's .ci/run) the development one.
VENV ?= .venv
PY := $(VENV)/bin/python
FEWNORM := $(VENV)/bin/fewnorm
STAMP := $(VENV)/.fewnorm-installed
EXAMPLE_PLUGIN := tests/plugins/fewnorm-example-norm
# An algorithm and a dataset through entry points (tests/cli/test_extension_plugin.py).
EXAMPLE_EXTENSION := tests/plugins/fewnorm-example-extension
# The two small Omniglot zips beside the checkout, when present (tests and demo read them).
SHARED_DATA := $(wildcard ../shared/datasets/omniglot/images_background_small1.zip)
export FEWNORM_DATA ?= $(if $(SHARED_DATA),$(abspath ../shared/datasets),)

DEV_STAMP := $(VENV)/.fewnorm-dev-installed

.PHONY: install dev test test-all demo lint typecheck bench clean

# The user's install: fewnorm and its plots, nothing of the test suite.
install: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip setuptools wheel
	$(PY) -m pip install -q -c constraints.txt -e '.[plot]'
	touch $(STAMP)

# The development install: the tools, Ray, TensorBoard, learn2learn and the example plugins the tests use.
dev: $(DEV_STAMP)

$(DEV_STAMP): $(STAMP) $(EXAMPLE_EXTENSION)/pyproject.toml
	$(PY) -m pip install -q -c constraints.txt -e '.[dev,plot,ray,tensorboard]'
	tools/build_learn2learn.sh $(PY) .wheels
	$(PY) -m pip install -q --no-deps --no-build-isolation $(EXAMPLE_PLUGIN) $(EXAMPLE_EXTENSION)
	touch $(DEV_STAMP)

test: dev
	$(PY) -m pytest -q

test-all: dev
	$(PY) -m pytest -q -m ""

lint: dev
	$(VENV)/bin/ruff check fewnorm episodes cli tests benchmarks
	$(VENV)/bin/ruff format --check fewnorm episodes cli tests benchmarks README.md
	$(VENV)/bin/mypy fewnorm episodes cli

# Verify (its table says what is missing), download what is, remember the data root for the
# user's own commands (`fewnorm data link`), then a short run.
demo: install
	$(FEWNORM) data verify omniglot-minimal || $(FEWNORM) data download omniglot --subset minimal
	$(FEWNORM) data link "$$($(PY) -c 'from fewnorm.data.root import resolve_data_root; print(resolve_data_root())')"
	$(FEWNORM) train --dataset omniglot-minimal --norm batchnorm --ways 5 --shots 1 \
		--episodes 300 --val-every 100 --out runs/demo-$$(date +%Y%m%d-%H%M%S)

bench: dev
	$(PY) benchmarks/norm_step_time.py

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache .ruff_cache
