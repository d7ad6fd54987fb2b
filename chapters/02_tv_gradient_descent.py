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
# # Classical reconstruction: total variation and gradient descent
#
# Chapter 1 showed that $A^{-1}d$ is useless: the blur is so ill-conditioned that
# inverting it amplifies the noise beyond recognition. The classical cure is to
# *regularise*: ask for an image that explains the measurement *and* looks like
# an image. This chapter follows Section 3.2 of the paper
# {cite:p}`liu2024jfbdeblur`: the regularised least-squares problem (3.2), its
# gradient descent iteration (3.3), and the total variation (TV) regulariser of
# {cite:t}`rudin1992nonlinear`. You will learn to pick a provably safe step size,
# to see semi-convergence and why a regulariser cures it, to tune the TV weight
# on a validation split (never on the test split), and to check the results
# against an independent implementation. The iteration (3.3) is the template
# that chapter 4's implicit network copies, with a *learned* regulariser in
# place of TV.

# %%
# %matplotlib inline
import json
import math
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import torch

from jfb_core.baselines import direct_inverse, tikhonov, tune_weight, tv_gradient_descent, tv_objective
from jfb_core.config import get_preset
from jfb_core.data import bundled_images, bundled_photo, measure
from jfb_core.metrics import psnr, ssim
from jfb_core.regularizers import image_gradient, tv, tv_grad, tv_lipschitz

torch.manual_seed(0)
preset = get_preset()
print(f"preset: {preset.name}; blur {preset.blur} with {preset.padding} padding; noise std {preset.noise_std}")


def show(images, titles, size=2.6):
    fig, axes = plt.subplots(1, len(images), figsize=(size * len(images), size + 0.3), squeeze=False)
    for ax, img, title in zip(axes.flat, images, titles):
        ax.imshow(img[0].permute(1, 2, 0).clamp(0, 1).numpy())
        ax.set_title(title, fontsize=9)
        ax.axis("off")
    fig.tight_layout()
    plt.show()


# %% [markdown]
# ## Regularised least squares
#
# Instead of solving $Ax = d$, we solve
#
# $$
# x^\star = \arg\min_{x \in \mathbb{R}^n} \; \tfrac12 \|Ax - d\|_2^2 + \lambda R(x), \tag{3.2}
# $$
#
# where the *data term* keeps $Ax$ close to $d$ and the *regulariser* $R$ penalises
# images that do not look natural; $\lambda > 0$ balances the two. Two classical
# choices:
#
# * **Tikhonov**, $R(x) = \tfrac12\|x\|^2$: the minimiser solves the linear system
#   $(A^\top A + \lambda I)x = A^\top d$, whose smallest eigenvalue is now at least
#   $\lambda$ instead of $\mu \approx 0$. It damps exactly the frequencies that blew up
#   in chapter 1, but it also blurs edges.
# * **Total variation**, $R(x) = \sum_{c,i,j} \|(\nabla x)_{c,i,j}\|_2$, the sum of the
#   lengths of the image's gradient vectors. It is small for images made of flat
#   regions separated by sharp edges: it removes noise and oscillations while
#   keeping edges, which is why it has been the reference regulariser for images
#   since 1992.
#
# TV is not differentiable where the gradient vanishes. To run gradient descent
# we smooth it with a small $\delta > 0$:
#
# $$
# R_\delta(x) = \sum_{c,i,j} \Big(\sqrt{(\partial_1 x)_{c,i,j}^2 + (\partial_2 x)_{c,i,j}^2 + \delta^2} - \delta\Big),
# \qquad
# \nabla R_\delta(x) = -\operatorname{div}\!\Big(\frac{\nabla x}{\sqrt{|\nabla x|^2 + \delta^2}}\Big),
# $$
#
# with forward differences $\partial_1, \partial_2$ and $\operatorname{div} = -\nabla^\top$. The
# tests check this gradient against finite differences and autograd, and that
# `divergence` is exactly minus the adjoint of `image_gradient`.
#
# ## Gradient descent, eq. (3.3)
#
# The paper's iteration is
#
# $$
# x^{k+1} = x^k - \eta \left( \nabla_x \|Ax^k - d\|_2^2 + \lambda \nabla_x R(x^k) \right),
# \qquad k = 0, 1, \dots, K-1. \tag{3.3}
# $$
#
# The course writes the data term as $\tfrac12\|Ax - d\|^2$, whose gradient is
# $A^\top(Ax - d)$; the paper's version has an extra factor 2, which is absorbed
# in $\eta$. **Step size.** If the gradient of the objective is Lipschitz with
# constant $\Lambda$, every step with $\eta \le 1/\Lambda$ decreases the objective (the
# descent lemma). Here $\Lambda = L + \lambda \cdot 8/\delta$: $L = \lambda_{\max}(A^\top A)$ from
# chapter 1 for the data term, and $8/\delta$ for $R_\delta$ (because $\|\nabla\|^2 \le 8$ for
# forward differences in 2-D). The library uses $\eta = 1/\Lambda$ by default.
#
# Here is (3.3) written out as a teaching version, next to the library:

