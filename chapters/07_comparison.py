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
# # Comparison with TV, Plug-and-Play and implicit differentiation
#
# The paper's Table 2 {cite:p}`liu2024jfbdeblur` compares DE-GRAD trained with JFB with
# total variation (TV), Plug-and-Play (PnP) and the Deep Equilibrium model of Gilton
# et al. {cite:p}`gilton2021deep`, which is DE-GRAD trained with the exact implicit
# gradient (IFT). This chapter puts the course's own measurements beside that table.
# Each of them is labelled with the data, blur, image size, network and device that
# produced it. The chapter then asks a question the paper's timing figure leaves
# open: how much *training time* does JFB save to reach a given quality? By the end
# you will be able to read a comparison table critically and check its
# settings, tuning and convergence. You will also be able to turn per-step timings
# into time-to-quality.
#
# Everything here is loaded from committed artefacts in `results/`. The runs take
# from minutes to about an hour on a CPU, and `make reproduce CELEBA=...` regenerates
# them. No number in this chapter is computed on CelebA while the chapter runs.

# %%
# %matplotlib inline
import json

import matplotlib.pyplot as plt
import numpy as np

from jfb_core.evaluate import format_weight
from jfb_core.provenance import find_results_dir

results = find_results_dir()
evdir = results / "eval"
ev = json.loads((evdir / "celeba-paper-test_64px_9x9_var5_prox.json").read_text())  # proximal-step runs
ev_grad = json.loads((evdir / "celeba-paper-test_64px_9x9_var5.json").read_text())  # explicit-step runs
base = json.loads((results / "baselines" / "celeba-paper-test_9x9_var5_zeros_64px.json").read_text())
tight = json.loads((evdir / "celeba-paper-test_64px_9x9_var5_prox_tight.json").read_text())
tight_grad = json.loads((evdir / "celeba-paper-test_64px_9x9_var5_tight.json").read_text())
runs = {mode: json.loads((results / "train" / f"celeba64_9x9_var5_prox_{mode}" / "log.json").read_text())
        for mode in ("jfb", "ift")}
runs_grad = {mode: json.loads((results / "train" / f"celeba64_9x9_var5_{mode}" / "log.json").read_text())
             for mode in ("jfb", "ift")}
# the fourth pair: convex potential layers with the 5x5 sigma-1 kernel (at 64 px, Table 2's blur)
base_s1 = json.loads((results / "baselines" / "celeba-paper-test_5x5_s1_zeros_64px.json").read_text())
ev_s1 = json.loads((evdir / "celeba-paper-test_64px_5x5_s1_cpl.json").read_text())
tight_s1 = json.loads((evdir / "celeba-paper-test_64px_5x5_s1_cpl_tight.json").read_text())
pnp_s1 = json.loads((evdir / "celeba-paper-test_64px_5x5_s1_cpl_pnp.json").read_text())  # PnP, CPLNet denoiser
runs_cpl = {mode: json.loads((results / "train" / f"celeba64_5x5_s1_cpl_{mode}" / "log.json").read_text())
            for mode in ("jfb", "ift")}

# %% [markdown]
# ## The paper's Table 2
#
# The table reports PSNR (dB) and SSIM on the test set for a 9×9 Gaussian blur of
# variance 5, noise 0.01 and $128 \times 128$ CelebA. The paper quotes the TV,
# Plug-and-Play and Deep Equilibrium rows from Gilton et al., whose public code
# blurs with a 5×5 kernel of $\sigma = 5$ (chapter 2). So the rows may not even share
# a blur, and the TV row has no tuning protocol attached.

# %%
paper = {"Total Variation": (26.70, 0.90), "Plug-n-Play": (29.77, 0.88), "Deep Equilibrium": (32.43, 0.94),
         "JFB (paper)": (26.88, 0.91)}
print(f"{'method (paper, Table 2)':<26} {'PSNR':>6} {'SSIM':>6}")
for k, (p, s) in paper.items():
    print(f"{k:<26} {p:6.2f} {s:6.2f}")

# %% [markdown]
# ## The course's measurements
#
# One evaluation scored every method on the same test images with the same noise
# draw per image (seeded by the image number). Its settings:
#
# * **data**: CelebA, the paper's split (test images 8,001 to 10,000), each whole image
#   resized to $64 \times 64$. This is the size of the CPU training runs of chapter 6;
#   the paper used $128 \times 128$.
# * **blur**: 9×9, variance 5, zero padding; noise standard deviation 0.01 on [0, 1];
#   PSNR and SSIM with data range 1 (the paper's code used $[-1, 1]$, see the notation page).
#   This is Table 2's kernel, but at $64 \times 64$ it blurs twice as wide relative to the face
#   as in the paper; the section "Table 2's blur at 64 pixels" below finds the faithful
#   counterpart and the fourth pair uses it.
# * **TV**: gradient descent with momentum on the smoothed-TV objective. Its weight is
#   tuned on 100 validation images (the last of the training range), never on the test images.
# * **Plug-and-Play**: proximal gradient, $x \leftarrow D(x - \tau A^\top(Ax - d))$, with the denoiser
#   $D$ pretrained on the training split: the network that initialised the explicit-step runs
#   (ReLU, Lipschitz constant at most 0.9). The step $\tau$ is tuned on the same validation images,
#   over $\{0.5, 1, 1.5\}$. (The library now tunes over $\{0.5, 1, 1.5, 1.9\}$, all below $2/L$; the
#   proximal runs' averaged denoiser appears in the reconstruction grid below, scored on its six
#   images only.)
# * **DE-GRAD** (explicit step, the paper's map (3.5)): chapter 6's second pair of runs. The
#   `fast` network (depth 5, width 32, ReLU, Lipschitz target 0.9), the weighted regulariser
#   $S_\Theta = \rho(I - f_\Theta)$ with $\rho$ trainable from 0.02, learning rate $10^{-3}$.
#   JFB trained for 1,500 steps, IFT for 600.
# * **DE-GRAD, proximal step**: chapter 6's third pair of runs. Same fixed-point equation, the
#   iteration (6.3), the averaged network (6.5) with MaxMin activations and Lipschitz target 0.99,
#   $\rho$ trainable from 0.05, learning rate $3 \cdot 10^{-3}$. JFB trained for 1,500 steps, IFT for 250
#   (each IFT step costs several JFB steps).
# * Each pair trained on one CPU thread per run, side by side, after one epoch of denoiser
#   pretraining. The IFT runs solved their adjoint equation by fixed-point iteration to a
#   relative residual of $10^{-4}$, capped at 50 iterations. Where the cap was hit, the
#   gradient is a 50-term Neumann approximation, not the exact implicit gradient of the
#   paper's Deep Equilibrium row; the section on training time prints how close each run came.
#
# The validation images (7,901 to 8,000) lie inside the training range, so the
# networks and the PnP denoisers have seen them. Only the TV weight and the PnP step are
# tuned on them, and the test images were never used for any choice.
#
# The direct inverse and TV come from the baseline evaluation of chapter 6; each pair of
# learned runs, with its PnP row, from one evaluation of its own. All draw the noise of
# each image from the same seed and the image number, so they see identical
# measurements. The cell below checks this, because merging the files is only valid if
# it holds. The exact commands are in each artefact's `provenance.command` and in
# `results/README.md`.

# %%
for f in (ev, ev_grad):
    same_images = base["test"]["ids"] == f["test"]["ids"]
    same_noise = abs(base["measurement"]["psnr_mean"] - f["measurement"]["psnr_mean"]) < 1e-9
    print(f"same {len(f['test']['ids'])} test images: {same_images}; identical measurements "
          f"(mean PSNR of d {f['measurement']['psnr_mean']:.4f} dB): {same_noise}")
    assert same_images and same_noise
# the tuned TV weight and PnP step must lie inside their grids (at an edge, the best could lie outside)
assert base["settings"]["tv_grid"][0] < base["methods"]["tv"]["weight"] < base["settings"]["tv_grid"][-1]
print(f"TV weight {base['methods']['tv']['weight']:.1e} in grid {base['settings']['tv_grid']}")
print(f"PnP step {ev_grad['methods']['pnp']['weight']} in grid {ev_grad['methods']['pnp']['tuning']['weights']}")
methods = {**base["methods"], **ev["methods"],
           **{f"{k}_grad": v for k, v in ev_grad["methods"].items() if k in ("pnp", "degrad_jfb", "degrad_ift")}}
