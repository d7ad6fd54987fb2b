# Two commands do all set-up on a fresh machine:
#   make book   -> virtual environment, install, build the course HTML (offline)
#   make test   -> same set-up, then every check (pair sync, library tests,
#                  notebook regression, strict book build)
# Everything runs on the CPU with the `fast` preset unless JFB_PRESET says otherwise.

PYTHON   ?= python3
VENV     ?= .venv
BIN      := $(VENV)/bin
STAMP    := $(VENV)/.installed-stamp
CHAPTERS := $(sort $(wildcard chapters/[0-9]*.py))
BOOK_HTML := _build/html/index.html

# Chapters and their tests run on the textbook preset on the CPU.
export JFB_PRESET ?= fast
export PYDEVD_DISABLE_FILE_VALIDATION = 1

.PHONY: help install sync check-sync notebooks lab book book-strict \
        pytest nbval test clean reproduce $(EXPERIMENTS)

help:
	@echo "make book        set up and build the course HTML ($(BOOK_HTML))"
	@echo "make test        set up and run every check"
	@echo "make sync        pair chapters/*.py with their .ipynb (jupytext)"
	@echo "make notebooks   re-execute every chapter notebook in place (fast preset)"
	@echo "make lab         open the chapters in JupyterLab"
	@echo "make reproduce   regenerate the committed results/ artefacts (long)"

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[book,dev]" 2>&1 | grep -v "^WARNING: Location" || true
	$(BIN)/python -c "import jfb_core, torch, torchvision, jupyter_book, nbval"
	touch $@

# The book's MathJax comes with the book extra (sphinx-mathjax-offline): no npm, no network.
install: $(STAMP)

sync: $(STAMP)
	$(BIN)/jupytext --quiet --sync $(CHAPTERS)

# A real pair check: re-sync, then fail if anything under chapters/ changed or appeared.
check-sync: sync
	@git diff --exit-code --stat -- chapters || \
	  (echo "ERROR: chapters/*.py and *.ipynb are out of sync: run 'make notebooks' and commit both."; exit 1)
	@test -z "$$(git status --porcelain --untracked-files=all -- chapters)" || \
	  (git status --porcelain -- chapters; echo "ERROR: untracked or modified files in chapters/."; exit 1)

# Execute every chapter in a fresh kernel and store its outputs in the .ipynb.
notebooks: $(STAMP)
	@for py in $(CHAPTERS); do \
	  echo "== executing $$py"; \
	  $(BIN)/jupytext --sync --execute $$py || exit 1; \
	done

lab: install
	$(BIN)/jupyter lab chapters/

pytest: $(STAMP)
	$(BIN)/python -m pytest tests

nbval: $(STAMP)
	$(BIN)/python -m pytest --nbval chapters

book: install
	$(BIN)/jupyter-book build book
	@echo
	@echo "The course is built: open $(CURDIR)/$(BOOK_HTML)"

book-strict: install
	$(BIN)/jupyter-book build book -W -n --keep-going
	$(BIN)/python -m pytest -q tests/test_book_html.py tests/test_book_browser.py --book-built

test: install check-sync pytest nbval book-strict
	@echo "make test: all checks passed"

# The experiments behind the committed results/ live in one table, jfb_core/experiments.py:
# `make NAME CELEBA=/path/to/celeba RUNS=/somewhere` runs `python -m jfb_core reproduce NAME`
# (`python -m jfb_core reproduce --list` describes each; `--dry-run` prints its commands).
# Keep RUNS outside the checkout so that a long run survives; re-running a training
# experiment resumes it exactly. `make reproduce` runs them all (long on a CPU).
EXPERIMENTS = baselines bench bench-paper train64 eval64 train128 train128-ift train128-s1 train128-s5 \
              publish128 eval128 eval128-s1 eval128-s5 tight128 tv128 tv-exact pnp128 ablation64 \
              train128-certified train128-certified-ift train128-wide publish128-certified profile128
RUNS ?= $(or $(RUNS128),runs)
REPRODUCE = $(BIN)/python -m jfb_core reproduce $(if $(CELEBA),--data "$(CELEBA)") --runs "$(RUNS)" \
	--threads $(or $(THREADS),1)

$(EXPERIMENTS): $(STAMP)
	$(REPRODUCE) $@

reproduce: $(STAMP)
	$(REPRODUCE) all

clean:
	rm -rf _build book/_build .cache