# %%
def tv_descent_teaching(A, d, lam, delta, eta, iterations):
    """Plain gradient descent (3.3) on 1/2||Ax-d||^2 + lam * TV_delta(x), from x0 = A^T d."""
    x = A.adjoint(d)
    for _ in range(iterations):
        dx, dy = image_gradient(x)
        w = 1.0 / torch.sqrt(dx**2 + dy**2 + delta**2)
        px, py = dx * w, dy * w
        div = torch.zeros_like(x)  # div(p) = -grad^T p, with the forward-difference boundary
        div[..., :, :-1] += px[..., :, :-1]
        div[..., :, 1:] -= px[..., :, :-1]
        div[..., :-1, :] += py[..., :-1, :]
        div[..., 1:, :] -= py[..., :-1, :]
        x = x - eta * (A.adjoint(A(x) - d) - lam * div)
    return x


A = preset.blur_operator()  # the preset's blur and padding, as an operator
x = bundled_photo("astronaut", 128).double()
d = measure(A, x, preset.noise_std, seed=0)
lam, delta = 2e-3, 1e-2
L = A.eigenvalue_bounds(128, 128).L
eta = 1.0 / (L + lam * tv_lipschitz(delta))
print(f"L = {L:.4f}, Lipschitz constant of the objective's gradient {L + lam * tv_lipschitz(delta):.3f}, eta = {eta:.4f}")
mine = tv_descent_teaching(A, d, lam, delta, eta, 50)
lib = tv_gradient_descent(A, d, lam, delta=delta, max_iter=50, tol=0.0)
gap = float((mine - lib.x).abs().max())  # rounding level; its last digits vary with the processor
assert gap < 1e-12
print("teaching vs library after 50 steps: max difference below 1e-12")

# %% [markdown]
# ## The objective decreases; the error does not always
#
# We run plain gradient descent for several weights $\lambda$, including $\lambda = 0$
# (no regulariser: this is the Landweber iteration for $Ax = d$), and record the
# objective and the PSNR of every iterate. The library records both when it is
# given the ground truth, which only a teaching experiment has.

# %%
weights = [0.0, 2e-4, 2e-3, 2e-2]
runs = {w: tv_gradient_descent(A, d, w, delta=delta, max_iter=600, tol=0.0, x_true=x, track=True)
        for w in weights}



def reference_minimum(w, r):
    """The minimum F* of the objective: 0 without a regulariser (A is invertible), else the lowest
    value of 3,000 accelerated (Nesterov) steps started from the last iterate of `r`."""
    if w == 0:
        return 0.0
    ref = tv_gradient_descent(A, d, w, delta=delta, max_iter=3000, tol=0.0, x0=r.x, momentum=True, track=True)
    return min(float(ref.objective[:, 0].min()), float(r.objective[:, 0].min()))


fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
for w, r in runs.items():
    obj = r.objective[:, 0].numpy()
    axes[0].semilogy(obj - reference_minimum(w, r), label=f"lambda = {w:g}")
    axes[1].plot(r.psnr[:, 0].numpy(), label=f"lambda = {w:g}")
axes[0].set_title("objective minus its minimum F* (log scale)", fontsize=10)
axes[0].set_xlabel("iteration k")
axes[1].axhline(float(psnr(d, x)), color="gray", ls="--", label="measurement d")
axes[1].set_title("PSNR of the iterate x^k (dB)", fontsize=10)
axes[1].set_xlabel("iteration k")
for ax in axes:
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
fig.tight_layout()
plt.show()

for w, r in runs.items():
    steps = r.objective[1:, 0] - r.objective[:-1, 0]
    print(f"lambda = {w:7.0e}: step {r.step:.3f}, largest objective change {float(steps.max()):+.2e} "
          f"(never positive), PSNR peak {float(r.psnr[:, 0].max()):.2f} dB at k = {int(r.psnr[:, 0].argmax())}, "
          f"final {float(r.psnr[-1, 0]):.2f} dB")

# %% [markdown]
# Every curve on the left decreases, as the descent lemma promises. With a regulariser the
# objective approaches its minimum $F^\star$ (computed by 3,000 accelerated steps further on);
# without one it is still about 1 above $F^\star = 0$ after 600 steps, because the components along
# the tiny eigenvalues of $A^\top A$ converge very slowly. The right panel tells the more important story:
#
# * **Semi-convergence.** Without a regulariser ($\lambda = 0$) and with a weak one,
#   the PSNR rises, peaks, and then falls: the iteration first recovers the
#   strong, low-frequency components of the image, then starts fitting the noise
#   through the tiny eigenvalues of $A^\top A$, exactly as CG did in chapter 1.
#   Stopping at the peak would need the ground truth.
# * **A good regulariser makes the limit itself good.** With a well-chosen
#   $\lambda$ the PSNR climbs to a plateau and stays close to it: the minimiser of
#   (3.2) is a good image, and running longer costs almost nothing.
# * **Too much regularisation** gives a stable but over-smoothed, cartoon-like
#   image with a lower PSNR.
#
# ## Choosing the weight on a validation split
#
# The best $\lambda$ depends on the blur, the noise and the images. We choose it by
# the mean PSNR on a *validation* split (the bundled `val` photographs at the
# preset's size), then report the *test* split at that $\lambda$. Tuning on the
# test split would make the reported number optimistic. For speed we use
# Nesterov's accelerated gradient (`momentum=True`), which reaches the same
# minimiser in far fewer iterations (it is not monotone, which is why the
# experiment above used plain descent).

# %%
size = preset.image_size
x_val = bundled_images("val", size, n=preset.n_val, seed=preset.seed).double()
x_test = bundled_images("test", size, n=preset.n_test, seed=preset.seed).double()
d_val = measure(A, x_val, preset.noise_std, seed=1)
d_test = measure(A, x_test, preset.noise_std, seed=2)

tv_grid = [1e-4, 2e-4, 5e-4, 1e-3, 2e-3, 5e-3, 1e-2, 2e-2]
tik_grid = [1e-3, 3e-3, 1e-2, 3e-2, 1e-1]


def tv_rec(dd, w):
    return tv_gradient_descent(A, dd, w, delta=delta, max_iter=300, momentum=True).x


tv_tuning = tune_weight(lambda w: tv_rec(d_val, w), x_val, tv_grid)
tik_tuning = tune_weight(lambda w: tikhonov(A, d_val, w), x_val, tik_grid)
print(f"validation: {len(x_val)} crops of {size}x{size}; test: {len(x_test)} crops")
print(f"TV weight chosen on validation:       {tv_tuning.best:g}")
print(f"Tikhonov weight chosen on validation: {tik_tuning.best:g}")

