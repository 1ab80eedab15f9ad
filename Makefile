# The README's two commands: `make book` and `make test`. Both set up .venv first (once, and again
# only when requirements*.txt or pyproject.toml change), so they work on a machine with only Python.
# The benchmark peers (requirements-bench.txt) are installed too, so that the bench smoke tests run,
# and selenium (requirements-test.txt) for `make browser`, which opens the built book in chromium.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: book test browser notebooks setup lint clean

setup: $(STAMP)

$(STAMP): requirements.txt requirements-bench.txt requirements-test.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements.txt -r requirements-bench.txt \
		-r requirements-test.txt
	$(BIN)/python -m pip install --quiet --no-deps --no-build-isolation -e .
	touch $(STAMP)

# ruff, and the CI workflow against GitHub's workflow schema (check-jsonschema ships the schema)
lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/check-jsonschema --builtin-schema vendor.github-workflows .github/workflows/*.yml

# the browser test needs the built book: `make browser` runs it after `make book`
test: lint
	$(BIN)/python -m pytest -q -n 2 --dist loadfile --ignore=tests/test_browser.py

book: $(STAMP)
	$(BIN)/jupyter-book build . -W -n --keep-going

# every page of _build/html in chromium (Debian: apt-get install chromium chromium-driver), from
# files and over HTTP, and its controls; screenshots go to _build/screenshots/
browser: $(STAMP)
	$(BIN)/python -m pytest -q tests/test_browser.py

# the built book's downloadable notebooks: no raw MyST left in them, and those of the pages that
# executed in under a minute run top to bottom in a fresh kernel (`make notebooks` after `make book`)
notebooks: $(STAMP)
	$(BIN)/python tests/run_notebooks.py

clean:
	rm -rf _build
