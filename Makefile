# luci-app-wormhole: make demo | test | ipk | lint | bench | golden
.PHONY: all demo test ipk lint bench golden deps clean

PYTHON_VENV := .venv/bin/python

all: test

deps:
	@sh tools/install-deps.sh

demo: deps
	$(PYTHON_VENV) -m tests.lab.demo

# pytest exits 5 when it collected nothing: make treats any non-zero status as failure.
test: deps
	$(PYTHON_VENV) -m pytest $(PYTEST_ARGS) tests

golden: deps
	$(PYTHON_VENV) -m pytest tests/test_golden.py --update-goldens

ipk:
	python3 tools/mkipk.py --out dist

lint: deps
	$(PYTHON_VENV) -m pyflakes rpcd tests tools bench 2>/dev/null || $(PYTHON_VENV) -m pip install -q pyflakes && $(PYTHON_VENV) -m pyflakes rpcd tests tools bench

bench: deps
	$(PYTHON_VENV) -m bench.run

clean:
	rm -rf dist .pytest_cache
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