fig, axes = plt.subplots(1, 2, figsize=(10, 3.4))
axes[0].semilogx(tv_tuning.weights, tv_tuning.psnr, "o-")
axes[0].set_title("TV: validation PSNR against lambda", fontsize=10)
axes[1].semilogx(tik_tuning.weights, tik_tuning.psnr, "o-", color="C1")
axes[1].set_title("Tikhonov: validation PSNR against lambda", fontsize=10)
for ax, best in zip(axes, (tv_tuning.best, tik_tuning.best)):
    ax.axvline(best, color="gray", ls=":")
    ax.set_xlabel("lambda")
    ax.set_ylabel("mean PSNR (dB)")
    ax.grid(alpha=0.3)
fig.tight_layout()
plt.show()

# %% [markdown]
# ## Results on the test split
#
# The same measurements for every method; PSNR and SSIM on $[0, 1]$ (data range 1),
# averaged over the test crops.

# %%
recons = {
    "measurement d": d_test,
    "direct inverse (CG, 100 it.)": direct_inverse(A, d_test, max_iter=100),
    f"Tikhonov (lambda={tik_tuning.best:g})": tikhonov(A, d_test, tik_tuning.best),
    f"TV (lambda={tv_tuning.best:g})": tv_rec(d_test, tv_tuning.best),
}
print(f"bundled test crops ({len(x_test)} x {size}x{size}), blur {preset.blur}, {preset.padding} padding, CPU")
print(f"{'method':>32} {'PSNR (dB)':>10} {'SSIM':>7}")
for name, xr in recons.items():
    print(f"{name:>32} {float(psnr(xr, x_test)):10.2f} {float(ssim(xr, x_test)):7.3f}")

# %% [markdown]
# And on the two full portraits at 128×128, with the weights chosen above
# (chosen at the preset's crop size, so slightly off for a larger image):

# %%
portraits = torch.cat([bundled_photo("astronaut", 128), bundled_photo("grace_hopper", 128)]).double()
d_p = measure(A, portraits, preset.noise_std, seed=3)
rec_p = {
    "d": d_p,
    "direct": direct_inverse(A, d_p, max_iter=100),
    "Tikhonov": tikhonov(A, d_p, tik_tuning.best),
    "TV": tv_rec(d_p, tv_tuning.best),
}
for i in range(2):
    show([portraits[i:i + 1]] + [r[i:i + 1] for r in rec_p.values()],
         ["ground truth"] + [f"{k}: {float(psnr(r[i:i + 1], portraits[i:i + 1])):.2f} dB" for k, r in rec_p.items()])

# %% [markdown]
# TV gives the sharpest edges and flat, noise-free regions; Tikhonov keeps some
# ringing and graininess near edges; the unregularised inverse is dominated by
# amplified noise even after only 100 CG iterations.
#
# ## An independent check: scikit-image
#
# How do we know our Tikhonov solver is right? Scikit-image
# {cite:p}`vanderwalt2014scikit` has its own Wiener–Hunt deconvolution,
# `skimage.restoration.wiener`, which assumes periodic boundaries and
# minimises $\|Ax - d\|^2 + \text{balance}\,\|\Gamma x\|^2$ in the Fourier domain. With the
# identity as its regularisation operator $\Gamma$, it solves the same problem as our
# circular Tikhonov with $\lambda = \text{balance}$. The two implementations share
# no code, so agreement to rounding error is strong evidence that both are
# right. Its default regulariser is the Laplacian, a different (smoothness) prior
# that we also score, as is its self-tuning `unsupervised_wiener`.

# %%
from skimage import restoration

from jfb_core.operators import gaussian_kernel2d

Ac = preset.blur_operator(padding="circular")
blur = Ac.kernel.numpy()
d_c = measure(Ac, portraits, preset.noise_std, seed=3)


def per_channel(fn, batch):
    return torch.tensor(np.stack([np.stack([fn(img[c].numpy()) for c in range(img.shape[0])]) for img in batch]))