learned = {**ev["learned"], **{f"{k}_grad": v for k, v in ev_grad["learned"].items()}}
names = {"direct": "direct inverse", "tv": "Total Variation (tuned)",
         "pnp_grad": "Plug-and-Play (PGD)",
         "degrad_ift_grad": "DE-GRAD, IFT (capped)", "degrad_jfb_grad": "DE-GRAD, JFB",
         "degrad_ift": "DE-GRAD prox., IFT (capped)", "degrad_jfb": "DE-GRAD prox., JFB"}


def print_table(evf, methods_, names_, learned_, heading="method (course)"):
    """One row per method: mean PSNR and SSIM, the tuned weight or step, the training time."""
    print(f"{evf['test']['name']}: {evf['test']['n']} test images, {evf['test']['size']}x{evf['test']['size']}, "
          f"blur {evf['blur']['name']}, noise {evf['noise_std']}, device {evf['provenance']['environment']['device']}")
    print(f"{heading:<30} {'PSNR':>6} {'SSIM':>6} {'tuned':>7} {'training (CPU)':>15}")
    print(f"{'measurement d':<30} {evf['measurement']['psnr_mean']:6.2f} {evf['measurement']['ssim_mean']:6.3f}")
    for key, label in names_.items():
        r = methods_[key]
        t = f"{learned_[key]['train_seconds'] / 60:10.1f} min" if "train_seconds" in learned_.get(key, {}) else ""
        print(f"{label:<30} {r['psnr_mean']:6.2f} {r['ssim_mean']:6.3f} {format_weight(r['weight']):>7} {t:>15}")


print_table(ev, methods, names, learned)

# %% [markdown]
# The TV weight lies inside its grid. The PnP step lies at the upper edge of its grid,
# $\{0.5, 1, 1.5\}$. Steps up to $2/L = 2$ keep PnP a contraction, so a wider grid could
# raise the PnP row somewhat. It would not remove the bias of a contractive denoiser
# discussed below.
#
# ### Side by side
#
# The two tables do not share a setting, so the figure below draws them in two
# panels rather than as paired bars. The paper's rows are at $128 \times 128$ with a blur
# that may differ from row to row. The course's rows are at $64 \times 64$ with one blur for
# all. The comparisons that *are* meaningful run within a panel. The paper does not
# state the data range of its PSNR either. Computed as in its public code
# ($-10\log_{10}\mathrm{MSE}$ on $[-1, 1]$), its numbers would read 6.02 dB higher on the course's
# $[0, 1]$ scale (chapter 2). This is one more reason not to pair the panels.

# %%
fig, axes = plt.subplots(1, 2, figsize=(12, 3.6))
axes[0].barh(list(paper), [v[0] for v in paper.values()], color="0.6")
axes[0].set(title="paper, Table 2 (128x128, quoted rows)", xlabel="PSNR (dB)")
ours = {names[k]: methods[k]["psnr_mean"]
        for k in ("tv", "pnp_grad", "degrad_ift_grad", "degrad_jfb_grad", "degrad_ift", "degrad_jfb")}
axes[1].barh(list(ours), list(ours.values()), color="C0")
axes[1].set(title="course (CelebA 64x64, 9x9 var 5, CPU; DE-GRAD solved to 1e-3)", xlabel="PSNR (dB)")
for ax, vals in ((axes[0], [v[0] for v in paper.values()]), (axes[1], list(ours.values()))):
    for i, v in enumerate(vals):
        ax.text(v + 0.2, i, f"{v:.2f}", va="center", fontsize=8)
    ax.set_xlim(0, max(vals) + 4)
plt.tight_layout()
plt.show()

# %% [markdown]
# ## Reading the numbers
#
# The first question for any learned method is whether it beats a classical one
# that was tuned with the same care. Per image, on the same measurements:

# %%
psnr = {k: np.array(methods[k]["per_image"]["psnr"]) for k in names}
for k in ("degrad_jfb", "degrad_ift", "degrad_jfb_grad", "pnp_grad"):
    diff = psnr[k] - psnr["tv"]
    print(f"{names[k]:<28} minus tuned TV: mean {diff.mean():+.2f} dB, median {np.median(diff):+.2f} dB, "
          f"better on {np.mean(diff > 0):6.1%} of the {len(diff)} images")
for jfb, ift in (("degrad_jfb", "degrad_ift"), ("degrad_jfb_grad", "degrad_ift_grad")):
    print(f"{names[jfb]:<28} minus {names[ift]}: mean {(psnr[jfb] - psnr[ift]).mean():+.2f} dB")
# chapter 6 chose the third runs' settings on the 64 test images scored during training (ids 8001-8064)
n_seen = runs["jfb"]["log"][-1]["n_eval_images"]
assert ev["test"]["ids"][:n_seen] == list(range(8001, 8001 + n_seen))
print(f"on the {len(psnr['tv']) - n_seen} test images never used for any choice: " + ", ".join(
    f"{names[k]} {psnr[k][n_seen:].mean():.2f} dB" for k in ("tv", "degrad_jfb", "degrad_ift")))

fig, ax = plt.subplots(figsize=(6.5, 3.5))
ax.hist(psnr["degrad_jfb"] - psnr["tv"], bins=40, alpha=0.7, label="DE-GRAD prox. (JFB) - TV")
ax.hist(psnr["degrad_jfb_grad"] - psnr["tv"], bins=40, alpha=0.5, label="DE-GRAD (JFB) - TV")
ax.axvline(0, color="k", lw=0.8)
ax.set(xlabel="per-image PSNR difference (dB)", ylabel="test images",
       title="Gain over tuned TV, CelebA 64x64, 9x9 var 5")
ax.legend(fontsize=8)
plt.show()

# %% [markdown]
# The proximal JFB network beats tuned TV on about 70% of the test images, by 0.19 dB on
# average, and by the same margin on the 1,936 images that played no part in any choice, so
# chapter 6's small search on the first 64 did not inflate it. Its SSIM equals TV's. That is
# a real gain, but a small one: far from the +2 dB the course aimed for (see the targets
# below). The explicit-step networks stay more than 1.5 dB below TV on almost every image.
#
# ```{admonition} What this table does and does not show
# :class: important
#
# * **The learned rows are short CPU runs.** The runs are 1,500 (JFB) and 600 or 250 (IFT)
#   optimiser steps of a 5-layer network at $64 \times 64$. The paper's set-up is a 17-layer,
#   64-channel network at $128 \times 128$ (the course's `paper` preset, meant for a GPU; its
#   20 epochs are the course's choice, since the paper states no epoch count).
#   The course has no paper-scale run yet, so there is no row for it. This table says
#   nothing about what DE-GRAD reaches at that scale.
# * **The TV baseline is tuned.** In the paper, JFB sits 0.18 dB above a TV row quoted
#   from another paper. Here TV is tuned on validation images, and it is a strong
#   baseline at this size: chapter 2 found the same for $128 \times 128$.
# * **The PnP row is handicapped on purpose, and says so.** Its denoiser is constrained
#   to Lipschitz constant 0.9 so that the iteration provably converges (exercise 1). A
#   contractive denoiser cannot be the identity on clean images, and PnP's fixed point
#   inherits that bias. PnP with an unconstrained denoiser, as usually run, avoids this bias
#   but loses the convergence guarantee. The denoiser was also trained for one epoch
#   only, as an initialisation for DE-GRAD, not as the best denoiser this network could be.
# ```
#
# ## Are the fixed points real?
#
# In the paper's public code the fixed-point solves did not converge. Here every
# solve reports its residual (the evaluation files record the largest one) and stops at
# a relative residual of $10^{-3}$ (at most 50 Anderson iterations, as in training).
# That tolerance bounds the *residual*, not the distance to the fixed point: by
# Theorem 3.1 the distance is at most $\|T(z) - z\| / (1 - \gamma)$. For the explicit-step runs
# $1 - \gamma = \eta(\mu + \rho(1 - \epsilon))$ is tiny, so the bound says nothing. For the proximal runs
# $1 - \gamma \ge 1 - \epsilon = 0.01$ by (6.4): a guarantee, but a loose one. The honest check is to
# solve much further and score again. A second evaluation of each pair did this on the
# first 50 test images, with tolerance $10^{-5}$ and up to 400 iterations:

