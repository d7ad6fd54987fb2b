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
# The paper's Table 2 {cite:p}`liu2024jfbdeblur` answers one question: trained with JFB, how does
# DE-GRAD compare with total variation (TV), Plug-and-Play (PnP) and the Deep Equilibrium model of
# Gilton et al. {cite:p}`gilton2021deep`, which is DE-GRAD trained with the exact implicit gradient
# (IFT)? This chapter answers the same question with the course's own runs, at the paper's
# resolution and at half of it. By the end you will be able to read a comparison table critically
# (same images and noise for every row, weights tuned on validation data, scores at a solved
# fixed point) and to turn per-step timings into the comparison that matters in practice, time
# to quality. Everything is loaded from committed artefacts in `results/`; the commands that made
# them are in `results/README.md`, and no number here is computed on CelebA while the chapter runs.

# %%
# %matplotlib inline
import matplotlib.pyplot as plt
import numpy as np
from IPython.display import Markdown, display

from jfb_core.evaluate import format_weight
from jfb_core.provenance import find_results_dir
from jfb_core.report import (check_same_measurements, compare, curve_points, load_json, per_image, rows_markdown,
                             setting_label, time_to_quality, training_label)

results = find_results_dir()
ev, base, train_logs = results / "eval", results / "baselines", results / "train"
log = {name.name: load_json(name / "log.json") for name in sorted(train_logs.iterdir())}

# %% [markdown]
# ## The paper's Table 2
#
# PSNR (dB) and SSIM on CelebA test images at $128 \times 128$, a 9×9 Gaussian blur of variance 5
# and noise 0.01:

# %%
paper = {"Total Variation": (26.70, 0.90), "Plug-n-Play": (29.77, 0.88), "Deep Equilibrium": (32.43, 0.94),
         "JFB (paper)": (26.88, 0.91)}
display(Markdown("| method | PSNR (dB) | SSIM |\n|---|---|---|\n"
                 + "\n".join(f"| {k} | {p:.2f} | {s:.2f} |" for k, (p, s) in paper.items())))

# %% [markdown]
# Three things limit what the table can say. The TV, PnP and Deep Equilibrium rows are quoted
# from Gilton et al., whose public CelebA deblurring script blurs with a 5×5 kernel of $\sigma = 5$
# (chapter 2 quotes the lines), so the rows may not share a blur with the JFB row. No tuning
# protocol is given for TV. And the paper does not state the data range of its PSNR; its public
# code normalises images to $[-1, 1]$ (`scripts/script_fixlr.py`, commit `11bc6ff`, line 24:
# `transforms.Normalize((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))`) and reports $-10\log_{10}(\mathrm{MSE})$
# (`support/metrics.py`, commit `8604e65`, line 16), which reads 6.02 dB *lower* than the PSNR of
# the same reconstruction on $[0, 1]$. The course's
# rows below therefore share one evaluation protocol instead of being set beside the paper's bar for bar.
#
# ## The course's settings
#
# Every row of a course table scores the *same test images under the same measurements*: the
# noise of each image is drawn from its number, and `jfb_core.report.compare` refuses to merge
# two evaluations whose images, blur, noise, size or data range differ. TV's weight *and its
# smoothing* $\delta$ (chapter 2: tuning $\delta$ is worth a few tenths of a dB, and the exact TV
# is weaker still) and PnP's step and strength are tuned on validation images (the end of the
# training range, 7,901–8,000), never on test images. PSNR and SSIM are on $[0, 1]$.
#
# | setting | size | blur | training (CPU, one thread per run) |
# |---|---|---|---|
# | **A** | 128×128 | 9×9, variance 5 (Table 2) | JFB 200 steps; IFT 11 steps in the same time [1]; both warm-started from B |
# | **A′** | 128×128 | 5×5, $\sigma = 1$ (the paper's training blur) | JFB 200 steps, warm-started from B |
# | **A″** | 128×128 | 5×5, $\sigma = 5$ [2] | JFB 200 steps, warm-started from B |
# | **B** | 64×64 | 5×5, $\sigma = 1$ (Table 2's blur at this size, chapter 6) | JFB 1,400 steps; IFT 200 steps [3]; one pretraining epoch |
#
# All four use the CelebA paper split (test images 8,001–10,000), noise 0.01 and the same
# network: a CPLNet of 6 layers of 32 channels, $\epsilon = 0.99$, the proximal data step and a
# trainable $\rho$ (chapter 6). [1] IFT's adjoint solves were capped at 200 iterations; the worst
# logged residual is $1.3 \cdot 10^{-4}$ against a tolerance of $10^{-4}$. [2] The blur of Gilton et
# al.'s public script, from whose paper Table 2's Deep Equilibrium row is quoted. [3] The adjoint
# solves were capped at 50 iterations and the worst logged residual is $7.3 \cdot 10^{-4}$ against a
# tolerance of $10^{-4}$: setting B's IFT follows a truncated implicit gradient.
#
# The paper's network is 17 layers of 64 channels trained for many epochs on a GPU; the course's
# is 6 × 32 and trains for about an hour at 64 pixels, then about an hour more at 128, on a CPU. The GPU command that trains the paper's
# network with both backward modes and scores them beside TV is `python -m jfb_core paper-run`
# (README).
#
# ## Table 2 at the paper's resolution
#
# Setting A, the paper's own problem. TV and JFB are scored on all 2,000 test images; IFT on the
# first 500 (enough to pin its mean to about 0.1 dB, and a quarter of the CPU time) and PnP on the first 100 (a hundred denoiser passes per image); each row's gain over the
# tuned TV is measured image by image, on the images that row scored. PnP's denoiser is the
# pretrained `CPLNet` of setting B's runs, applied at 128 pixels (the network is convolutional):