lam_c = tik_tuning.best
ours = tikhonov(Ac, d_c, lam_c)
sk_identity = per_channel(lambda im: restoration.wiener(im, blur, balance=lam_c, reg=np.ones((1, 1)), clip=False), d_c)
print(f"circular Tikhonov vs skimage.restoration.wiener(reg=I): max difference {(ours - sk_identity).abs().max():.1e}")

rng_seed = 0
sk_laplace = {b: per_channel(lambda im: restoration.wiener(im, blur, balance=b, clip=True), d_c) for b in (1e-3, 1e-2, 1e-1)}
sk_unsup = per_channel(lambda im: restoration.unsupervised_wiener(im, blur, clip=True, rng=rng_seed)[0], d_c)
tv_c = tv_gradient_descent(Ac, d_c, tv_tuning.best, delta=delta, max_iter=300, momentum=True).x
print(f"\nportraits 128x128, blur {preset.blur}, circular boundary: mean PSNR (dB) / SSIM")
rows = {"measurement d": d_c, f"ours: Tikhonov (lambda={lam_c:g})": ours,
        **{f"skimage wiener, Laplacian, balance={b:g}": r for b, r in sk_laplace.items()},
        "skimage unsupervised_wiener": sk_unsup, f"ours: TV (lambda={tv_tuning.best:g})": tv_c}
for name, xr in rows.items():
    xr = xr.clamp(0, 1)
    print(f"{name:>40}: {float(psnr(xr, portraits)):6.2f} / {float(ssim(xr, portraits)):.3f}")

# %% [markdown]
# ## At scale: CelebA, both blur settings of the paper
#
# The runs above are textbook scale. The same methods, tuned the same way, were
# run on the paper's CelebA test split (images 8,001 to 10,000, whole
# 178×218 images resized to 128×128, as the paper did) by the library's command
# line, for all three blur settings, for instance
#
# ```bash
# python -m jfb_core evaluate --preset paper --data /path/to/celeba --blur 9x9_var5
# ```
#
# which tunes the Tikhonov and TV weights on the last 100 training images (7,901–8,000) and
# writes `results/baselines/celeba-paper-test_9x9_var5_zeros.json` with the
# command, the machine and the full configuration. We load those files here. The
# paper's Table 2 reports TV at 26.70 dB / 0.90 for the 9×9, variance 5 setting;
# that row is quoted from {cite:t}`gilton2021deep`, whose public CelebA deblurring
# script blurs with a 5×5 kernel of $\sigma = 5$ (`kernel_size = 5` and `kernel_sigma = 5.0`,
# lines 54–55 of `scripts/fixedpoint/deblur_proxgrad_fixedeta_pre.py` in
# `dgilton/deep_equilibrium_inverse`, commit e97a319), so it is shown beside both.

# %%
from jfb_core.evaluate import format_weight
from jfb_core.provenance import command_line, find_results_dir

results_dir = find_results_dir() / "baselines"
files = sorted(p for p in results_dir.glob("celeba-paper-test_*_zeros.json"))  # the 128x128 runs
print(f"{'blur':>9} {'method':>9} {'weight':>7} {'PSNR':>7} {'SSIM':>6}  images  device")
edges = []
for f in files:
    r = json.loads(f.read_text())
    env = r["provenance"]["environment"]
    for name, m in r["methods"].items():
        w = "" if m["weight"] is None else f"{m['weight']:.0e}"
        print(f"{r['blur']['name']:>9} {name:>9} {w:>7} {m['psnr_mean']:7.2f} {m['ssim_mean']:6.3f}  "
              f"{r['test']['n']:>6}  {env['device']}")
        if m["tuning"] and m["weight"] in (min(m["tuning"]["weights"]), max(m["tuning"]["weights"])):
            edges.append(f"{r['blur']['name']} {name}")
    print(f"{'':>9} command: {command_line(r['provenance']['command'].split())}")
