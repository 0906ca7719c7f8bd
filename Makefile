# luci-app-wormhole: make demo | test | ipk | apk | lint | bench | golden | fuzz | i18n
.PHONY: all demo test ipk apk lint bench golden fuzz i18n deps clean

PYTHON_VENV := .venv/bin/python

all: test

deps:
	@sh tools/install-deps.sh

demo: deps
	$(PYTHON_VENV) -m tests.lab.demo

# pytest exits 5 when it collected nothing: make treats any non-zero status as failure.
test: deps
	$(PYTHON_VENV) -m pytest $(PYTEST_ARGS) tests

# The fuzz suite at scale (not part of `make test`): FUZZ_SCALE times every budget of
# tests/test_fuzz.py (30: over 100,000 inputs across every method), bounded by FUZZ_TIMEOUT
# seconds; the figures land in tests/artifacts/reliability.json (docs/RELIABILITY.md).
FUZZ_SCALE ?= 30
FUZZ_TIMEOUT ?= 5400
fuzz: deps
	WORMHOLE_FUZZ_SCALE=$(FUZZ_SCALE) timeout $(FUZZ_TIMEOUT) $(PYTHON_VENV) -m pytest -q -p no:cacheprovider tests/test_fuzz.py
	$(PYTHON_VENV) -c "import json; f = json.load(open('tests/artifacts/reliability.json'))['fuzz']; print(json.dumps(f, indent=1))"

golden: deps
	$(PYTHON_VENV) -m pytest tests/test_golden.py --update-goldens

# The LuCI app's translation template (luci-app-wormhole/po/templates/wormhole.pot).
i18n:
	python3 tools/i18n.py

ipk:
	python3 tools/mkipk.py --out dist

# apk-tools 3 packages for OpenWrt 25.12 and later (dist/*.apk), from the same feed Makefiles.
apk:
	python3 tools/mkapk.py --out dist

lint: deps
	$(PYTHON_VENV) -m pyflakes rpcd tests tools bench 2>/dev/null || $(PYTHON_VENV) -m pip install -q pyflakes && $(PYTHON_VENV) -m pyflakes rpcd tests tools bench

bench: deps
	$(PYTHON_VENV) -m bench.run

clean:
	rm -rf dist .pytest_cache
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