# %%
tv_a = load_json(base / "celeba-paper-test_9x9_var5_tv-tuned.json")
base_a = load_json(base / "celeba-paper-test_9x9_var5_zeros.json")
ev_a = {m: load_json(ev / f"celeba-paper-test_128px_9x9_var5_cpl_{m}.json") for m in ("jfb", "ift")}
pnp_a = load_json(ev / "celeba-paper-test_128px_9x9_var5_pnp.json")
rows_a = compare(tv_a, {"direct inverse": (base_a, "direct"), "TV, delta = 0.01": (base_a, "tv"),
                        "TV, lambda and delta tuned": (tv_a, "tv"), "Plug-and-Play (relaxed CPLNet)": (pnp_a, "pnp"),
                        "DE-GRAD, JFB": (ev_a["jfb"], "degrad_jfb"), "DE-GRAD, IFT": (ev_a["ift"], "degrad_ift")})
display(Markdown(f"A: {setting_label(tv_a)}\n\n" + rows_markdown(
    rows_a, training={"DE-GRAD, JFB": training_label(log["celeba128_9x9_var5_cpl_jfb"]),
                      "DE-GRAD, IFT": training_label(log["celeba128_9x9_var5_cpl_ift"])})))
lam, delta = tv_a["methods"]["tv"]["weight"]
print(f"TV tuned on validation: lambda {lam:g}, delta {delta:g}")
print(f"PnP tuned on validation: step and strength {format_weight(pnp_a['methods']['pnp']['weight'])}")

rows_a12 = {}
for key, blur, run in (("A'", "5x5_s1", "celeba128_5x5_s1_cpl_jfb"), ("A''", "5x5_s5", "celeba128_5x5_s5_cpl_jfb")):
    tv_ref = load_json(base / f"celeba-paper-test_{blur}_tv-tuned.json")  # the first 500 test images
    fixed = load_json(base / f"celeba-paper-test_{blur}_zeros.json")  # all 2,000, delta = 0.01
    jfb = load_json(ev / f"celeba-paper-test_128px_{blur}_cpl_jfb.json")
    rows_a12[key] = compare(tv_ref, {"TV, delta = 0.01": (fixed, "tv"), "TV, lambda and delta tuned": (tv_ref, "tv"),
                                     "DE-GRAD, JFB": (jfb, "degrad_jfb")}, truncate=True)
    display(Markdown(f"{key}: {setting_label(tv_ref)}\n\n" + rows_markdown(
        rows_a12[key], training={"DE-GRAD, JFB": training_label(log[run])})))