# %%
n_tight = tight["test"]["n"]
print(f"first {n_tight} test images; PSNR at the training tolerance vs. solved to "
      f"{tight['learned']['degrad_jfb']['solve_tol']:.0e} (at most {tight['learned']['degrad_jfb']['solve_max_iter']} "
      f"iterations)")
for tf, suffix in ((tight_grad, "_grad"), (tight, "")):
    assert tf["test"]["ids"] == ev["test"]["ids"][:n_tight]  # the same images, in the same order
    for key in ("degrad_jfb", "degrad_ift"):
        loose = float(np.mean(psnr[key + suffix][:n_tight]))
        print(f"  {names[key + suffix]:<28} tol 1e-3: {loose:6.2f} dB   tight: {tf['methods'][key]['psnr_mean']:6.2f} dB")
print(f"  {'tuned TV':<28}           {float(np.mean(psnr['tv'][:n_tight])):6.2f} dB")
print("what the solves reached (all test images of each file):")
for label, f, suffix in (("training tolerance", ev_grad, "_grad"), ("tight", tight_grad, "_grad"),
                         ("training tolerance", ev, ""), ("tight", tight, "")):
    for key in ("degrad_jfb", "degrad_ift"):
        st = f["learned"][key]["solver"]
        print(f"  {label:<18} {names[key + suffix]:<28} converged {st['converged_fraction']:6.1%}, "
              f"mean iterations {st['iterations_mean']:6.1f}, largest residual {st['residual_max']:.1e}")

# %% [markdown]
# If the two columns agreed, the networks' quality would belong to their fixed
# points, as the implicit-network view assumes. **For the explicit-step pair they do not
# agree, by several dB.** Solved to $10^{-5}$, every solve converged (several times more
# Anderson iterations than at the training tolerance), and both networks fall far below
# tuned TV. The JFB-trained one falls back almost to the measurement's own PSNR. So most
# of their quality at the training tolerance came from *stopping early*. Started at
# $A^\top d$, a dozen Anderson steps are a regularised reconstruction in their own right,
# and training tuned the network for that truncated solve, not for its fixed point.
# Neither chapter 6's training log nor a residual test could reveal this: the tolerance
# was met every time. A likely reason why JFB is hit harder is chapter 6's remark on the
# gradients: JFB drops $(I - \partial T_\Theta/\partial x)^{-1}$, whose largest amplification, about
# $1/(\eta\rho(1 - \epsilon))$, acts exactly in the slow directions where the fixed point and the
# early-stopped iterate differ.
#
# **For the proximal pair the columns agree**, to within 0.05 dB: its quality belongs to
# its fixed points, and both networks stay above tuned TV there. This is
# what the exact data step of chapter 6 bought. One caveat about what "solved" means for
# this pair: each step (6.3) is itself a conjugate-gradient solve, started at the current
# iterate, with a relative tolerance of $10^{-5}$. Once an iterate satisfies (6.3) to that
# tolerance, the inner solve has nothing left to do, returns the iterate unchanged, and the
# outer residual reads exactly 0, as printed above. The fixed-point equation then holds to
# the inner tolerance, measured on $(A^\top A + \rho I) z = A^\top d + \rho f_\Theta(z)$; in the distance
# $\|T(z) - z\|$ that can be up to $1/\rho$ (about 30) times larger. Quote "solved" with both
# tolerances.
#
# The lesson for anyone training implicit networks is to quote the PSNR at a solved fixed
# point, together with the tolerance that defines "solved".
#
# ## Training time to a given quality
#
# Chapter 5 measured one training step. JFB's backward costs about one pass of
# $T_\Theta$, while IFT's adds an adjoint solve. What matters in practice is the time to
# reach a given test PSNR. In each pair, both runs scored the same 64 test images every 50
# optimiser steps and recorded the training time without the evaluations (the time axis
# includes the common pretraining epoch, about the same for both). IFT's adjoint solve
# was capped at 50 iterations (a fixed-point iteration to relative residual $10^{-4}$).
# Its largest final residual is printed below, so you can see how exact its
# gradients were. The question is how long JFB takes to come within 0.5 dB of IFT's
# final PSNR, compared with IFT's whole run. One score on 64 images jumps by a few
# tenths of a dB between evaluations, so both curves are compared through the mean
# of their last three evaluations. Keep in mind that the IFT runs were *stopped* (at 600 and
# 250 steps), so "IFT's final PSNR" is where IFT stood after that time budget. It is not the
# quality IFT would reach if trained to convergence. The runs of a pair shared the two CPU
# cores, one thread each; the proximal IFT run had the machine to itself for its last
# minutes, after its JFB twin had finished, which if anything flatters IFT's time.

# %%
def smooth(curve, k=3):
    """(training seconds, steps, PSNR averaged over the last k evaluations): one 64-image score is noisy."""
    p = np.array([c["test_psnr"] for c in curve])
    avg = np.array([p[max(0, i - k + 1):i + 1].mean() for i in range(len(p))])
    return [(c["train_seconds"], c["steps"], a) for c, a in zip(curve, avg)]


def time_to_quality(pair):
    """IFT's total time and final smoothed PSNR, and the first (time, step) at which JFB's smoothed
    PSNR is within 0.5 dB of it (None if never)."""
    ift_sm, jfb_sm = smooth(pair["ift"]["curve"]), smooth(pair["jfb"]["curve"])
    total, _, final = ift_sm[-1]
    hit = [(t, s) for t, s, a in jfb_sm if a >= final - 0.5]
    return total, final, (hit[0] if hit else None), {"jfb": jfb_sm, "ift": ift_sm}


def plot_pair(ax, pair):
    """Both runs' 64-image PSNR against training time, smoothed, with IFT's final level - 0.5 dB."""
    total, final, hit, sm = time_to_quality(pair)
    for mode, run in pair.items():
        c, last = run["curve"], run["log"][-1]
        color = "C0" if mode == "jfb" else "C1"
        ax.plot([p["train_seconds"] / 60 for p in c], [p["test_psnr"] for p in c], "o", ms=3, color=color,
                label=f"{mode.upper()}: {last['steps']} steps, {last['train_seconds'] / 60:.0f} min")
        ax.plot([t / 60 for t, _, _ in sm[mode]], [a for _, _, a in sm[mode]], "-", lw=2, alpha=0.6, color=color,
                label=f"{mode.upper()}, mean of last 3 evaluations")
    ax.axhline(final - 0.5, color="grey", ls=":", label=f"IFT final (smoothed) - 0.5 dB = {final - 0.5:.2f} dB")
    return total, final, hit


fig, axes = plt.subplots(1, 2, figsize=(13, 4), sharey=True)
for ax, (pair, title) in zip(axes, ((runs_grad, "DE-GRAD, explicit step (second runs)"),
                                    (runs, "DE-GRAD, proximal step (third runs)"))):
    plot_pair(ax, pair)
    ax.set(xlabel="training time (minutes, 1 CPU thread each, evaluation excluded)", title=title)
    ax.legend(fontsize=7)
axes[0].set_ylabel("test PSNR (dB), 64 test images")
fig.suptitle("Quality against training time, CelebA 64x64, 9x9 variance-5 blur", fontsize=9)
plt.tight_layout()
plt.show()
for pair, label in ((runs_grad, "explicit step"), (runs, "proximal step")):
    total, final, hit, _ = time_to_quality(pair)
    for mode, run in pair.items():
        rows, c = run["log"], run["curve"]
        per_step = (c[-1]["train_seconds"] - c[0]["train_seconds"]) / (c[-1]["steps"] - c[0]["steps"])
        bwd = [r["backward_iterations"] for r in rows]
        res = [r["backward_residual_max"] for r in rows if r["backward_residual_max"] is not None]
        extra = f", adjoint iterations {np.mean(bwd):.1f}, largest adjoint residual {max(res):.1e}" if res else ""
        print(f"{label}, {mode.upper()}: {per_step:.2f} s per step, forward Anderson iterations "
              f"{np.mean([r['train_iterations'] for r in rows]):.1f}{extra}")
    print(f"{label}, IFT: final {final:.2f} dB (mean of its last 3 evaluations) after {total / 60:.1f} min")
    if hit:
        print(f"{label}, JFB: its 3-evaluation mean first within 0.5 dB of that after {hit[0] / 60:.1f} min "
              f"(step {hit[1]}), {hit[0] / total:.0%} of IFT's training time")
    else:
        print(f"{label}, JFB: never within 0.5 dB of IFT's final PSNR in this run")

