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
        pytest nbval test clean reproduce train128 train128-ift train128-certified profile128 publish128 eval128 eval128-s1 \
        eval128-s5 tight128 tv128 pnp128 ablation64 publish128-certified

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

# Regenerate the committed artefacts in results/ (long on a CPU: about 20 minutes per
# blur setting for the CelebA baselines). Needs CELEBA=/path/to/folder/with/img_align_celeba.
CACHE64 ?= runs/celeba_paper_64.pt
EVAL64  = --preset paper --data "$(CELEBA)" --size 64 --blur 9x9_var5 --n-val 100
# the first CelebA run (rho = 1, chapter 6's counter-example)
TRAIN64_RHO1 = --preset fast --size 64 --data-cache $(CACHE64) --blur 9x9_var5 --n-train 8000 \
	--pretrain-epochs 2 --epochs 2 --lr 1e-3 --n-eval 200 --eval-every 100
# the JFB and IFT runs of chapters 6-7: weighted regulariser, one CPU thread each, run side by side
TRAIN64 = --preset fast --size 64 --data-cache $(CACHE64) --blur 9x9_var5 --n-train 8000 --rho 0.02 \
	--pretrain-epochs 1 --lr 1e-3 --n-eval 64 --eval-every 50 --threads 1
# the chapter 6-7 runs with the proximal data step and the averaged network (best so far)
TRAINPROX = --preset fast --size 64 --data-cache $(CACHE64) --blur 9x9_var5 --n-train 8000 --rho 0.05 \
	--data-step proximal --skip --activation maxmin --lipschitz 0.99 --pretrain-epochs 1 --lr 3e-3 \
	--n-eval 64 --eval-every 50 --threads 1
CKPTS64 = --checkpoint degrad_jfb=results/train/celeba64_9x9_var5_jfb/checkpoint.pt \
	--checkpoint degrad_ift=results/train/celeba64_9x9_var5_ift/checkpoint.pt
CKPTSPROX = --checkpoint degrad_jfb=results/train/celeba64_9x9_var5_prox_jfb/checkpoint.pt \
	--checkpoint degrad_ift=results/train/celeba64_9x9_var5_prox_ift/checkpoint.pt
# the fourth pair (chapters 6-7): convex potential layers at the paper's training blur, 5x5 sigma 1
TRAINCPL = --preset fast --size 64 --data-cache $(CACHE64) --blur 5x5_s1 --n-train 8000 --arch cpl --depth 6 \
	--width 32 --rho 0.05 --data-step proximal --skip --lipschitz 0.99 --pretrain-epochs 1 --lr 1e-3 \
	--n-eval 64 --threads 1
EVALS1  = --preset paper --data "$(CELEBA)" --size 64 --blur 5x5_s1 --n-val 100
CKPTSCPL = --checkpoint degrad_jfb=results/train/celeba64_5x5_s1_cpl_jfb/checkpoint.pt \
	--checkpoint degrad_ift=results/train/celeba64_5x5_s1_cpl_ift/checkpoint.pt
SLIM = $(BIN)/python -c "import sys; from jfb_core.train import slim_checkpoint as s; s(sys.argv[1], sys.argv[2])"