print("\npaper, Table 2 (quoted from Gilton et al.): TV 26.70 dB / 0.90")
if edges:
    print(f"weight chosen at the edge of its grid (a wider grid might do better): {', '.join(edges)}")
if not files:
    print("(no CelebA results found: run the command above)")

# %% [markdown]
# Four observations. First, on the paper's own test images and its Table 2 blur
# (9×9, variance 5), a tuned TV scores about 2.4 dB *above* the paper's TV row in
# PSNR, but about 0.04 *below* it in SSIM: the Table 2 row was not measured on
# this data and blur, and the two metrics need not move together (TV's flat,
# cartoon-like regions cost structural similarity on skin texture). With the 5×5,
# $\sigma = 5$ blur of Gilton et al.'s public script (which may or may not be the one
# behind the quoted row), TV is above the row in both metrics. Second,
# its best weight sits at the lower edge of the tuning grid (flagged above), so a
# wider grid could raise the TV number further; the same holds for the
# flagged Tikhonov rows. Third, the blur settings give very different numbers for
# the same method; a comparison across settings means nothing unless the setting
# is stated. Fourth, these are PSNR values on $[0, 1]$; the paper's code computed
# $-10\log_{10}(\mathrm{MSE})$ (`support/metrics.py`, commit `8604e65`, line 16) on images
# normalised to $[-1, 1]$ (`scripts/script_fixlr.py`, commit `11bc6ff`, line 24), which reads 6.02 dB lower for the same
# reconstruction (`jfb_core.metrics.psnr_from_minus_one_one_convention` converts).
# Chapter 7 puts all of this side by side with the learned methods.
#
# ## Summary
#
# * Regularisation (3.2) trades data fit for plausibility; TV favours flat
#   regions and sharp edges.
# * Gradient descent (3.3) with $\eta \le 1/(L + 8\lambda/\delta)$ decreases the objective
#   at every step; without a regulariser its iterates semi-converge.
# * Weights are tuned on a validation split; the test split is used once.
# * Our Tikhonov solver agrees with scikit-image's Wiener filter to rounding
#   error, an independent check of the operator and the solver.
#
# ## Exercises
#
# 1. Show that $\|\nabla x\|^2 \le 8\|x\|^2$ for the forward-difference gradient
#    (hint: $(a - b)^2 \le 2a^2 + 2b^2$). Why does the Lipschitz constant of
#    $\nabla R_\delta$ scale as $1/\delta$?
# 2. Rerun the semi-convergence experiment with `delta=1e-1`. What happens to the
#    step size, and to the best PSNR?
# 3. Tune the TV weight on the *test* split instead of the validation split and
#    compare the test PSNR with the honest number. Is the difference large?
#    Why is it still wrong to report it?
#
# ```{admonition} Solutions
# :class: dropdown
#
# 1. $\|\partial_1 x\|^2 = \sum (x_{i,j+1} - x_{i,j})^2 \le \sum 2x_{i,j+1}^2 + 2x_{i,j}^2 \le 4\|x\|^2$,
#    and the same for $\partial_2$, so $\|\nabla x\|^2 \le 8\|x\|^2$. The map
#    $p \mapsto p/\sqrt{|p|^2 + \delta^2}$ has Lipschitz constant $1/\delta$ (its derivative
#    at $p = 0$ is $I/\delta$), and $\nabla R_\delta = \nabla^\top \circ$ (that map) $\circ \nabla$,
#    so its constant is at most $8/\delta$.
# 2. The Lipschitz constant $L + 8\lambda/\delta$ drops, so the step grows and
#    convergence is faster; the smoother TV rounds edges a little more, and the
#    best weight moves. Compare the printed peaks.
# 3. The test-tuned number is at least as high as the honest one, usually by a
#    fraction of a dB here because the curve is flat near its maximum. It is
#    still wrong to report: it uses the answer to choose the method, so it is
#    not an estimate of performance on unseen data, and with many tuned
#    parameters the bias grows.
# ```

