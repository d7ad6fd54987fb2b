# ---
# jupyter:
#   jupytext:
#     cell_metadata_filter: tags,-all
#     formats: ipynb,py:percent
#     notebook_metadata_filter: kernelspec,jupytext,-jupytext.text_representation.jupytext_version
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Setting up: the course, its library and its scale
#
# This chapter checks that your environment works and shows how the course is
# organised. After it you will be able to run any chapter, choose the scale of a
# run with a *preset*, and know where every number in the book comes from.
#
# ## How the course is built
#
# Each chapter is a pair of files in `chapters/`:
#
# * `NN_name.py`, a plain Python script in the *py:percent* format: the source you
#   read in a diff and edit;
# * `NN_name.ipynb`, the same chapter with its outputs, executed on a CPU with the
#   `fast` preset. JupyterLab opens it, the book shows it, and `pytest --nbval`
#   re-runs it and compares every printed number with the stored one.
#
# [jupytext](https://jupytext.readthedocs.io) keeps the two in step: `make sync`
# pairs them and `make test` fails when they differ. The chapters contain only
# teaching code; everything heavy lives in the library `jfb_core`, which has its
# own tests in `tests/`.

# %% [markdown]
# ## The environment
#
# The versions below are those of the machine that executed this notebook; yours
# may differ (the regression check ignores this cell's output).

# %% tags=["nbval-ignore-output"]
from jfb_core.provenance import environment_info

for key, value in environment_info().items():
    print(f"{key:>14}: {value}")

# %% [markdown]
# ## Presets: one switch for the scale of everything
#
# A preset fixes every size that depends on how much compute you have: image
# size, number of images, network depth and width, solver budget, benchmark
# sizes. It is chosen by the environment variable `JFB_PRESET`
# (`fast` when unset). Chapters never test for a GPU to pick a size; they ask the
# preset.

# %%
from jfb_core.config import PRESETS, get_preset

preset = get_preset()
print(f"active preset: {preset.name} ({preset.description})")
print()
fields = ["dataset", "image_size", "n_train", "n_test", "blur", "noise_std",
          "depth", "width", "anderson_m", "tol", "max_iter", "batch_size", "device"]
print(f"{'field':>12} | {'fast':>14} | {'paper':>14}")
for name in fields:
    print(f"{name:>12} | {str(getattr(PRESETS['fast'], name)):>14} | {str(getattr(PRESETS['paper'], name)):>14}")

# %% [markdown]
# Presets are data, and the library refuses what it does not know: a misspelled
# field or preset name is an error, never silently ignored.

# %%
try:
    get_preset("fast", image_sise=64)
except TypeError as err:
    print("TypeError:", str(err).split(";")[0])
try:
    get_preset("huge")
except ValueError as err:
    print("ValueError:", err)

# %%
small = get_preset("fast", image_size=48, max_iter=100)
print(small.image_size, small.max_iter, small.blur_setting.description)

# %% [markdown]
# ## The blur settings
#
# The paper uses two blurs, and the numbers it compares against come from a
# third. The course names all three and says which one every number uses.

# %%
from jfb_core.config import BLURS

for key, blur in BLURS.items():
    print(f"{key:>9}: kernel {blur.kernel_size}x{blur.kernel_size}, sigma = {blur.sigma:.3f}  ({blur.description})")

# %% [markdown]
# ## Where results come from
#
# Anything that takes longer than about 30 seconds is not run inside a chapter.
# It is run by the library's command line, which writes a small artefact to
# `results/` (JSON with the machine, the library versions, the configuration and
# the command, plus figures), and the chapter loads that artefact. No committed
# network has been trained at the `paper` preset's scale yet (17 layers of 64
# channels on a GPU, `python -m jfb_core paper-run`): the committed CelebA networks
# are the smaller ones of chapters 6 and 7, trained on a CPU at 64 and 128 pixels,
# and scored on the `paper` preset's CelebA test split. Every artefact names its
# preset, size and device. The command line lists what it can do:

# %%
from jfb_core.cli import build_parser

print(build_parser().format_help())

# %% [markdown]
# ## Summary
#
# * Chapters are `.py`/`.ipynb` pairs; the `.py` is the source, the `.ipynb` holds
#   outputs that are re-checked by `pytest --nbval`.
# * `JFB_PRESET` (`fast` or `paper`) sets the scale of everything.
# * Long runs are done by `python -m jfb_core …`, whose artefacts in `results/`
#   carry their own provenance.
#
# ## Exercises
#
# 1. Start JupyterLab with `JFB_PRESET=paper jupyter lab chapters/` and re-run the
#    preset cell. Which fields change?
# 2. Create a preset with `get_preset("fast", tol=0)`. What happens, and why is
#    that better than accepting it?
#
# ```{admonition} Solutions
# :class: dropdown
#
# 1. The active preset becomes `paper`: CelebA at 128×128, 8,000/2,000 images, a
#    17-layer network with 64 channels, `device = cuda`. The chapters read these
#    values, so the same code runs at paper scale.
# 2. `ValueError`: a tolerance of zero can never be reached by a fixed-point
#    solver, so the run would always stop at `max_iter` and report failure.
#    Rejecting the configuration up front saves a wasted run.
# ```