reproduce: $(STAMP)
	@test -n "$(CELEBA)" || (echo "usage: make reproduce CELEBA=/path/to/celeba"; exit 2)
	for blur in 5x5_s1 9x9_var5 5x5_s5; do \
	  $(BIN)/python -m jfb_core evaluate --preset paper --data "$(CELEBA)" --blur $$blur --n-val 100 \
	    --out results/baselines/celeba-paper-test_$${blur}_zeros.json || exit 1; \
	done
	$(BIN)/python -m jfb_core evaluate $(EVAL64) --methods direct,tv --tv-grid 1.25e-4,2.5e-4,5e-4,1e-3 \
	  --out results/baselines/celeba-paper-test_9x9_var5_zeros_64px.json
	$(BIN)/python -m jfb_core evaluate $(EVALS1) --methods direct,tv --tv-grid 5e-4,1e-3,2e-3,4e-3 \
	  --out results/baselines/celeba-paper-test_5x5_s1_zeros_64px.json
	$(BIN)/python -m jfb_core bench solvers --out results/bench/solvers_fast_cpu.json
	$(BIN)/python -m jfb_core bench memory --out results/bench/memory_fast_cpu.json
	$(BIN)/python -m jfb_core bench backward --methods jfb,ift_cg,ift_fp,ift_aa,neumann --repeats 15 --out results/bench/backward_fast_cpu.json
	@test -z "$(CELEBA)" || $(BIN)/python -m jfb_core bench backward --preset paper --device cpu --sizes 16,32,64,96,128 \
	  --batch 16 --repeats 3 --warmup 1 --threads 1 --data "$(CELEBA)" --out results/bench/backward_paper_cpu.json
	@test -z "$(CELEBA)" || $(BIN)/python -m jfb_core bench backward --preset paper --device cpu --sizes 16,32,64,96,128 \
	  --batch 16 --repeats 3 --warmup 1 --threads 1 --data "$(CELEBA)" --methods jfb,ift_aa \
	  --out results/bench/backward_paper_cpu_aa.json
	$(BIN)/python -m jfb_core prepare --data "$(CELEBA)" --size 64 --out "$(CACHE64)"
	$(BIN)/python -m jfb_core train $(TRAIN64_RHO1) --grad-mode jfb --out runs/celeba64_9x9_var5_rho1_jfb
	$(BIN)/python -m jfb_core train $(TRAIN64) --epochs 3 --grad-mode jfb --out runs/celeba64_9x9_var5_jfb & \
	$(BIN)/python -m jfb_core train $(TRAIN64) --epochs 4 --grad-mode ift --max-steps 600 --backward-max-iter 50 \
	  --out runs/celeba64_9x9_var5_ift; wait
	$(BIN)/python -m jfb_core train $(TRAINPROX) --epochs 3 --grad-mode jfb --out runs/celeba64_9x9_var5_prox_jfb & \
	$(BIN)/python -m jfb_core train $(TRAINPROX) --epochs 1 --max-steps 250 --grad-mode ift --backward-max-iter 50 \
	  --out runs/celeba64_9x9_var5_prox_ift; wait
	$(BIN)/python -m jfb_core train $(TRAINCPL) --epochs 3 --max-steps 1400 --eval-every 50 --checkpoint-every 100 \
	  --grad-mode jfb --out runs/celeba64_5x5_s1_cpl_jfb & \
	$(BIN)/python -m jfb_core train $(TRAINCPL) --epochs 1 --max-steps 200 --eval-every 25 --checkpoint-every 25 \
	  --grad-mode ift --backward-max-iter 50 --out runs/celeba64_5x5_s1_cpl_ift; wait
	for run in 9x9_var5_rho1_jfb 9x9_var5_jfb 9x9_var5_ift 9x9_var5_prox_jfb 9x9_var5_prox_ift \
	           5x5_s1_cpl_jfb 5x5_s1_cpl_ift; do \
	  mkdir -p results/train/celeba64_$$run; \
	  cp runs/celeba64_$$run/log.json results/train/celeba64_$$run/; \
	  $(SLIM) runs/celeba64_$$run/checkpoint.pt results/train/celeba64_$$run/checkpoint.pt; \
	done
	$(BIN)/python -m jfb_core evaluate $(EVAL64) --as-trained --methods pnp,degrad_ift,degrad_jfb $(CKPTS64) \
	  --out results/eval/celeba-paper-test_64px_9x9_var5.json
	$(BIN)/python -m jfb_core evaluate $(EVAL64) --as-trained --methods degrad_ift,degrad_jfb $(CKPTS64) --limit 50 \
	  --solve-tol 1e-5 --solve-max-iter 400 --out results/eval/celeba-paper-test_64px_9x9_var5_tight.json
	$(BIN)/python -m jfb_core evaluate $(EVAL64) --as-trained --methods degrad_ift,degrad_jfb $(CKPTSPROX) \
	  --out results/eval/celeba-paper-test_64px_9x9_var5_prox.json
	$(BIN)/python -m jfb_core evaluate $(EVAL64) --as-trained --methods degrad_ift,degrad_jfb $(CKPTSPROX) --limit 50 \
	  --solve-tol 1e-5 --solve-max-iter 400 --out results/eval/celeba-paper-test_64px_9x9_var5_prox_tight.json
	$(BIN)/python -m jfb_core evaluate $(EVAL64) --as-trained --methods direct,tv,pnp,degrad_ift,degrad_jfb $(CKPTSPROX) \
	  --tv-grid 1.25e-4,2.5e-4,5e-4,1e-3 --limit 6 --grid 6 \
	  --out results/eval/celeba-paper-test_64px_9x9_var5_prox_table1.json
	$(BIN)/python -m jfb_core evaluate $(EVALS1) --as-trained --methods degrad_ift,degrad_jfb $(CKPTSCPL) \
	  --out results/eval/celeba-paper-test_64px_5x5_s1_cpl.json
	$(BIN)/python -m jfb_core evaluate $(EVALS1) --as-trained --methods degrad_ift,degrad_jfb $(CKPTSCPL) --limit 50 \
	  --solve-tol 1e-6 --solve-max-iter 400 --float64 --out results/eval/celeba-paper-test_64px_5x5_s1_cpl_tight.json
	$(BIN)/python -m jfb_core evaluate $(EVALS1) --as-trained --methods direct,tv,pnp,degrad_ift,degrad_jfb $(CKPTSCPL) \
	  --tv-grid 5e-4,1e-3,2e-3,4e-3 --pnp-strength 0.2 --pnp-max-iter 100 --limit 6 --grid 6 \
	  --out results/eval/celeba-paper-test_64px_5x5_s1_cpl_table1.json
	$(BIN)/python -m jfb_core evaluate $(EVALS1) --as-trained --methods pnp --pnp-strength 0.05,0.1,0.2,0.4,1 --pnp-max-iter 100 \
	  --checkpoint degrad_jfb=results/train/celeba64_5x5_s1_cpl_jfb/checkpoint.pt \
	  --out results/eval/celeba-paper-test_64px_5x5_s1_cpl_pnp.json
	$(BIN)/python -m jfb_core evaluate $(EVALS1) --as-trained --methods pnp --pnp-step 1.9 --pnp-strength 0.2 --pnp-tol 1e-6 \
	  --pnp-max-iter 2000 --float64 --limit 50 --checkpoint degrad_jfb=results/train/celeba64_5x5_s1_cpl_jfb/checkpoint.pt \
	  --out results/eval/celeba-paper-test_64px_5x5_s1_cpl_pnp_tight.json
	$(MAKE) train128 train128-ift publish128 eval128 train128-s1 eval128-s1 train128-s5 eval128-s5 tight128 \
	  tv128 pnp128 CELEBA="$(CELEBA)" RUNS128="$(RUNS128)"

