# Two commands on a fresh machine: `make run` and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
OUTPUT ?= data/articles
export HF_HUB_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: run test install install-test bench clean

$(VENV)/.installed: setup.py
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e .
	touch $@

$(VENV)/.installed-test: $(VENV)/.installed
	$(PY) -m pip install --quiet -e '.[test,bench]'
	$(PY) -m pip install --quiet --no-deps -e ./lab
	bash scripts/install-test-system-deps.sh
	touch $@

install: $(VENV)/.installed

install-test: $(VENV)/.installed-test

run: install
	$(VENV)/bin/newsbeam run --output $(OUTPUT)
	$(VENV)/bin/newsbeam report --data $(OUTPUT) --out $(dir $(OUTPUT))report.html
	@echo "report: $(dir $(OUTPUT))report.html"

test: install-test
	$(PY) -m pytest -q

bench: install-test
	$(PY) bench/run_bench.py

clean:
	rm -rf $(VENV) data build *.egg-info