# %% [markdown]
# The gains are per image, so the figure shows their spread rather than bars from zero (which
# would hide a difference of a few tenths of a dB under a 30-dB bar):

# %%
def plot_gains(ax, rows, title):
    """Per-image PSNR gain over the reference (TV) of each row: box plot, mean as a dot."""
    rows = [r for r in rows if r.gain.any()]
    ax.boxplot([r.gain for r in rows], orientation="horizontal", showfliers=False, widths=0.5)
    ax.plot([r.gain_mean for r in rows], range(1, len(rows) + 1), "o", color="C3", label="mean")
    ax.set_yticks(range(1, len(rows) + 1), [f"{r.label}\n({r.n} images)" for r in rows], fontsize=8)
    ax.axvline(0, color="k", lw=0.8)
    ax.set(xlabel="PSNR minus tuned TV, per image (dB)", title=title)
    ax.title.set_fontsize(9)
    ax.legend(fontsize=8)


fig, axes = plt.subplots(1, 3, figsize=(15, 3.0), gridspec_kw={"width_ratios": [1.4, 1, 1]})
plot_gains(axes[0], rows_a[1:], "A: 128x128, 9x9 variance 5 (Table 2), CPU")
plot_gains(axes[1], rows_a12["A'"], "A': 128x128, 5x5 sigma 1, CPU")
plot_gains(axes[2], rows_a12["A''"], "A'': 128x128, 5x5 sigma 5, CPU")
plt.tight_layout()
plt.show()

# %% [markdown]
# At Table 2's setting the JFB-trained network beats the TV of highest PSNR (weight and smoothing
# tuned; its SSIM is a little below that of TV with the default smoothing) by 0.56 dB, on 98% of the 2,000 images. Against TV with the default smoothing the same network
# would seem 0.96 dB ahead: 0.4 dB of that apparent lead was the baseline's weakness, which is why
# the baseline is tuned as carefully as the network is trained. The IFT-trained twin, stopped after
# the same training time, gains 0.41 dB on its 500 images, and Plug-and-Play with the same
# pretrained denoiser falls 0.62 dB *below* the tuned TV on its 100 images (at the strength chosen on
# validation its iterations reach their cap of 100 on 40% of the images, so it is scored before
# convergence; the stronger relaxation converges but scored lower on validation). The order agrees with the paper's Deep Equilibrium row being above
# TV, but the gaps are far smaller than its 5.7 dB: the course's TV is tuned at this very blur, and
# its networks are small and briefly trained. And where the paper puts JFB 0.18 dB above TV and
# 5.5 dB below Deep Equilibrium, here the JFB-trained network is at least as good as the IFT-trained
# one. That is what JFB's cheaper steps buy in the same time (the time-to-quality section below),
# not evidence that JFB finds better networks.
#
# At the paper's milder training blur (A′) the gain is larger, 1.55 dB on every one of the first
# 500 images, as a learned regulariser gains most where the blur leaves it detail to work with;
# there, as at every blur, the TV's tuned weight and smoothing sit inside their tuning grid
# (chapter 2). With Gilton et al.'s blur (A″), the JFB-trained network scores 33.09 dB
# (SSIM 0.926) on the first 500 test images, 1.30 dB above the tuned TV and better on every image.
# That is above the 32.43 dB (SSIM 0.94) of
# Table 2's Deep Equilibrium row, which is quoted from Gilton et al., whose public script uses this
# blur (the paper does not say which blur that row used, chapter 2); even if it is the same blur, the
# row comes from their own network, training and evaluation code, so the two numbers would share a
# blur, not a protocol.
#
# ## The 64-pixel companion, with Plug-and-Play
#
# Setting B is the same problem at half the side (5×5 $\sigma = 1$ is Table 2's blur at 64 pixels,
# chapter 6), and cheap enough for every row, including PnP with the same pretrained `CPLNet` as
# its denoiser. PnP iterates $x \leftarrow D_a(x - \tau A^\top(Ax - d))$ with the relaxed denoiser
# $D_a = I + a(D - I)$: the plain denoiser ($a = 1$), pretrained to remove noise of 0.05, oversmooths,
# so the strength $a$ is tuned with the step $\tau$ on the validation images. The iteration is a
# few lines; here it is from scratch with setting B's pretrained denoiser (stored in the JFB
# checkpoint), on two bundled test crops, against the library's `pnp_pgd` at the setting chosen
# below:

# %%
import copy

import torch

from jfb_core.baselines import pnp_pgd
from jfb_core.data import bundled_images, measure
from jfb_core.train import load_checkpoint, load_weights

ckpt_path = train_logs / "celeba64_5x5_s1_cpl_jfb" / "checkpoint.pt"
net_b, ckpt_b = load_checkpoint(ckpt_path)
denoiser = copy.deepcopy(net_b.f)
load_weights(denoiser, ckpt_b["denoiser"], ckpt_path)
denoiser.eval()
A_b = net_b.A


def pnp_scratch(A, d, D, step, a, iters):
    """x <- D_a(x - step A^T (A x - d)), D_a = I + a (D - I), from x = A^T d."""
    x = A.adjoint(d)
    for _ in range(iters):
        z = x - step * A.adjoint(A(x) - d)
        x = z + a * (D(z) - z)
    return x


x2 = bundled_images("test", 64, n=2, seed=0)
d2 = measure(A_b, x2, 0.01, seed=0, indices=[0, 1])
with torch.no_grad():
    mine = pnp_scratch(A_b, d2, denoiser, 1.9, 0.2, 30)
    library = pnp_pgd(A_b, d2, denoiser, step=1.9, strength=0.2, max_iter=30, tol=1e-30)
err_pnp = float((mine - library).norm() / library.norm())
print(f"PnP from scratch against pnp_pgd, 30 iterations: relative difference {'below 1e-6' if err_pnp < 1e-6 else err_pnp}")
assert err_pnp < 1e-6

# %%
base_b = load_json(base / "celeba-paper-test_5x5_s1_zeros_64px.json")
tv_b = load_json(base / "celeba-paper-test_5x5_s1_tv-tuned_64px.json")
ev_b = load_json(ev / "celeba-paper-test_64px_5x5_s1_cpl.json")
pnp_b = load_json(ev / "celeba-paper-test_64px_5x5_s1_cpl_pnp.json")
rows_b = compare(tv_b, {"direct inverse": (base_b, "direct"), "TV, delta = 0.01": (base_b, "tv"),
                        "TV, lambda and delta tuned": (tv_b, "tv"), "Plug-and-Play (relaxed CPLNet)": (pnp_b, "pnp"),
                        "DE-GRAD, JFB": (ev_b, "degrad_jfb"), "DE-GRAD, IFT": (ev_b, "degrad_ift")})
display(Markdown(f"B: {setting_label(tv_b)}\n\n" + rows_markdown(
    rows_b, training={"DE-GRAD, JFB": training_label(log["celeba64_5x5_s1_cpl_jfb"]),
                      "DE-GRAD, IFT": training_label(log["celeba64_5x5_s1_cpl_ift"])})))
step, strength = pnp_b["methods"]["pnp"]["weight"]
tune = pnp_b["methods"]["pnp"]["tuning"]
steps = sorted({w[0] for w in tune["weights"]})
strengths = pnp_b["learned"]["pnp"]["strengths"]
print(f"PnP tuned on validation: step {step:g} of {steps}, strength {strength:g} of {strengths}")
print(f"  validation PSNR from {min(tune['val_psnr']):.2f} to {max(tune['val_psnr']):.2f} dB over the grid")
fig, ax = plt.subplots(figsize=(8, 2.8))
plot_gains(ax, rows_b[1:], "B: 64x64, 5x5 sigma 1, CPU")
plt.tight_layout()
plt.show()