clean:
	rm -rf _build book/_build .cache

# The 128-pixel CPU runs of chapters 6-7 (long: about 13 s per JFB step on one thread with
# --channels-last). Started or continued with `make train128 CELEBA=/path RUNS128=/somewhere`;
# keep RUNS128 outside the checkout so that a run survives between sessions, and re-run the
# same command to resume it (resume is exact).
RUNS128  ?= runs
CACHE128 ?= $(RUNS128)/celeba_paper_128.pt
TRAIN128 = --preset fast --size 128 --data-cache $(CACHE128) --n-train 8000 --arch cpl --depth 6 --width 32 \
	--rho 0.05 --data-step proximal --skip --lipschitz 0.99 --pretrain-epochs 0 --lr 1e-3 --n-eval 64 \
	--eval-every 50 --checkpoint-every 10 --channels-last --threads $(or $(THREADS),1) \
	--init-from results/train/celeba64_5x5_s1_cpl_jfb/checkpoint.pt --resume

train128: $(STAMP)
	@test -f "$(CACHE128)" || (test -n "$(CELEBA)" || (echo "usage: make train128 CELEBA=/path/to/celeba"; exit 2); \
	  $(BIN)/python -m jfb_core prepare --data "$(CELEBA)" --size 128 --out "$(CACHE128)")
	$(BIN)/python -m jfb_core train $(TRAIN128) --blur 9x9_var5 --epochs 1 --max-steps 200 --grad-mode jfb \
	  --out $(RUNS128)/celeba128_9x9_var5_cpl_jfb

# The certified 128-px JFB run (chapter 6's profile, issue of certification): crops of 64, the
# stored norms calibrated to their Fourier bound at every checkpoint and evaluation, validation
# on the last 64 training images; warm-started from the committed 200-step run. A step: 6.2 s
# on one thread, 3.2 s on two (results/bench/step_profile_128px_cpu.json); re-run to resume.
TRAIN128C = --preset fast --size 128 --data-cache $(CACHE128) --n-train 7936 --eval-split val --n-eval 64 \
	--arch cpl --depth 6 --width 32 --rho 0.05 --data-step proximal --skip --lipschitz 0.99 --pretrain-epochs 0 \
	--lr 1e-3 --eval-every 100 --checkpoint-every 25 --channels-last --threads $(or $(THREADS),1) --crop 64 \
	--certify --resume