# %% [markdown]
# In both pairs JFB came within 0.5 dB of IFT's final quality in about an eighth of IFT's
# training time, and IFT did not end clearly above JFB. An IFT step cost about 3 (explicit
# pair) to 8 (proximal pair) JFB steps. The proximal pair's adjoint solves were much closer
# to exact than the explicit pair's (largest final residual 0.19 against 0.81), because (6.3)
# contracts far better, but they still often ran into the cap of 50 iterations; an exact
# implicit gradient would have cost even more per step.
#
# ## Reconstructions
#
# The paper's Table 1 shows rows of ground truth, noisy blurred input, direct
# inverse, TV gradient descent and DE-GRAD with JFB. The same layout for the first
# six test images, for the proximal pair (with PnP, using that pair's 0.99-Lipschitz denoiser
# and a step tuned over $\{0.5, 1, 1.5, 1.9\}$, and IFT added), as written by
# `python -m jfb_core evaluate ... --limit 6 --grid 6`. Chapter 6 discusses what it shows,
# including the faint grid-like texture of the DE-GRAD rows.

# %%
img = plt.imread(results / "eval" / "celeba-paper-test_64px_9x9_var5_prox_table1_grid.png")
fig, ax = plt.subplots(figsize=(9, 9 * img.shape[0] / img.shape[1]))
ax.imshow(img)
ax.axis("off")
plt.show()

# %% [markdown]
# ## Table 2's blur at 64 pixels
#
# A blur kernel is defined in pixels, so its strength depends on the image size. The paper
# applies Table 2's 9×9 kernel of variance 5 to faces of $128 \times 128$ pixels. The first
# three pairs applied the same kernel to faces of $64 \times 64$: relative to the face, that is
# a blur twice as wide. Which blur at 64 pixels does what Table 2's blur does at 128?
#
# Halving the side halves every length, so a variance divides by four. The kernels are
# truncated, so the variance that counts is that of the taps actually used: with $a_k$,
# $k = -r, \dots, r$, the normalised 1-D kernel (the blur is separable, so one axis suffices),
# it is $\sum_k k^2 a_k$, not the nominal $\sigma^2$. The support scales too: the 9×9 kernel
# reaches 4 pixels from its centre at 128 pixels, so 2 at 64, which is exactly a 5×5 kernel. The cell computes it, then checks the answer on an image:
# blur the $128 \times 128$ astronaut with Table 2's kernel and average $2 \times 2$ blocks, against
# averaging first and blurring at 64 pixels.

# %%
import torch
import torch.nn.functional as F

from jfb_core.config import BLURS
from jfb_core.data import bundled_photo
from jfb_core.operators import blur_from_setting, gaussian_kernel1d


def taps_variance(name):
    """Variance of the truncated, normalised 1-D kernel of a blur setting (pixels squared)."""
    b = BLURS[name]
    k = gaussian_kernel1d(b.kernel_size, b.sigma)
    r = torch.arange(b.kernel_size, dtype=k.dtype) - b.kernel_size // 2
    return float((k * r**2).sum())


for name in ("9x9_var5", "5x5_s1"):
    print(f"{name:>9}: nominal variance {BLURS[name].sigma ** 2:.3f}, variance of its taps {taps_variance(name):.3f}")
print(f"Table 2's blur on 128 px images, seen at 64 px: variance {taps_variance('9x9_var5') / 4:.3f}")

x128 = bundled_photo("astronaut", 128).double()  # (1, 3, 128, 128)
seen = F.avg_pool2d(blur_from_setting("9x9_var5", padding="circular")(x128), 2)  # Table 2, then halved
half = F.avg_pool2d(x128, 2)
at64 = {name: blur_from_setting(name, padding="circular")(half) for name in ("5x5_s1", "9x9_var5")}
for name, y in {**at64, "no blur": half}.items():
    print(f"{name} at 64 px against Table 2's blur seen at 64 px: relative difference "
          f"{float((y - seen).norm() / seen.norm()):.2%}, PSNR {float(-10 * torch.log10(((y - seen) ** 2).mean())):.1f} dB")

fig, axes = plt.subplots(1, 4, figsize=(10, 2.8))
blur_panels = {"sharp, 64 px": half, "Table 2's blur at 128 px,\nthen halved": seen,
               "5x5 sigma 1 at 64 px\n(fourth pair)": at64["5x5_s1"], "9x9 variance 5 at 64 px\n(pairs 1-3)": at64["9x9_var5"]}
for ax, (title, y) in zip(axes, blur_panels.items()):
    ax.imshow(y[0].permute(1, 2, 0).clamp(0, 1).numpy())
    ax.set_title(title, fontsize=8)
    ax.axis("off")
plt.tight_layout()
plt.show()

# %% [markdown]
# Truncation to 9 taps leaves Table 2's kernel a variance of about 3.9, not 5; at half the side
# that is about 0.98. The 5×5 $\sigma = 1$ kernel, truncated to 5 taps, has about 0.92. So the 5×5
# $\sigma = 1$ kernel applied at 64 pixels nearly reproduces Table 2's blur: on the image it differs
# from Table 2's blur seen at 64 pixels by about 1% (a PSNR of 44 dB between the two). The 9×9
# kernel applied at 64 pixels differs from it by 14%, not much less than the unblurred image
# does (18%): a different, much stronger blur. (`tests/test_config.py` checks the same on
# smooth random images.) The 5×5 $\sigma = 1$ kernel is also the one the paper trains with in its
# Section 5.1, but there it is applied to $128 \times 128$ images, where it is a milder blur than
# Table 2's; in pixels the kernels coincide, not the problems.
#
# The noise does not scale like the blur. Averaging $2 \times 2$ blocks halves the standard
# deviation of independent noise, so Table 2's noise of 0.01 at 128 pixels is 0.005 when seen at
# 64. The course's 64-pixel problems keep 0.01: twice the noise of Table 2 seen at this scale, a
# harder problem, not an easier one.
#
# This changes how to read the tables. The first three pairs answered a much harder question
# than the paper's. The fourth pair, below, has Table 2's blur (with twice its noise) and is the
# course's closest CPU-scale analogue of Table 2.

# %% [markdown]
# ## The fourth pair: a better network, at Table 2's blur for this size
#
# Chapter 6's fourth pair of runs replaces the spectrally normalised DnCNN by `CPLNet`, the
# convex potential layers (6.6), under the same bound $\operatorname{Lip}(f_\Theta) \le 0.99$, and trains with
# the 5×5, $\sigma = 1$ kernel: at 64 pixels, Table 2's blur, as just shown. It needs its own baseline: TV was tuned
# again, at this blur and size, on the same 100 validation images
# (`results/baselines/celeba-paper-test_5x5_s1_zeros_64px.json`). One evaluation scored both
# networks on all 2,000 test images, and another scored Plug-and-Play with this pair's
# pretrained `CPLNet` denoiser; the cell checks that both saw the same images and the same
# measurements as the baseline before merging the three.
#
# The PnP row uses one change from the other pairs. The denoiser was pretrained (chapter 6) to
# remove noise of standard deviation 0.05, far more than what one gradient step leaves
# behind, and PnP with it oversmooths: on the validation images the plain denoiser ($a = 1$)
# scores well below TV at every step (the table printed below). The evaluation therefore
# relaxes it, $D_a = I + a(D - I)$ with strength $a \in (0, 1]$, and tunes $a$ together with the step
# on the validation images (`evaluate --pnp-strength`). The relaxation keeps the convergence
# guarantee: if $\operatorname{Lip}(D) = \kappa < 1$ then $\operatorname{Lip}(D_a) \le 1 - a(1 - \kappa) < 1$ (exercise 1). It
# does weaken the contraction, so the cell also prints how often PnP actually met its tolerance.
# (TV's validation PSNR at its chosen weight, for reference, is printed with it.)