# %% [markdown]
# The implicit network leads, as the paper's Deep Equilibrium row does. JFB-trained DE-GRAD beats the tuned TV on every one
# of the 2,000 images, by 1.6 dB on average (0.3 to 3.2 dB); PnP, with the same architecture and the
# same starting weights, only draws level with it (+0.04 dB, better on 60% of the images), where the
# paper puts PnP 3 dB above its TV. The main difference between the two is that DE-GRAD's network was
# trained *through the fixed point* for this blur, while PnP's was trained only to denoise (the
# iterations differ too, so this is not a clean measurement of end-to-end training alone). The IFT
# twin, stopped after 200 steps, is between them (+0.81 dB).
#
# ## Are the fixed points real?
#
# An implicit network's output is its fixed point, so its score should not depend on how far the
# solver went. The training tolerance ($10^{-3}$, relative residual) bounds the residual, not the
# distance to the fixed point. For a $\gamma$-contraction Theorem 3.1 would turn one into the other
# (the distance is at most $\|T(z) - z\|/(1 - \gamma)$), but these networks are not certified
# contractions: the certificates recorded with the 128-pixel rows bound $\operatorname{Lip}(f_\Theta)$ by
# 2.1 to 6.3, above the $1 + \mu \approx 1$ that the theorem needs (chapter 4), and the 64-pixel
# files record none. So the check
# is empirical: solve much further and score again. Chapter 6's ablation showed what it catches (its explicit-step
# variant with the weight $\rho$ scores 0.9 dB lower when solved); for the networks of setting B on the first 50 test images, and
# for the 128-pixel networks of settings A, A′ and A″ on the first 5 (a float64 solve at 128 pixels
# costs tens of seconds per image on the CPU; `make tight128` and `make eval128-s5` run it):

# %%
tight_b = load_json(ev / "celeba-paper-test_64px_5x5_s1_cpl_tight.json")
pnp_tight = load_json(ev / "celeba-paper-test_64px_5x5_s1_cpl_pnp_tight.json")
n_t = tight_b["test"]["n"]
t = tight_b["learned"]["degrad_jfb"]
print(f"B, first {n_t} test images; DE-GRAD solved to {t['solve_tol']:.0e} in {t['dtype']} "
      f"(inner CG tolerance {t['inner_tol']:.0e}); PnP to {pnp_tight['learned']['pnp']['pnp_solver']['tol']:.0e}")
for label, key, loose_file, tight_file in (("DE-GRAD, JFB", "degrad_jfb", ev_b, tight_b),
                                           ("DE-GRAD, IFT", "degrad_ift", ev_b, tight_b),
                                           ("Plug-and-Play", "pnp", pnp_b, pnp_tight)):
    compare(base_b, {label: (tight_file, key)})  # the same images and measurements
    loose, solved = per_image(loose_file, key)[:n_t], per_image(tight_file, key)
    print(f"  {label:<14} training tolerance {loose.mean():6.2f} dB, solved {solved.mean():6.2f} dB, "
          f"largest change on one image {np.abs(solved - loose).max():.2f} dB")
setting_files = {"A": ("9x9_var5", ("jfb", "ift")), "A'": ("5x5_s1", ("jfb",)), "A''": ("5x5_s5", ("jfb",))}
for name, (blur, modes) in setting_files.items():
    loose_files = {f"degrad_{m}": load_json(ev / f"celeba-paper-test_128px_{blur}_cpl_{m}.json") for m in modes}
    tight = load_json(ev / f"celeba-paper-test_128px_{blur}_cpl_tight.json")
    n_t = tight["test"]["n"]
    print(f"{name}, first {n_t} test images at 128x128, solved to "
          f"{tight['learned']['degrad_jfb']['solve_tol']:.0e} in {tight['learned']['degrad_jfb']['dtype']}")
    for key, loose_file in loose_files.items():
        check_same_measurements(loose_file, tight)  # the same images and measurements
        loose, solved = per_image(loose_file, key)[:n_t], per_image(tight, key)
        print(f"  DE-GRAD, {key[-3:].upper()}   training tolerance {loose.mean():6.2f} dB, solved {solved.mean():6.2f} dB, "
              f"largest change on one image {np.abs(solved - loose).max():.2f} dB")