train128-certified: $(STAMP)
	@test -f "$(CACHE128)" || (test -n "$(CELEBA)" || (echo "usage: make train128-certified CELEBA=/path/to/celeba"; \
	  exit 2); $(BIN)/python -m jfb_core prepare --data "$(CELEBA)" --size 128 --out "$(CACHE128)")
	@test -f $(RUNS128)/c128_certified_jfb/checkpoint.pt || ! test -f $(RC128)/checkpoint.pt || \
	  (mkdir -p $(RUNS128)/c128_certified_jfb && cp $(RC128)/checkpoint.pt $(RUNS128)/c128_certified_jfb/ && \
	   echo "continuing the committed portable checkpoint $(RC128)/checkpoint.pt")
	$(BIN)/python -m jfb_core train $(TRAIN128C) --blur 9x9_var5 --epochs 8 --grad-mode jfb \
	  --init-from results/train/celeba128_9x9_var5_cpl_jfb/checkpoint.pt --out $(RUNS128)/c128_certified_jfb

# The certified run's state, committed so that the next machine continues it (`make train128-certified`
# picks it up): a portable checkpoint (optimiser and counters, no power or tracking vectors) and its log.
RC128 = results/train/celeba128_9x9_var5_cpl_jfb_certified
PORTABLE = $(BIN)/python -c "import sys; from jfb_core.train import slim_checkpoint as s; \
	s(sys.argv[1], sys.argv[2], keep_power_vectors=False, keep_optimizer=True)"
publish128-certified: $(STAMP)
	mkdir -p $(RC128) && cp $(RUNS128)/c128_certified_jfb/log.json $(RC128)/ && \
	  $(PORTABLE) $(RUNS128)/c128_certified_jfb/checkpoint.pt $(RC128)/checkpoint.pt

# Where the time of the certified 128-px step goes (1 and 2 threads; keep the CPU otherwise idle)
profile128: $(STAMP)
	@test -f "$(CACHE128)" || (test -n "$(CELEBA)" || (echo "usage: make profile128 CELEBA=/path/to/celeba"; exit 2); \
	  $(BIN)/python -m jfb_core prepare --data "$(CELEBA)" --size 128 --out "$(CACHE128)")
	$(BIN)/python -m jfb_core bench step --run results/train/celeba128_9x9_var5_cpl_jfb/checkpoint.pt --crop 64 \
	  --certify --data-cache $(CACHE128) --thread-counts 1,2 --repeats 3 --out results/bench/step_profile_128px_cpu.json

# Publish and score the 128-px runs: slim checkpoints (no optimiser state, no power vectors:
# the same outputs, under 1 MB) and logs into results/train/, then the evaluations of chapter 7:
# JFB on all 2,000 test images and IFT on the first 500 at the trained tolerance (tight128 scores
# them at a solved fixed point), and Table 1's grid of 6 images beside the direct inverse and TV at the committed 128-px weight.
SLIM0 = $(BIN)/python -c "import sys; from jfb_core.train import slim_checkpoint as s; s(sys.argv[1], sys.argv[2], keep_power_vectors=False)"
EVAL128 = --preset paper --data "$(CELEBA)" --size 128 --blur 9x9_var5 --n-val 100 --device cpu
R128 = results/train/celeba128_9x9_var5_cpl

publish128: $(STAMP)
	$(call publish,celeba128_9x9_var5_cpl_jfb,$(R128)_jfb)
	$(call publish,celeba128_9x9_var5_cpl_ift,$(R128)_ift)