# %% [markdown]
# ## How strong is this TV? Smoothing, and the exact TV
#
# A baseline in a comparison must be the strongest version of itself. Two choices above were
# made without asking: the smoothing $\delta = 0.01$ and the smoothing itself. Below
# $|\nabla x| \approx \delta$ the smoothed TV is quadratic, $\approx |\nabla x|^2/(2\delta)$, above it
# linear as TV, so $\delta$ sets which gradients count as noise to be flattened and which as edges
# to be kept: it is a second regularisation parameter, and deserves tuning like $\lambda$. The
# limit $\delta \to 0$ is the exact TV of Rudin, Osher and Fatemi, which gradient descent cannot
# minimise (it is not differentiable) but a *proximal* method can. FISTA
# {cite:p}`beck2009fista` alternates a gradient step on the data term with the proximal map of TV,
#
# $$
# x^{k+1} = \operatorname{prox}_{\lambda\,\mathrm{TV}/L}\big(y^k - A^\top(Ay^k - d)/L\big), \qquad
# \operatorname{prox}_{\tau\,\mathrm{TV}}(v) = \arg\min_x \tfrac12\|x - v\|^2 + \tau\,\mathrm{TV}(x),
# $$
#
# with $y^k$ a momentum point. The proximal map has no closed form, but its dual has a simple
# one: $\mathrm{TV}(x) = \max_{|p_{ij}| \le 1} \langle x, -\operatorname{div} p\rangle$ (each pixel's pair
# $p_{ij} \in \mathbb{R}^2$ in the unit disc), so $\operatorname{prox}_{\tau\mathrm{TV}}(v) = v + \tau \operatorname{div} p^\star$
# with $p^\star$ minimising $\tfrac12\|v + \tau\operatorname{div} p\|^2$ over the discs: a smooth problem
# with a cheap projection, solved by projected gradient descent with step $1/(8\tau^2)$ (with
# momentum, the fast gradient projection of {cite:t}`beck2009tv`)
# ($\|\operatorname{div}\|^2 \le 8$). In a few lines:

# %%
from jfb_core.regularizers import divergence, tv_exact, tv_prox


def tv_prox_teaching(v, tau, iterations):
    """prox of tau * TV at v by projected gradient on the dual."""
    px, py = torch.zeros_like(v), torch.zeros_like(v)
    for _ in range(iterations):
        gx, gy = image_gradient(v + tau * divergence(px, py))
        px, py = px + gx / (8 * tau), py + gy / (8 * tau)
        scale = torch.sqrt(px**2 + py**2).clamp_min(1.0)  # project each pair onto the unit disc
        px, py = px / scale, py / scale
    return v + tau * divergence(px, py)