# %% [markdown]
# Solved a thousand times further, in float64, the mean of every 64-pixel row moves by about a tenth
# of a dB at most (upwards), and no single image by more than 0.4 dB; the 128-pixel networks gain
# between 0.09 and 0.33 dB on their five images (at most 0.55 dB on one), so their training
# tolerance slightly *understates* them. Either way these networks' quality belongs to their fixed points, unlike the explicit-step
# variant of chapter 6's ablation. (For the proximal step, "solved" needs
# both tolerances: each step (6.3) is itself a CG solve, and an outer residual means little if the
# inner one is loose, which is why the tight evaluation tightens both.)
#
# ## Training time to a given quality
#
# Chapter 5 measured one training step: IFT's costs 1.5 to 2.8 JFB steps, by its adjoint solver. What matters is the time to
# reach a given test PSNR. Each run scored the same 64 test images during training and logged its
# training time without the evaluations; one 64-image score jumps by a few tenths of a dB, so curves
# are compared through the mean of their last three scores (`report.time_to_quality`). The IFT runs
# were *stopped* by a budget, so "IFT's final PSNR" is where IFT stood then, not where it would
# converge.

# %%
fig, axes = plt.subplots(1, 2, figsize=(12, 3.8))
for ax, (title, jfb_name, ift_name) in zip(axes, (
        ("B: 64x64, 5x5 sigma 1", "celeba64_5x5_s1_cpl_jfb", "celeba64_5x5_s1_cpl_ift"),
        ("A: 128x128, 9x9 variance 5", "celeba128_9x9_var5_cpl_jfb", "celeba128_9x9_var5_cpl_ift"))):
    curves = {m: curve_points(log[name]) for m, name in (("JFB", jfb_name), ("IFT", ift_name))}
    for (m, c), style in zip(curves.items(), ("o-", "s-")):
        ax.plot([p["train_seconds"] / 60 for p in c], [p["test_psnr"] for p in c], style, ms=4,
                label=f"{m}: {c[-1]['steps']} steps")
    ttq = time_to_quality(curves["JFB"], curves["IFT"])
    ax.axhline(ttq.slow_final - 0.5, color="grey", ls=":", label="IFT's final score - 0.5 dB")
    ax.set(xlabel="training time (min, one CPU thread, evaluations excluded)",
           ylabel="PSNR, first 64 test images (dB)", title=title)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    hit = (f"first within 0.5 dB after {ttq.fast_hit[0] / 60:.0f} min ({ttq.fraction:.0%} of IFT's time)"
           if ttq.fast_hit else "never within 0.5 dB")
    at_end = f"{ttq.fast_at_slow_end:.2f} dB" if ttq.fast_at_slow_end is not None else "not scored yet"
    print(f"{title}: IFT {curves['IFT'][-1]['steps']} steps in {ttq.slow_seconds / 60:.0f} min, final "
          f"{ttq.slow_final:.2f} dB\n  JFB at that time {at_end}; JFB {hit}")
plt.tight_layout()
plt.show()

# %% [markdown]
# In the same training time JFB takes many more steps than IFT (about 18 times as many at 128
# pixels, where IFT's adjoint needed about 180 fixed-point iterations per step), and it reaches IFT's
# final quality in a fraction of IFT's time. At 128 pixels JFB was within 0.5 dB of IFT's final
# score at its first score (29.74 against 29.77 dB, 50 steps in) and passed it at step 100 (29.79 dB,
# about 55% of IFT's time); there both runs began from 64-pixel networks and IFT was scored once only,
# so that panel says little beyond "JFB was not behind".
#
# ## The held-out check
#
# The recipe's settings (chapter 6) were chosen by scores on the first 64 test images, a mild form
# of tuning on test data. The gains on the 1,936 test images that played no part in any
# choice:

# %%
for name, rows in (("A", rows_a), ("B", rows_b)):
    for r in rows:
        if r.label.startswith("DE-GRAD") and r.n > 64:
            print(f"{name}, {r.label}: {r.gain[:64].mean():+.2f} dB on the first 64, "
                  f"{r.gain[64:].mean():+.2f} dB on the other {r.n - 64}")