eval128: $(STAMP)
	@test -n "$(CELEBA)" || (echo "usage: make eval128 CELEBA=/path/to/celeba"; exit 2)
	$(BIN)/python -m jfb_core evaluate $(EVAL128) --as-trained --methods degrad_jfb --checkpoint degrad_jfb=$(R128)_jfb/checkpoint.pt \
	  --out results/eval/celeba-paper-test_128px_9x9_var5_cpl_jfb.json
	$(BIN)/python -m jfb_core evaluate $(EVAL128) --as-trained --methods degrad_ift --checkpoint degrad_ift=$(R128)_ift/checkpoint.pt \
	  --limit 500 --out results/eval/celeba-paper-test_128px_9x9_var5_cpl_ift.json
	$(BIN)/python -m jfb_core evaluate $(EVAL128) --as-trained --methods direct,tv,degrad_jfb --checkpoint degrad_jfb=$(R128)_jfb/checkpoint.pt \
	  --tv-grid 5e-4 --limit 6 --grid 6 --out results/eval/celeba-paper-test_128px_9x9_var5_cpl_table1.json

# JFB at 128 px with a 5x5 blur, the same recipe and warm start: `make train128-s1` (sigma = 1, the
# paper's training blur: the rows behind Fig. 1 and Table 1 at its resolution) or `make train128-s5`
# (sigma = 5, Gilton et al.'s blur, where Table 2's Deep Equilibrium row was measured)
train128-s%: $(STAMP)
	@test -f "$(CACHE128)" || (test -n "$(CELEBA)" || (echo "usage: make train128-s$* CELEBA=/path/to/celeba"; exit 2); \
	  $(BIN)/python -m jfb_core prepare --data "$(CELEBA)" --size 128 --out "$(CACHE128)")
	$(BIN)/python -m jfb_core train $(TRAIN128) --blur 5x5_s$* --epochs 1 --max-steps 200 --grad-mode jfb \
	  --out $(RUNS128)/celeba128_5x5_s$*_cpl_jfb

# copy a run's log and its slim checkpoint into results/train: $(call publish,RUN,RESULTS_FOLDER)
publish = mkdir -p $(2) && cp $(RUNS128)/$(1)/log.json $(2)/ && $(SLIM0) $(RUNS128)/$(1)/checkpoint.pt $(2)/checkpoint.pt

# publish and score the 5x5 sigma-1 run: slim checkpoint and log, JFB on the first 500 test
# images beside the committed 128-px TV at this blur, and Table 1's grid
R128S1 = results/train/celeba128_5x5_s1_cpl_jfb
EVAL128S1 = $(subst 9x9_var5,5x5_s1,$(EVAL128))
eval128-s1: $(STAMP)
	@test -n "$(CELEBA)" || (echo "usage: make eval128-s1 CELEBA=/path/to/celeba"; exit 2)
	$(call publish,celeba128_5x5_s1_cpl_jfb,$(R128S1))
	$(BIN)/python -m jfb_core evaluate $(EVAL128S1) --as-trained --methods degrad_jfb --checkpoint degrad_jfb=$(R128S1)/checkpoint.pt \
	  --limit 500 --out results/eval/celeba-paper-test_128px_5x5_s1_cpl_jfb.json
	$(BIN)/python -m jfb_core evaluate $(EVAL128S1) --as-trained --methods direct,tv,degrad_jfb --checkpoint degrad_jfb=$(R128S1)/checkpoint.pt \
	  --tv-grid 2e-3 --limit 6 --grid 6 --out results/eval/celeba-paper-test_128px_5x5_s1_cpl_table1.json

# its IFT companion, warm-started from the 64-px IFT run; IFT steps cost more, so the run also
# stops at a wall-clock budget of 70 minutes (MAXSEC) to be scored beside JFB at a like time
train128-ift: $(STAMP)
	@test -f "$(CACHE128)" || (test -n "$(CELEBA)" || (echo "usage: make train128-ift CELEBA=/path/to/celeba"; exit 2); \
	  $(BIN)/python -m jfb_core prepare --data "$(CELEBA)" --size 128 --out "$(CACHE128)")
	$(BIN)/python -m jfb_core train $(subst cpl_jfb,cpl_ift,$(TRAIN128)) --blur 9x9_var5 --epochs 1 --max-steps 300 \
	  --max-seconds $(or $(MAXSEC),4200) --grad-mode ift --out $(RUNS128)/celeba128_9x9_var5_cpl_ift