# %%
for f in (ev_s1, pnp_s1):
    assert base_s1["test"]["ids"] == f["test"]["ids"]
    assert abs(base_s1["measurement"]["psnr_mean"] - f["measurement"]["psnr_mean"]) < 1e-9
    assert f["blur"]["name"] == base_s1["blur"]["name"] == "5x5_s1"
assert base_s1["settings"]["tv_grid"][0] < base_s1["methods"]["tv"]["weight"] < base_s1["settings"]["tv_grid"][-1]
methods_s1 = {**base_s1["methods"], **ev_s1["methods"], **pnp_s1["methods"]}
names_s1 = {"direct": "direct inverse", "tv": "Total Variation (tuned)", "pnp": "Plug-and-Play (PGD, relaxed)",
            "degrad_ift": "DE-GRAD CPL, IFT", "degrad_jfb": "DE-GRAD CPL, JFB"}
print(f"TV weight {base_s1['methods']['tv']['weight']:.1e} in grid {base_s1['settings']['tv_grid']}")
ps = pnp_s1["learned"]["pnp"]["pnp_solver"]
step, strength = pnp_s1["methods"]["pnp"]["weight"]
print(f"PnP: step {step:g} in {sorted({w[0] for w in pnp_s1['methods']['pnp']['tuning']['weights']})}, "
      f"denoiser strength {strength:g} in "
      f"{pnp_s1['learned']['pnp']['strengths']}; on the test images it stopped by tolerance {ps['tol']:.0e} on "
      f"{ps['converged_fraction']:.0%}, mean {ps['iterations_mean']:.0f} iterations (at most {ps['max_iter']})")
tune = pnp_s1["methods"]["pnp"]["tuning"]
val = {tuple(w): v for w, v in zip(tune["weights"], tune["val_psnr"])}
conv = {tuple(t["setting"]): t["converged_fraction"] for t in ps["tuning"]}
strengths = pnp_s1["learned"]["pnp"]["strengths"]
tv_tune = base_s1["methods"]["tv"]["tuning"]
tv_val = tv_tune["val_psnr"][tv_tune["weights"].index(base_s1["methods"]["tv"]["weight"])]
print(f"PnP validation PSNR (dB) by step (rows) and strength a (columns); * = not every solve converged; "
      f"tuned TV: {tv_val:.2f}")
print("step " + "".join(f"{a:>8g}" for a in strengths))
for t in sorted({w[0] for w in val}):
    print(f"{t:4g} " + "".join(f"{val[(t, a)]:7.2f}{'*' if conv[(t, a)] < 1 else ' '}" for a in strengths))
print_table(ev_s1, methods_s1, names_s1, ev_s1["learned"], heading="method (course, 5x5 sigma 1)")
psnr_s1 = {k: np.array(methods_s1[k]["per_image"]["psnr"]) for k in names_s1}
n_seen_s1 = runs_cpl["jfb"]["log"][-1]["n_eval_images"]
for k in ("degrad_jfb", "degrad_ift", "pnp"):
    diff = psnr_s1[k] - psnr_s1["tv"]
    print(f"{names_s1[k]:<30} minus tuned TV: mean {diff.mean():+.2f} dB, better on {np.mean(diff > 0):6.1%}; "
          f"on the {len(diff) - n_seen_s1} images never used for a choice: {diff[n_seen_s1:].mean():+.2f} dB")
print(f"{names_s1['degrad_jfb']} minus {names_s1['degrad_ift']}: "
      f"{(psnr_s1['degrad_jfb'] - psnr_s1['degrad_ift']).mean():+.2f} dB")
gap = psnr_s1["degrad_jfb"] - psnr_s1["pnp"]
print(f"{names_s1['degrad_jfb']} minus {names_s1['pnp']}: mean {gap.mean():+.2f} dB, smallest {gap.min():+.2f} dB, "
      f"better on {np.mean(gap > 0):.1%} of the images")

# %% [markdown]
# This is the first pair in the course that clears the +2 dB target. The JFB-trained
# `CPLNet` beats the TV tuned for this blur by about 2.2 dB on average, on every one of the
# 2,000 test images, and by the same margin on the 1,936 images that played no part in any
# choice; its SSIM is also higher. The IFT-trained twin gains about 1.4 dB: after its 200
# steps it is still well behind JFB's 1,400. What changed against the third pair is the
# network (and the blur): the bound $\operatorname{Lip}(f_\Theta) \le 0.99$, the proximal step and the
# training loop are the same.
#
# Plug-and-Play, with the same `CPLNet` as its denoiser (the pretrained weights from which
# DE-GRAD started), gains about 0.6 dB over tuned TV and is better on most images, but stays
# about 1.6 dB below JFB-trained DE-GRAD, on every image (printed above). Same architecture,
# same starting weights, same bound: the main difference between the two rows is that
# DE-GRAD's network was then trained *through the fixed point* for this blur, while PnP's was
# trained only to denoise. The iterations differ too (DE-GRAD's exact proximal data step with
# a trained $\rho$, against PnP's gradient step with a tuned $\tau$ and $a$), so this is not a clean
# measurement of end-to-end training alone.
#
# The step sits at the top of its grid, as close to the $2/L = 2$ limit of the guarantee as the
# grid goes; the strength, which matters far more (the validation table spans 27.98 to
# 32.57 dB across the 20 settings), lies inside its own grid.
#
# Every PnP solve on the test images met its tolerance, a relative change of $10^{-4}$. By the
# chapter's own rule that is a residual, not a distance: with $\operatorname{Lip}(D_a) \le 0.998$ the bound of
# Theorem 3.1 allows a distance to the fixed point up to 500 times larger. So PnP gets the same
# check as DE-GRAD: the chosen setting solved again on the first 50 test images in float64, to
# a relative change of $10^{-6}$ (`evaluate --pnp-step 1.9 --pnp-strength 0.2 --pnp-tol 1e-6
# --float64 --limit 50`).

# %%
pnp_tight = json.loads((evdir / "celeba-paper-test_64px_5x5_s1_cpl_pnp_tight.json").read_text())
n_pt = pnp_tight["test"]["n"]
assert pnp_tight["test"]["ids"] == pnp_s1["test"]["ids"][:n_pt]
assert pnp_tight["methods"]["pnp"]["weight"] == pnp_s1["methods"]["pnp"]["weight"]
pt = pnp_tight["learned"]["pnp"]["pnp_solver"]
print(f"PnP, step/strength {pnp_tight['methods']['pnp']['weight']}, first {n_pt} test images:")
print(f"  tolerance {ps['tol']:.0e} (float32): {psnr_s1['pnp'][:n_pt].mean():.3f} dB")
print(f"  tolerance {pt['tol']:.0e} ({pnp_tight['learned']['pnp']['dtype']}): "
      f"{pnp_tight['methods']['pnp']['psnr_mean']:.3f} dB   (converged {pt['converged_fraction']:.0%}, "
      f"mean {pt['iterations_mean']:.0f} iterations, at most {pt['max_iter']})")
print(f"  largest per-image change: "
      f"{np.abs(np.array(pnp_tight['methods']['pnp']['per_image']['psnr']) - psnr_s1['pnp'][:n_pt]).max():.3f} dB")

# %% [markdown]
# Solved a hundred times further, in float64, PnP's score on these 50 images moves by a few
# hundredths of a dB, and no image by more than a tenth (printed above). Its row, like DE-GRAD's,
# is the quality of its fixed point, not of an early stop. The worst case of the bound was far
# too pessimistic here: two more decimal places of residual took only about 2.5 times as many
# iterations.
#
# ### Side by side with Table 2
#
# At 64 pixels this blur stands for Table 2's, so the fourth pair's four learned and
# classical rows can be set beside the paper's four. The caveats of the first side-by-side
# figure still hold: the image size, network and training budget differ, the paper's rows
# are quoted from other work, and its PSNR data range is not stated. Compare the *order* and
# the *gaps* within each panel, not the bars across panels.