# %% [markdown]
# The gains on the held-out images match those on the 64 used for choices to within 0.1 dB, so the
# choices did not inflate the tables.
#
# ```{admonition} What these tables do and do not show
# :class: important
#
# * They compare methods under one protocol: same images and noise, tuned baselines, solved fixed
#   points. They do not reproduce the paper's numbers, whose set-up (network, training length, PSNR
#   range, and the blur of the quoted rows) differs.
# * Each learned row is one training run (seed 0). Differences of a few tenths of a dB between JFB
#   and IFT are within what another seed could change, and the IFT runs were stopped by a wall-clock
#   limit on training (`--max-seconds`) or a step limit, not at convergence.
# * PnP's denoiser is trained with a Lipschitz target of 0.99, under which PnP would provably converge
#   (exercise 1). As scored, its stored norm estimates lag its weights: the certificate recorded with
#   the 128-pixel PnP row (`celeba-paper-test_128px_9x9_var5_pnp.json`) bounds its Lipschitz constant
#   by 1.46 only, and the 64-pixel files record none, so the guarantee does not cover these rows. An
#   unconstrained denoiser, as PnP is usually run, has no guarantee either and may score higher.
# ```
#
# ## Summary
#
# * Compare methods only on the same images, blur, noise, size and data range, with every weight
#   tuned on validation data; a library check that refuses to merge anything else makes this cheap.
# * At Table 2's setting (128 px, CPU, a 6 × 32 network, about an hour of training after the 64-px
#   runs), JFB-trained DE-GRAD beats the TV of highest PSNR (weight and smoothing tuned) by 0.56 dB on 98%
#   of the 2,000 test images; at the paper's training blur by 1.55 dB, and at Gilton et al.'s blur it
#   scores 33.09 dB on the first 500. A baseline tuned less carefully (TV's default smoothing) would
#   have added 0.14 to 0.50 dB to these leads.
# * Report an implicit network's PSNR at a solved fixed point, with the tolerance that defines
#   "solved": these networks move by a few tenths of a dB (upwards), chapter 6's explicit-step
#   variant by 0.9 dB (downwards).
# * JFB and IFT differ only in the backward pass; time to quality, not time per step, decides between
#   them, and here JFB reached IFT's quality in a fraction of IFT's time.
#
# ## Exercises
#
# 1. Plug-and-Play with a denoiser of Lipschitz constant $\epsilon_D < 1$ and step $\tau \le 2/L$ is a
#    contraction. Why, and what does that cost at the fixed point? What changes with the
#    relaxed denoiser $D_a = I + a(D - I)$ of setting B's PnP row?
# 2. At every blur the TV weight and smoothing chosen on validation sit inside their grid.
#    Why check that? What does a choice at the edge of
#    the grid mean for the comparison?
# 3. An IFT adjoint solve capped at $K$ iterations: using chapter 5's Neumann view, what
#    gradient does it compute?
# 4. (Coding.) With `compare` and `per_image`, find the fraction of the 2,000 test images of
#    setting B on which JFB-trained DE-GRAD beats Plug-and-Play, and the image where its lead is
#    smallest.
#
# ````{admonition} Solutions
# :class: dropdown
#
# 1. $x \mapsto x - \tau A^\top(Ax - d)$ has Jacobian $I - \tau A^\top A$ with eigenvalues in
#    $[1 - \tau L, 1]$, so it is non-expansive for $\tau \le 2/L$. Composed with an $\epsilon_D$-Lipschitz
#    denoiser, the map is $\epsilon_D$-Lipschitz, and PnP converges to a unique fixed point from any
#    start. The cost is that the fixed point satisfies $x^\star = D(\cdot)$ with $D$ multiplying all
#    distances by at most $\epsilon_D$. A contraction cannot fix every clean image at once, so
#    $x^\star$ is biased towards the denoiser's own fixed point. With $D_a = (1 - a)I + aD$ the
#    triangle inequality gives $\operatorname{Lip}(D_a) \le (1 - a) + a\epsilon_D = 1 - a(1 - \epsilon_D)$, still below 1:
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
# 4. ```python
#    rows = compare(base_b, {"jfb": (ev_b, "degrad_jfb"), "pnp": (pnp_b, "pnp")})
#    lead = per_image(ev_b, "degrad_jfb") - per_image(pnp_b, "pnp")
#    print(f"{(lead > 0).mean():.1%}", base_b["test"]["ids"][lead.argmin()], lead.min())
#    ```
#    `compare` is called for its check: it raises if the two files did not see the same
#    measurements, in which case the per-image difference would mean nothing.
# ````