# publish and score the 5x5 sigma-5 run: JFB on the first 500 test images, and on the first 5 solved
R128S5 = results/train/celeba128_5x5_s5_cpl_jfb
EVAL128S5 = $(subst 9x9_var5,5x5_s5,$(EVAL128))
eval128-s5: $(STAMP)
	@test -n "$(CELEBA)" || (echo "usage: make eval128-s5 CELEBA=/path/to/celeba"; exit 2)
	$(call publish,celeba128_5x5_s5_cpl_jfb,$(R128S5))
	$(BIN)/python -m jfb_core evaluate $(EVAL128S5) --as-trained --methods degrad_jfb --checkpoint degrad_jfb=$(R128S5)/checkpoint.pt \
	  --limit 500 --out results/eval/celeba-paper-test_128px_5x5_s5_cpl_jfb.json
	$(BIN)/python -m jfb_core evaluate $(EVAL128S5) --as-trained --methods degrad_jfb --checkpoint degrad_jfb=$(R128S5)/checkpoint.pt \
	  $(TIGHT128) --out results/eval/celeba-paper-test_128px_5x5_s5_cpl_tight.json

# Every 128-px network at a solved fixed point (float64, outer tolerance 1e-6, inner 1e-8) on the
# first 5 test images, one file per blur (eval128-s5 writes the 5x5 sigma-5 one)
TIGHT128 = --limit 5 --solve-tol 1e-6 --solve-max-iter 400 --float64
tight128: $(STAMP)
	@test -n "$(CELEBA)" || (echo "usage: make tight128 CELEBA=/path/to/celeba"; exit 2)
	$(BIN)/python -m jfb_core evaluate $(EVAL128) --as-trained --methods degrad_jfb,degrad_ift --checkpoint degrad_jfb=$(R128)_jfb/checkpoint.pt \
	  --checkpoint degrad_ift=$(R128)_ift/checkpoint.pt $(TIGHT128) --out results/eval/celeba-paper-test_128px_9x9_var5_cpl_tight.json
	$(BIN)/python -m jfb_core evaluate $(EVAL128S1) --as-trained --methods degrad_jfb --checkpoint degrad_jfb=$(R128S1)/checkpoint.pt \
	  $(TIGHT128) --out results/eval/celeba-paper-test_128px_5x5_s1_cpl_tight.json

# The strongest TV: the smoothing delta tuned with the weight on 100 validation images, at 128 px for
# each blur (all 2,000 test images at Table 2's blur, the first 500 at the others, where the learned
# rows score 500) and at 64 px for setting B; and the exact (unsmoothed) TV by FISTA beside the tuned
# smoothed TV on the first 50 test images (both tuned on 16 validation images: FISTA is slow)
TVTUNE = --preset paper --data "$(CELEBA)" --n-val 100 --methods tv
tv128: $(STAMP)
	@test -n "$(CELEBA)" || (echo "usage: make tv128 CELEBA=/path/to/celeba"; exit 2)
	$(BIN)/python -m jfb_core evaluate $(TVTUNE) --blur 9x9_var5 --tv-grid 2.5e-4,5e-4,1e-3,2e-3,4e-3 \
	  --tv-delta 0.01,0.02,0.05,0.1 --out results/baselines/celeba-paper-test_9x9_var5_tv-tuned.json
	$(BIN)/python -m jfb_core evaluate $(TVTUNE) --blur 5x5_s1 --tv-grid 5e-4,1e-3,2e-3,4e-3,8e-3 \
	  --tv-delta 0.02,0.05,0.1,0.2 --limit 500 --out results/baselines/celeba-paper-test_5x5_s1_tv-tuned.json
	$(BIN)/python -m jfb_core evaluate $(TVTUNE) --blur 5x5_s5 --tv-grid 5e-4,1e-3,2e-3,4e-3,8e-3 \
	  --tv-delta 0.02,0.05,0.1 --limit 500 --out results/baselines/celeba-paper-test_5x5_s5_tv-tuned.json
	$(BIN)/python -m jfb_core evaluate $(TVTUNE) --blur 5x5_s1 --size 64 --tv-grid 5e-4,1e-3,2e-3,4e-3 \
	  --tv-delta 0.02,0.05,0.1,0.2 --out results/baselines/celeba-paper-test_5x5_s1_tv-tuned_64px.json
	$(BIN)/python -m jfb_core evaluate --preset paper --data "$(CELEBA)" --blur 9x9_var5 --n-val 16 --methods tv,tv_exact \
	  --tv-grid 1e-3 --tv-delta 0.05 --tv-exact-grid 3e-4,5e-4 --limit 50 \
	  --out results/baselines/celeba-paper-test_9x9_var5_tv-exact.json