# %%
table2_rows = {"TV": ("Total Variation", "tv"), "PnP": ("Plug-n-Play", "pnp"),
               "Deep Equilibrium (IFT)": ("Deep Equilibrium", "degrad_ift"), "JFB": ("JFB (paper)", "degrad_jfb")}
fig, axes = plt.subplots(1, 2, figsize=(12, 3.2), sharey=True)
bar_panels = ((axes[0], [paper[p][0] for p, _ in table2_rows.values()], [paper[p][1] for p, _ in table2_rows.values()],
               "0.6", "paper, Table 2: CelebA 128x128, 9x9 var 5 nominal (rows quoted)"),
              (axes[1], [methods_s1[k]["psnr_mean"] for _, k in table2_rows.values()],
               [methods_s1[k]["ssim_mean"] for _, k in table2_rows.values()], "C0",
               "course, fourth pair: CelebA 64x64, 5x5 sigma 1 (CPU, 2,000 test images)"))
for ax, vals, ssims, color, title in bar_panels:
    ax.barh(list(table2_rows), vals, color=color)
    for i, (v, q) in enumerate(zip(vals, ssims)):
        ax.text(v + 0.2, i, f"{v:.2f} dB / {q:.2f}", va="center", fontsize=8)
    ax.set(title=title, xlabel="PSNR (dB) / SSIM", xlim=(0, max(vals) + 8))
    ax.title.set_fontsize(9)
plt.tight_layout()
plt.show()
for label, (p, k) in table2_rows.items():
    print(f"{label:<24} paper minus TV {paper[p][0] - paper['Total Variation'][0]:+5.2f} dB   "
          f"course minus TV {methods_s1[k]['psnr_mean'] - methods_s1['tv']['psnr_mean']:+5.2f} dB")

# %% [markdown]
# Both panels put TV at the bottom and a learned implicit network at the top, and both
# show PnP between TV and Deep Equilibrium. Two things differ. The gaps are much smaller here
# (at most 2.2 dB over TV, against 5.7 dB in the paper): the course's TV is tuned on validation
# images at this very blur, the paper's TV row is quoted without a tuning protocol, and the
# course's networks are small and trained for about an hour on a CPU. And the JFB row moves
# from the bottom to the top: in the paper, JFB sits 0.18 dB above TV and 5.5 dB below Deep
# Equilibrium; here JFB-trained DE-GRAD beats TV by 2.2 dB and its IFT-trained twin by 0.8 dB,
# in comparable training time (63 against 48 minutes; the time-to-quality cell below shows JFB
# was already ahead at IFT's 48). That difference is not evidence that JFB finds better networks than IFT. It
# is what JFB's cheaper steps buy in the same time, and it suggests that JFB by itself need not
# keep a network near TV, though this is one seed, at 64 pixels, with a different network.
#
# The same two checks as for the other pairs follow: are the fixed points solved, and how
# long did each backward mode take to get there? This time the tight solves run in
# float64 (`evaluate --float64`), with the inner conjugate-gradient solve of (6.3) a hundred
# times tighter than the outer tolerance, so the residual they report is a real one (the
# caveat above no longer applies).

# %%
n_t = tight_s1["test"]["n"]
assert tight_s1["test"]["ids"] == ev_s1["test"]["ids"][:n_t]
tl = tight_s1["learned"]["degrad_jfb"]
print(f"first {n_t} test images, solved to {tl['solve_tol']:.0e} in {tl['dtype']} "
      f"(inner tolerance {tl['inner_tol']:.0e}, at most {tl['solve_max_iter']} iterations)")
for key in ("degrad_jfb", "degrad_ift"):
    st = tight_s1["learned"][key]["solver"]
    print(f"  {names_s1[key]:<28} tol 1e-3: {psnr_s1[key][:n_t].mean():6.2f} dB   tight: "
          f"{tight_s1['methods'][key]['psnr_mean']:6.2f} dB   (converged {st['converged_fraction']:.0%}, "
          f"mean iterations {st['iterations_mean']:.1f}, largest residual {st['residual_max']:.1e})")
print(f"  {'tuned TV':<28}           {psnr_s1['tv'][:n_t].mean():6.2f} dB")

fig, ax = plt.subplots(figsize=(6.5, 4))
total, final, hit = plot_pair(ax, runs_cpl)
tv_on_first = float(np.mean(base_s1["methods"]["tv"]["per_image"]["psnr"][:n_seen_s1]))
ax.axhline(tv_on_first, color="k", ls="--", label=f"tuned TV on the same {n_seen_s1} images: {tv_on_first:.2f} dB")
ax.set(xlabel="training time (minutes, 1 CPU thread each, evaluation excluded)",
       ylabel=f"test PSNR (dB), {n_seen_s1} test images", title="fourth pair: CPLNet, 5x5 sigma 1, CelebA 64x64")
ax.legend(fontsize=7)
plt.tight_layout()
plt.show()
for mode, run in runs_cpl.items():
    rows, c = run["log"], run["curve"]
    per_step = (c[-1]["train_seconds"] - c[0]["train_seconds"]) / (c[-1]["steps"] - c[0]["steps"])
    res = [r["backward_residual_max"] for r in rows if r["backward_residual_max"] is not None]
    extra = (f", adjoint iterations {np.mean([r['backward_iterations'] for r in rows]):.1f}, largest adjoint "
             f"residual {max(res):.1e}") if res else ""
    print(f"{mode.upper()}: {per_step:.2f} s per step, forward Anderson iterations "
          f"{np.mean([r['train_iterations'] for r in rows]):.1f}{extra}")
print(f"IFT: final {final:.2f} dB (mean of its last 3 evaluations) after {total / 60:.1f} min")
jfb_then = [a for t, _, a in time_to_quality(runs_cpl)[3]["jfb"] if t <= total][-1]
print(f"JFB at that time (IFT's {total / 60:.1f} min): {jfb_then:.2f} dB, smoothed the same way")
print(f"JFB: within 0.5 dB of that after {hit[0] / 60:.1f} min (step {hit[1]}), {hit[0] / total:.0%} of IFT's time"
      if hit else "JFB: never within 0.5 dB of IFT's final PSNR in this run")

# %% [markdown]
# Both networks' quality belongs to their fixed points: solved in float64 to a real residual
# below $10^{-6}$, each scores within about a tenth of a dB of its score at the training
# tolerance (slightly higher, not lower). In this pair the IFT run's adjoint solves were close to exact (largest final
# residual below $10^{-3}$, printed above), so its row is the implicit gradient, not a capped
# Neumann sum. An IFT step still cost several JFB steps, and in its 200 steps IFT stayed well
# below what JFB reached. JFB came within 0.5 dB of IFT's final quality in a small fraction
# of IFT's training time, printed above. As before, IFT was *stopped*: a longer IFT run could
# end higher, and the comparison is one of training time, not of converged training.
#
# The reconstruction grid of this pair, the first six test images at this blur:

# %%
img = plt.imread(results / "eval" / "celeba-paper-test_64px_5x5_s1_cpl_table1_grid.png")
fig, ax = plt.subplots(figsize=(9, 9 * img.shape[0] / img.shape[1]))
ax.imshow(img)
ax.axis("off")
plt.show()

# %% [markdown]
# ## At the paper's resolution: 128×128 pixels
#
# The paper's experiment runs at $128 \times 128$ pixels, where Table 2's 9×9 variance-5 kernel is
# the blur it was meant to be. The course trains DE-GRAD there too, on a CPU, with the recipe of
# the fourth pair: the six-layer, 32-channel convex-potential network (the paper's has 17
# layers of 64 channels), the averaged form with Lipschitz target 0.99, the proximal data step
# and $\rho$ trainable from 0.05. Both runs start from the fourth pair's 64-pixel networks
# (`train --init-from`; the network is fully convolutional), which learned the same blur
# relative to the face, as the section on Table 2's blur at 64 pixels showed. Each run used
# one CPU thread, batch 16 and learning rate $10^{-3}$, the two side by side on a
# two-core machine: JFB for 200 steps, IFT until 70 minutes of training had passed (its
# adjoint equation solved by fixed-point iteration to $10^{-4}$, at most 200 iterations).
# Training is short: 200 steps are 3,200 of the 8,000 training images, seen once.
#
# The cell checks that the learned rows and the committed 128-pixel baselines (chapter 2)
# saw the same 2,000 test images and the same noise, then prints them side by side.