v = torch.rand(1, 3, 16, 16, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
mine = tv_prox_teaching(v, 0.05, 5000)
lib = tv_prox(v, 0.05, iterations=500, gap=True)  # the library adds Nesterov momentum
objective = lambda x: 0.5 * ((x - v) ** 2).sum() + 0.05 * tv_exact(x).sum()  # noqa: E731
diff, gap = float((mine - lib.x).abs().max()), float(lib.gap)
assert diff < 1e-10 and abs(gap) < 1e-10  # rounding level; the last digits vary with the machine
print(f"teaching version vs library: the same image to better than 1e-10; duality gap of the library's "
      f"answer below 1e-10 (objective {float(objective(lib.x)):.6f})")

# %% [markdown]
# The duality gap certifies the answer: no image has an objective lower than the printed one by
# more than the gap. `jfb_core.baselines.tv_fista` runs FISTA with this inner solver,
# warm-started from the previous step's dual field, and `python -m jfb_core evaluate` scores it
# as method `tv_exact`; `--tv-delta` tunes $\delta$ together with $\lambda$ on the validation images.
# The committed comparison, on the paper's CelebA test split at 128 × 128
# (`make tv128`; each file records its command):

# %%
tuned = {r["blur"]["name"]: r for r in (json.loads(f.read_text())
                                       for f in sorted(results_dir.glob("celeba-paper-test_*_tv-tuned.json")))}
fixed = {r["blur"]["name"]: r for r in (json.loads(f.read_text()) for f in files)}
if tuned:
    print(f"{'blur':>9} {'TV, delta = 0.01':>17} {'TV, lambda and delta tuned':>27} {'gain':>6}  images")
    at_edge = False
    for blur, r in tuned.items():
        t, f0 = r["methods"]["tv"], fixed[blur]["methods"]["tv"]
        n = r["test"]["n"]  # the tuned runs at 5x5 score the first 500 test images: compare on those
        lam, delta = t["weight"]
        lams, deltas = zip(*t["tuning"]["weights"])
        edge = "*" if lam in (min(lams), max(lams)) or delta in (min(deltas), max(deltas)) else ""
        at_edge = at_edge or bool(edge)
        fixed_n = np.asarray(f0["per_image"]["psnr"][:n])
        gain = np.mean(np.asarray(t["per_image"]["psnr"]) - fixed_n)
        print(f"{blur:>9} {fixed_n.mean():11.2f} dB ({f0['weight']:.0e}) {t['psnr_mean']:11.2f} dB "
              f"(lambda {lam:g}, delta {delta:g}){edge:1} {gain:+6.2f}  {n}")
    print("* at the edge of its tuning grid: a wider grid might raise TV further" if at_edge else
          "every (lambda, delta) chosen lies inside its tuning grid")
    ex = json.loads((results_dir / "celeba-paper-test_5x5_s1_tv-exact_64px.json").read_text())
    sm = json.loads((results_dir / "celeba-paper-test_5x5_s1_tv-tuned_64px.json").read_text())
    assert ex["test"]["ids"] == sm["test"]["ids"] and ex["noise_std"] == sm["noise_std"]  # same images, same noise
    e, tv_s = ex["methods"]["tv_exact"], sm["methods"]["tv"]
    lams, sol = e["tuning"]["weights"], e["solver"]
    assert min(lams) < e["weight"] < max(lams)  # the exact TV's weight lies inside its grid
    better = np.mean(np.asarray(e["per_image"]["psnr"]) > np.asarray(tv_s["per_image"]["psnr"]))
    print(f"\n5x5_s1 at 64x64, all {ex['test']['n']} test images, both tuned on the same 100 validation images:")
    print(f"  TV, smoothed (lambda, delta tuned)   {tv_s['psnr_mean']:6.2f} dB, (lambda, delta) {format_weight(tv_s['weight'])}")
    print(f"  TV, exact (FISTA to a duality gap)   {e['psnr_mean']:6.2f} dB, lambda {e['weight']:g} "
          f"(grid {lams[0]:g} to {lams[-1]:g})")
    print(f"  exact TV: largest duality gap {sol['max_relative_gap']:.1e} of the objective (target {sol['gap_tol']:g};\n"
          f"    {sol['images_at_cap']} images stopped at the {ex['settings']['tv_exact_max_iter']}-step cap); "
          f"better than the smoothed TV on {better:.0%} of the images")
    print(f"device: {ex['provenance']['environment']['device']}")

# %% [markdown]
# Two findings. The smoothing parameter matters as much as the weight: tuned on validation,
# $\delta$ settles at 0.05 to 0.1, five to ten times the default, and TV gains 0.14 to 0.50 dB (better
# on 69% to 97% of the images). And the exact TV is *not* the stronger baseline on faces: its penalty stays
# linear down to the smallest gradients, which flattens the gentle shading of skin into plateaus
# (the staircasing effect), and at setting B it scores 0.8 dB below the tuned smoothed TV on the
# same 2,000 images, with its weight inside its grid and each image solved to a certified duality
# gap (`baselines.tv_exact_gap`; `python -m jfb_core reproduce tv-exact`): the shortfall belongs to
# the model, not to the solver.
# The learned methods of chapters 6 and 7 are therefore measured against the tuned smoothed TV.
#