# Plug-and-Play at 128 px, Table 2's blur, with the pretrained CPLNet denoiser that the 128-px JFB
# checkpoint carries from its warm start (the 64-px JFB run's)
# (fully convolutional), strength tuned on the last 16 validation images at the step setting B chose
# (1.9); first 100 test images
pnp128: $(STAMP)
	@test -n "$(CELEBA)" || (echo "usage: make pnp128 CELEBA=/path/to/celeba"; exit 2)
	$(BIN)/python -m jfb_core evaluate --preset paper --data "$(CELEBA)" --size 128 --blur 9x9_var5 --n-val 16 --device cpu \
	  --methods pnp --pnp-step 1.9 --pnp-strength 0.2,0.4 --pnp-max-iter 100 --limit 100 \
	  --checkpoint degrad_jfb=$(R128)_jfb/checkpoint.pt --out results/eval/celeba-paper-test_128px_9x9_var5_pnp.json

# Chapter 6's designed ablation at setting B (64 px, 5x5 sigma 1): the plain certified network,
# then one ingredient at a time (weight rho, proximal data step, averaged skip, convex potential
# layers); every variant from the same seed, 600 JFB steps of batch 16 on one thread, no
# pretraining, validation on the last 64 training images. Each run resumes when re-run. The scores
# stand beside `make tv128`'s tuned TV at this setting (the same 2,000 images and noise).
ABLATION = --preset fast --size 64 --data-cache $(CACHE64) --blur 5x5_s1 --n-train 7936 --eval-split val \
	--n-eval 64 --depth 6 --width 32 --lipschitz 0.99 --pretrain-epochs 0 --lr 1e-3 --epochs 2 --max-steps 600 \
	--eval-every 50 --checkpoint-every 25 --certify --threads 1 --seed 0 --grad-mode jfb --resume
ABL_plain = --arch dncnn --rho 1 --data-step gradient --no-skip
ABL_rho   = --arch dncnn --rho 0.05 --data-step gradient --no-skip
ABL_prox  = --arch dncnn --rho 0.05 --data-step proximal --no-skip
ABL_skip  = --arch dncnn --rho 0.05 --data-step proximal --skip
ABL_cpl   = --arch cpl --rho 0.05 --data-step proximal --skip
ABL_VARIANTS = plain rho prox skip cpl
RABL = results/train/celeba64_5x5_s1_ablation

ablation64: $(STAMP)
	@test -n "$(CELEBA)" || (echo "usage: make ablation64 CELEBA=/path/to/celeba"; exit 2)
	@test -f "$(CACHE64)" || $(BIN)/python -m jfb_core prepare --data "$(CELEBA)" --size 64 --out "$(CACHE64)"
	for v in $(ABL_VARIANTS); do \
	  case $$v in plain) a="$(ABL_plain)";; rho) a="$(ABL_rho)";; prox) a="$(ABL_prox)";; \
	    skip) a="$(ABL_skip)";; cpl) a="$(ABL_cpl)";; esac; \
	  $(BIN)/python -m jfb_core train $(ABLATION) $$a --out $(RUNS128)/ablation64_$$v || exit 1; \
	  mkdir -p $(RABL)_$$v && cp $(RUNS128)/ablation64_$$v/log.json $(RABL)_$$v/ && \
	  $(SLIM0) $(RUNS128)/ablation64_$$v/checkpoint.pt $(RABL)_$$v/checkpoint.pt || exit 1; \
	done
	$(BIN)/python -m jfb_core evaluate $(EVALS1) --device cpu --methods plain,rho,prox,skip,cpl \
	  $(foreach v,$(ABL_VARIANTS),--checkpoint $(v)=$(RABL)_$(v)/checkpoint.pt) \
	  --solve-tol 1e-5 --solve-max-iter 400 --out results/eval/celeba-paper-test_64px_5x5_s1_ablation.json
	$(BIN)/python -m jfb_core evaluate $(EVALS1) --device cpu --methods plain,rho,prox,skip,cpl \
	  $(foreach v,$(ABL_VARIANTS),--checkpoint $(v)=$(RABL)_$(v)/checkpoint.pt) --limit 200 \
	  --out results/eval/celeba-paper-test_64px_5x5_s1_ablation_trained-tol.json