# %%
base128 = json.loads((results / "baselines" / "celeba-paper-test_9x9_var5_zeros.json").read_text())
ev128 = {m: json.loads((evdir / f"celeba-paper-test_128px_9x9_var5_cpl_{m}.json").read_text()) for m in ("jfb", "ift")}
logs128 = {m: json.loads((results / "train" / f"celeba128_9x9_var5_cpl_{m}" / "log.json").read_text())
           for m in ("jfb", "ift")}
for m, f in ev128.items():  # merging files is valid only for the same images and the same noise
    n_m = f["test"]["n"]
    assert f["test"]["ids"] == base128["test"]["ids"][:n_m] and f["test"]["size"] == base128["test"]["size"] == 128
# the noise of each image is seeded by its number: the full JFB file must see the baselines' measurements
assert abs(ev128["jfb"]["measurement"]["psnr_mean"] - base128["measurement"]["psnr_mean"]) < 1e-9
rows128 = {"direct inverse": base128["methods"]["direct"], "TV (tuned on validation)": base128["methods"]["tv"],
           "DE-GRAD, JFB": ev128["jfb"]["methods"]["degrad_jfb"], "DE-GRAD, IFT": ev128["ift"]["methods"]["degrad_ift"]}
tv_per = np.array(base128["methods"]["tv"]["per_image"]["psnr"])
jfb_per = np.array(ev128["jfb"]["methods"]["degrad_jfb"]["per_image"]["psnr"])
print(f"CelebA paper test split at 128x128, blur 9x9 variance 5, noise 0.01, data range 1; "
      f"measurement {base128['measurement']['psnr_mean']:.2f} dB on all {len(tv_per)}")
print(f"{'method':<26} {'images':>6} {'PSNR':>7} {'SSIM':>6} {'minus TV':>9} {'better than TV':>15} {'training':>20}")
for name, r in rows128.items():
    per = np.array(r["per_image"]["psnr"])
    mode = {"DE-GRAD, JFB": "jfb", "DE-GRAD, IFT": "ift"}.get(name)
    trained = ""
    if mode:
        last = logs128[mode]["log"][-1]
        trained = f"{last['steps']} steps, {last['train_seconds'] / 60:.0f} min"
    print(f"{name:<26} {len(per):6d} {r['psnr_mean']:7.2f} {r['ssim_mean']:6.3f} {per.mean() - tv_per[:len(per)].mean():+9.2f} "
          f"{np.mean(per > tv_per[:len(per)]):15.1%} {trained:>20}")
n_ift = ev128["ift"]["test"]["n"]
ift_per = np.array(ev128["ift"]["methods"]["degrad_ift"]["per_image"]["psnr"])
print(f"on the first {n_ift} test images: JFB {jfb_per[:n_ift].mean():.2f} dB, IFT {ift_per.mean():.2f} dB, "
      f"TV {tv_per[:n_ift].mean():.2f} dB; JFB better than IFT on {np.mean(jfb_per[:n_ift] > ift_per):.0%} of them")
for m in ("jfb", "ift"):
    cert = ev128[m]["learned"][f"degrad_{m}"]["lipschitz"]["as_trained"]
    print(f"{m.upper()}: certified Lip(f) as trained {cert['lipschitz_bound']:.2f} (target {cert['lipschitz_target']}); "
          f"stored / certified layer norm at worst {cert['stored_over_upper_min']:.3f}")

# %% [markdown]
# JFB-trained DE-GRAD beats the tuned TV by 0.96 dB on all 2,000 test images (30.09 against
# 29.13 dB) and is better on 99% of them; the IFT-trained twin, scored on the first 500, beats TV
# by 0.80 dB there, and JFB leads it by 0.15 dB on the same images. Both gains are far
# from the paper's: the network is small, and training is short (200 steps of batch 16 are
# 3,200 images, seen once, where the paper trains for many epochs with the 17 × 64 network).
# The certificate lines repeat chapter 4's finding: the stored norm estimates lag behind the
# true norms (by up to 4% for JFB and 15% for IFT), so neither network, as trained, is covered
# by Theorem 3.1's bound; the solves converged all the same.
#
# The training curves below score the first 64 test images (the ones the runs scored while
# training, with their own noise draw), beside the mean TV score of the same 64 images from the
# baseline file. The IFT run stopped before its first scheduled score, so its only point is
# its last.

# %%
fig, (ax, ax2) = plt.subplots(1, 2, figsize=(12, 3.8))
ids_eval = base128["test"]["ids"][:logs128["jfb"]["log"][-1]["n_eval_images"]]
tv_eval = tv_per[:len(ids_eval)].mean()  # TV on the first test images, which the training curves score
for m, style in (("jfb", "o-"), ("ift", "s")):
    # the scores every 50 steps and the final one (the IFT run stopped before its first 50)
    c = {p["steps"]: p for p in logs128[m]["curve"]}
    c.setdefault(logs128[m]["log"][-1]["steps"], logs128[m]["log"][-1])
    c = [c[k] for k in sorted(c)]
    logs128[m]["points"] = c
    ax.plot([p["train_seconds"] / 60 for p in c], [p["test_psnr"] for p in c], style, ms=7,
            label=f"DE-GRAD, {m.upper()} ({c[-1]['steps']} steps)")
    ax2.plot([p["steps"] for p in c], [p["test_loss"] for p in c], style, ms=7, label=f"{m.upper()}")
ax.axhline(tv_eval, color="grey", ls="--", label=f"TV (tuned), the same {len(ids_eval)} images")
ax.set(xlabel="training time (min, one CPU thread)", ylabel=f"PSNR on the first {len(ids_eval)} test images (dB)",
       title="time to quality at 128x128")
ax2.set(xlabel="training step (batch 16)", ylabel=f"MSE on the first {len(ids_eval)} test images",
        title="test loss (Fig. 1)")
for a in (ax, ax2):
    a.legend(fontsize=8)
    a.grid(alpha=0.3)
fig.tight_layout()
plt.show()
ift_end = logs128["ift"]["points"][-1]
jfb_c = logs128["jfb"]["points"]
jfb_at = np.interp(ift_end["train_seconds"], [p["train_seconds"] for p in jfb_c], [p["test_psnr"] for p in jfb_c])
print(f"IFT stopped after {ift_end['steps']} steps ({ift_end['train_seconds'] / 60:.0f} min) at "
      f"{ift_end['test_psnr']:.2f} dB; JFB at the same training time: {jfb_at:.2f} dB "
      f"(interpolated between its evaluations every 50 steps)")
first = next((p for p in jfb_c if p["test_psnr"] >= ift_end["test_psnr"] - 0.5), None)
if first:
    print(f"JFB was within 0.5 dB of IFT's final PSNR at its {'first' if first is jfb_c[0] else ''} score, "
          f"step {first['steps']}, after {first['train_seconds'] / 60:.0f} min "
          f"({first['train_seconds'] / ift_end['train_seconds']:.0%} of IFT's time"
          f"{'; it was not scored earlier' if first is jfb_c[0] else ''})")

# %% [markdown]
# In the same training time, JFB took about eighteen times as many steps as IFT, whose
# adjoint solve needed about 180 fixed-point iterations per step, and JFB's score at IFT's
# stopping time is slightly higher. Both runs began from networks trained at 64 pixels, so
# both start above TV and their curves are nearly flat; the comparison that would separate
# the two backward modes is a longer run at this size.
#
# Table 1 at 128 pixels, from the same evaluation code (the TV weight is the one tuned for the
# baseline rows):

# %%
img = plt.imread(evdir / "celeba-paper-test_128px_9x9_var5_cpl_table1_grid.png")
fig, ax = plt.subplots(figsize=(9, 9 * img.shape[0] / img.shape[1]), dpi=64)  # the committed PNG has full resolution
ax.imshow(img)
ax.axis("off")
plt.show()

# %% [markdown]
# ## Against the course's own targets
#
# The course set itself two targets for the CPU-scale runs. The first is that
# JFB-trained DE-GRAD beats tuned TV by at least 2 dB on the test split. The second
# is that it comes within 0.5 dB of IFT-trained DE-GRAD in at most half of IFT's
# training time. The cell below checks both from the artefacts, for the best pair at each
# blur: the third pair with Table 2's 9×9 variance-5 kernel applied at 64 pixels, the fourth
# with 5×5 $\sigma = 1$, Table 2's blur at half the side. Each gain is measured against the TV tuned for that blur. A target missed is
# printed as missed. The time target compares the networks at the training
# tolerance, the way they were trained and logged.

# %%
def check_targets(label, methods_, psnr_, tight_, n_tight_, runs_):
    """Print both targets for one pair of runs, from its artefacts."""
    print(label)
    gain = methods_["degrad_jfb"]["psnr_mean"] - methods_["tv"]["psnr_mean"]
    print(f"  JFB minus tuned TV on {len(psnr_['tv'])} test images, training tolerance: {gain:+.2f} dB  "
          f"-> target (>= +2 dB) {'met' if gain >= 2 else 'NOT met'}")
    gain_tight = tight_["methods"]["degrad_jfb"]["psnr_mean"] - float(np.mean(psnr_["tv"][:n_tight_]))
    print(f"  JFB minus tuned TV on the first {n_tight_}, solved fixed point: {gain_tight:+.2f} dB  "
          f"-> target (>= +2 dB) {'met' if gain_tight >= 2 else 'NOT met'}")
    total_, _, hit_, _ = time_to_quality(runs_)
    if hit_:
        frac = hit_[0] / total_
        print(f"  JFB within 0.5 dB of IFT after {frac:.0%} of IFT's time -> target (<= 50%) "
              f"{'met' if frac <= 0.5 else 'NOT met'}")
    else:
        print("  JFB within 0.5 dB of IFT: NOT reached")


check_targets("9x9 variance 5 at 64 px (Table 2's kernel; relative to the face, twice Table 2's blur), third pair: "
              "DnCNN, proximal step", methods, psnr, tight, n_tight, runs)
check_targets("5x5 sigma 1 at 64 px (Table 2's blur at half the side, twice its noise), fourth pair: CPLNet, "
              "proximal step", methods_s1, psnr_s1, tight_s1, n_t, runs_cpl)

# %% [markdown]
# ## What is not here
#
# * **The paper's network.** The 128-pixel rows above use the six-layer, 32-channel network
#   on a CPU. The `paper` preset (17 layers × 64 channels, batch 16) is for a GPU:
#   `python -m jfb_core paper-run --preset paper --data-cache CACHE --budget SECONDS --out DIR`
#   trains JFB and then IFT within the budget and scores both beside TV on the same test
#   images. The paper's Deep Equilibrium row (32.43 dB, quoted from a set-up whose blur may
#   differ, see above) is the natural reference for such a run.
# * **The fourth pair with the 9×9 kernel at 64 pixels.** `CPLNet` was trained with the 5×5
#   $\sigma = 1$ kernel only, which at 64 pixels stands for Table 2's blur. The same pair with the
#   9×9 kernel at 64 pixels, a harder problem than any in the paper, would take about two more
#   hours of CPU.
# * **Table 2's noise at this scale.** The 64-pixel runs keep noise 0.01, twice Table 2's noise
#   seen at 64 pixels; a pair at noise 0.005 would match Table 2 in both blur and noise.
# * **Variance.** Each learned row is one training run (seed 0). Differences of a few
#   tenths of a dB between JFB and IFT are within what another seed could change.
#
# ## Summary
#
# * Compare methods only on the same images, blur, noise, size and data range, with
#   every weight tuned on validation data. Table 2 mixes blurs and quotes a TV row with no tuning protocol.
# * JFB and IFT differ only in the backward pass. The time-to-quality curve, not the
#   time per step, is what decides between them.
# * For an implicit network, report the PSNR at a solved fixed point and the tolerance
#   that defines "solved". A loose tolerance can hide a model that works only because
#   the solver stops early.
# * The exact data step of chapter 6 made the fixed points carry the quality: the proximal
#   pair scores the same at tolerances $10^{-3}$ and $10^{-5}$, while the explicit pair loses
#   several dB.
# * A blur kernel is measured in pixels. At half the image side, Table 2's 9×9 variance-5 blur
#   is, to about 1%, the 5×5 $\sigma = 1$ kernel applied at 64 pixels; the 9×9 kernel applied at
#   64 pixels is a blur twice as wide relative to the face. Noise does not scale that way: seen
#   at half the side, Table 2's noise is halved.
# * With that over-strong 9×9 kernel at 64 pixels, the best JFB-trained network of the first
#   three pairs beats tuned TV by 0.19 dB on 2,000 test images, short of the course's +2 dB
#   target; JFB came within 0.5 dB of where the stopped IFT run ended in about 12% of IFT's
#   training time.
# * With convex potential layers under the same bound, with the 5×5 $\sigma = 1$ kernel (Table 2's
#   blur at this size), the JFB-trained network beats tuned TV by 2.2 dB on all 2,000 test
#   images (target met), and by 2.3 dB on the first 50 at a solved fixed point. It came within
#   0.5 dB of where the stopped IFT run ended in 18% of IFT's training time. Plug-and-Play with
#   the same network as a relaxed denoiser gains 0.6 dB over TV.
#
# ## Exercises
#
# 1. Plug-and-Play with a denoiser of Lipschitz constant $\kappa < 1$ and step $\tau \le 2/L$ is a
#    contraction. Why, and what does that cost at the fixed point? What changes with the
#    relaxed denoiser $D_a = I + a(D - I)$ of the fourth pair's PnP row?
# 2. The TV weight chosen on validation sits inside the tuning grid here. Why check
#    that? What would a weight at the edge of the grid mean?
# 3. IFT's adjoint solve was capped at 50 iterations. Using chapter 5's Neumann view,
#    what gradient does a capped fixed-point adjoint iteration compute?
#
# ```{admonition} Solutions
# :class: dropdown
#
# 1. $x \mapsto x - \tau A^\top(Ax - d)$ has Jacobian $I - \tau A^\top A$ with eigenvalues in
#    $[1 - \tau L, 1]$, so it is non-expansive for $\tau \le 2/L$. Composed with a $\kappa$-Lipschitz
#    denoiser, the map is $\kappa$-Lipschitz, and PnP converges to a unique fixed point from any
#    start. The cost is that the fixed point satisfies $x^\star = D(\cdot)$ with $D$ multiplying all
#    distances by at most $\kappa$. A contraction cannot fix every clean image at once, so
#    $x^\star$ is biased towards the denoiser's own fixed point. With $D_a = (1 - a)I + aD$ the
#    triangle inequality gives $\operatorname{Lip}(D_a) \le (1 - a) + a\kappa = 1 - a(1 - \kappa)$, still below 1:
#    PnP still converges, more slowly for small $a$. At the fixed point,
#    $\tau A^\top(Ax^\star - d) = a\,(D(y) - y)$ with $y = x^\star - \tau A^\top(Ax^\star - d)$, so $a$ acts as a
#    regularisation weight: a smaller $a$ weakens the denoiser's bias, and as $a \to 0$ PnP drifts
#    towards the unregularised least-squares solution (the direct inverse, 9.5 dB here) while the
#    contraction factor tends to 1. That trade-off is why $a$ is tuned.
# 2. At the edge, the best weight may lie outside the grid, and the baseline would be
#    weaker than a properly tuned one. The comparison would then flatter the
#    learned method.
# 3. The iteration $w \leftarrow g + J^\top w$ started at $w = g$ computes, when it hits the cap
#    of $K$ iterations, the truncated Neumann sum $g\sum_{k=0}^{K} J^k$. That is exactly
#    `grad_mode="neumann"` with `neumann_k=K` (chapter 5). It equals the implicit gradient
#    only when the residual is small, which is why the residual is logged.
# ```
