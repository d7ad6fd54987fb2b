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
# # The forward model: blur, noise, and why the direct inverse fails
#
# Deblurring is an *inverse problem*: we observe a blurred, noisy image $d$ and
# want the clean image $x$ that produced it. This chapter builds the measurement
# model of the paper {cite:p}`liu2024jfbdeblur`, its eq. (3.1), piece by piece: the
# Gaussian blur $A$, its adjoint $A^\top$, the noise $\varepsilon$, and the
# spectrum of $A^\top A$. By the end you will be able to build $A$ and $A^\top$ for
# several boundary conditions and test that they are adjoint, compute the
# constants $L = \lambda_{\max}(A^\top A)$ and $\mu = \lambda_{\min}(A^\top A)$ that
# chapter 4's convergence theorem needs, and explain, with a picture and a
# formula, why $A^{-1}d$ is a terrible reconstruction.

# %%
# %matplotlib inline
import math

import matplotlib.pyplot as plt
import numpy as np
import torch
import torch.nn.functional as F

from jfb_core.config import BLURS, get_preset
from jfb_core.data import BUNDLED_PHOTOS, bundled_photo, measure
from jfb_core.metrics import psnr
from jfb_core.operators import GaussianBlur, blur_from_setting, gaussian_kernel2d, power_iteration

torch.manual_seed(0)
preset = get_preset()
print(f"preset: {preset.name}; noise std {preset.noise_std} on images in [0, 1]")


def show(images, titles, rows=1, size=2.6):
    """Show (1, 3, H, W) tensors side by side."""
    cols = math.ceil(len(images) / rows)
    fig, axes = plt.subplots(rows, cols, figsize=(size * cols, size * rows + 0.3), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, img, title in zip(axes.flat, images, titles):
        ax.imshow(img[0].permute(1, 2, 0).clamp(0, 1).numpy())
        ax.set_title(title, fontsize=9)
    fig.tight_layout()
    plt.show()


# %% [markdown]
# ## The measurement model
#
# The paper writes the measurement as
#
# $$
# d = A x + \varepsilon, \tag{3.1}
# $$
#
# where $x \in \mathbb{R}^n$ is the clean image ($n = 3 \cdot 128 \cdot 128 = 49152$
# pixel values for the paper's RGB images), $A$ is a blur and $\varepsilon$ is
# white Gaussian noise. Throughout the course images take values in $[0, 1]$ and
# the noise has standard deviation $0.01$ on that range, as in the paper's
# Section 5.1. (The paper's code worked in $[-1, 1]$, where the same noise has
# standard deviation $0.02$.)
#
# ## The blur kernel
#
# A Gaussian blur replaces every pixel by a weighted average of its neighbours,
# with weights from a sampled Gaussian $\psi(s, t) \propto \exp(-(s^2 + t^2)/(2\sigma^2))$
# on a square grid ($5 \times 5$ or $9 \times 9$ here), normalised to sum to one (so a constant image stays
# constant). The paper uses two settings, and the numbers it compares against in
# its Table 2 come from a third:

# %%
for key, b in BLURS.items():
    k = gaussian_kernel2d(b.kernel_size, b.sigma)
    print(f"{key:>9}: {b.kernel_size}x{b.kernel_size}, sigma = {b.sigma:.3f}, "
          f"centre weight {k.max():.3f}, corner weight {k[0, 0]:.4f}  -- {b.description}")

fig, axes = plt.subplots(1, 3, figsize=(8.5, 2.8))
for ax, (key, b) in zip(axes, BLURS.items()):
    k = gaussian_kernel2d(b.kernel_size, b.sigma)
    im = ax.imshow(k.numpy(), cmap="viridis", vmin=0)
    ax.set_title(f"{key}", fontsize=9)
    ax.set_xticks([]); ax.set_yticks([])
    fig.colorbar(im, ax=ax, fraction=0.046)
fig.suptitle("Blur kernels (weights sum to 1)", fontsize=10)
fig.tight_layout()
plt.show()

# %% [markdown]
# The last kernel, $\sigma = 5$ on a $5 \times 5$ grid, is almost flat: a box
# filter. Its corner weight is nearly its centre weight. Keep the three apart:
# a PSNR measured with one blur says nothing about another.
#
# ## Applying $A$: a teaching version
#
# On an image of any size, $A x$ is the 2-D convolution of each colour
# channel with the kernel. The output has the input's size, so near the border
# the kernel reaches outside the image and we must say what is there: the
# *boundary condition* or *padding*. With zero padding the image is black
# outside its frame. Here is $A$ in three lines of PyTorch:

# %%
def blur_teaching(x: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """Zero-padded 'same' convolution of every channel of x (B, C, H, W) with kernel (k, k)."""
    c, k = x.shape[1], kernel.shape[-1]
    weight = kernel.to(x.dtype).expand(c, 1, k, k)  # one copy of the kernel per channel
    return F.conv2d(x, weight, padding=k // 2, groups=c)


x = bundled_photo("astronaut", 128)  # the test-split portrait, 128x128 like the paper's images
A = blur_from_setting("5x5_s1", padding="zeros")
ours = blur_teaching(x.double(), gaussian_kernel2d(5, 1.0))
print(A)
print(f"library vs teaching version: max difference {(A(x.double()) - ours).abs().max():.1e}")

# %% [markdown]
# The library's `GaussianBlur` (in `jfb_core.operators`) does the same with two
# 1-D convolutions (the Gaussian is *separable*: $\psi = \psi_1 \psi_1^\top$), which costs
# $2 \cdot 9 = 18$ instead of $9^2 = 81$ multiplications per pixel for a $9 \times 9$ kernel, and it offers three paddings:
# `"zeros"`, `"circular"` (the image repeats periodically) and `"reflect"` (the
# image is mirrored at its edges).

# %% [markdown]
# ## The adjoint $A^\top$
#
# Every method in this course needs $A^\top$: the gradient of
# $\tfrac12\|Ax - d\|^2$ is $A^\top(Ax - d)$. The adjoint is defined by
#
# $$
# \langle A x, y \rangle = \langle x, A^\top y \rangle \quad \text{for all } x, y .
# $$
#
# For a convolution, $A^\top$ is the *transposed convolution* (correlation with the
# kernel, scattering instead of gathering) followed by the adjoint of the padding:
# with zero padding, the adjoint just crops; with circular padding, the values
# that fell off one side are added back on the other; with reflection, they are
# folded back onto the pixels they were mirrored from. A wrong adjoint is a
# silent bug: gradient descent still runs, it just does not minimise what you
# think. So we test the definition with random $x$ and $y$ in double precision:

# %%
g = torch.Generator().manual_seed(1)
xr = torch.randn(2, 3, 37, 41, generator=g, dtype=torch.float64)
yr = torch.randn(2, 3, 37, 41, generator=g, dtype=torch.float64)
print(f"{'padding':>9} {'kernel':>7} {'<Ax,y>':>14} {'<x,A^T y>':>14} {'rel. gap':>9}")
for padding in ("zeros", "circular", "reflect"):
    for key in ("5x5_s1", "9x9_var5"):
        Ap = blur_from_setting(key, padding=padding)
        lhs, rhs = float((Ap(xr) * yr).sum()), float((xr * Ap.adjoint(yr)).sum())
        gap = abs(lhs - rhs) / abs(lhs)  # rounding level; its last digits vary with the processor
        assert gap < 1e-14
        print(f"{padding:>9} {key:>7} {lhs:14.8f} {rhs:14.8f} {'< 1e-14':>9}")

# %% [markdown]
# The gaps are at the level of double-precision rounding ($10^{-16}$). The test
# suite checks the same identity for every odd kernel size and padding, checks
# $A^\top$ against the transpose of the dense matrix of $A$ and against PyTorch's
# autograd, and checks the circular blur against an FFT implementation.
#
# ## Measurements
#
# Now the whole of eq. (3.1): blur, then add noise. The noise is drawn from a
# seeded generator, so every chapter and test sees the same $d$.

# %%
x = bundled_photo("astronaut", 128)
images, titles = [x], ["ground truth x"]
for key in ("5x5_s1", "9x9_var5", "5x5_s5"):
    Ak = blur_from_setting(key)
    d = measure(Ak, x, preset.noise_std, seed=0)
    images.append(d)
    titles.append(f"d, {key}: {psnr(d, x):.2f} dB")
show(images, titles)

# %% [markdown]
# PSNR (peak signal-to-noise ratio) is $10 \log_{10}(1 / \mathrm{MSE})$ for images in
# $[0, 1]$; higher is better, and every $6$ dB halves the root-mean-square error.
# Notice the dark frame of the zero-padded blur: near the border, part of the
# kernel's weight falls on the black outside.
#
# ## The spectrum of $A^\top A$
#
# How hard is it to undo $A$? The answer lies in the eigenvalues of $A^\top A$.
# With circular padding, $A$ is diagonalised by the 2-D discrete Fourier
# transform: $A x = \mathcal{F}^{-1}(\hat\psi \odot \mathcal{F} x)$, where $\hat\psi$ (the
# *transfer function*) is the DFT of the kernel. The eigenvalues of $A^\top A$
# are the numbers $|\hat\psi(\omega)|^2$, one per frequency $\omega$. A Gaussian's
# Fourier transform is again a Gaussian, so high frequencies are multiplied by
# nearly zero.

# %%
fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
for key, color in zip(("5x5_s1", "9x9_var5", "5x5_s5"), ("C0", "C1", "C2")):
    Ac = blur_from_setting(key, padding="circular")
    h = Ac.transfer_function(128, 128)
    freqs = np.fft.fftfreq(128)
    axes[0].semilogy(np.fft.fftshift(freqs), np.fft.fftshift(h[0].abs().numpy()) ** 2, color=color, label=key)
    ev = torch.sort((h**2).flatten(), descending=True).values
    axes[1].loglog(np.arange(1, ev.numel() + 1), ev.clamp_min(1e-30).numpy(), color=color, label=key)
axes[0].set_xlabel("horizontal frequency (cycles / pixel), vertical frequency 0")
axes[0].set_ylabel(r"$|\hat\psi(\omega)|^2$")
axes[0].set_title("Transfer function of the circular blur", fontsize=10)
axes[1].set_xlabel("index (sorted)")
axes[1].set_ylabel(r"eigenvalue of $A^\top A$")
axes[1].set_title(r"All $128^2$ eigenvalues of $A^\top A$ (one channel)", fontsize=10)
for ax in axes:
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
fig.tight_layout()
plt.show()

# %% [markdown]
# For the other paddings $A$ is not diagonalised by the FFT, but it is still
# separable: on one channel it is the Kronecker product $A = A_{\text{rows}} \otimes
# A_{\text{cols}}$ of two 1-D blurs, so the singular values of $A$ are the products of
# those of two small dense matrices. That gives $L$ and $\mu$ *exactly*, for any
# image size, in milliseconds. The library also offers matrix-free power
# iteration (for $L$) and inverse iteration (for $\mu$), which work for any
# operator; here they agree with the exact value of $L$:

# %%
print(f"{'setting':>9} {'padding':>9} {'size':>5} {'L':>10} {'mu':>10} {'L/mu':>10}")
for key in ("5x5_s1", "9x9_var5", "5x5_s5"):
    for padding in ("zeros", "circular"):
        for size in (32, 128):
            s = blur_from_setting(key, padding=padding).eigenvalue_bounds(size, size)
            print(f"{key:>9} {padding:>9} {size:>5} {s.L:10.6f} {s.mu:10.2e} {s.condition:10.2e}")

A0 = blur_from_setting("5x5_s1", padding="zeros", channels=1)
L_power = power_iteration(A0.normal, (1, 1, 32, 32), iters=500)
print(f"\npower iteration, 5x5_s1, zeros, 32x32: L = {L_power:.6f} (exact {A0.eigenvalue_bounds(32, 32).L:.6f})")

# %% [markdown]
# Three facts to carry forward:
#
# * $L \le 1$: a normalised, non-negative kernel never amplifies an image. With
#   circular padding $L = 1$ exactly (a constant image passes unchanged); zero
#   padding loses a little at the border, so $L$ is slightly below 1.
# * $\mu$ is tiny. For the $5 \times 5$, $\sigma = 1$ blur it is about $3 \times 10^{-7}$,
#   a condition number $L/\mu$ of about $3 \times 10^{6}$; for the wider blurs it is
#   between about $6 \times 10^{-8}$ and $7 \times 10^{-17}$, and the $9 \times 9$ blur at $128 \times 128$ is numerically
#   singular (its $\mu$ is at the level of double-precision rounding, so the
#   printed value means "zero", not a precise number).
# * Chapter 4's Theorem 3.1 needs exactly these two numbers: its step-size bound
#   is $\eta < 1/(L+1)$ and its contraction factor is $1 - \eta(1 + \mu) + \eta\epsilon$, with $\eta$ the step size (chapter 2) and $\epsilon$ the Lipschitz bound of the learned part (chapter 4), not the noise $\varepsilon$.
#   With $\mu \approx 0$, the contraction must come from the learned part.

# %% [markdown]
# ## Why $A^{-1} d$ fails
#
# The paper's Section 3.2 notes that applying $A^{-1}$ to eq. (3.1) gives
# $A^{-1} d = x + A^{-1}\varepsilon$. In the Fourier domain (circular padding) the
# error is
#
# $$
# \widehat{A^{-1}\varepsilon}(\omega) = \frac{\hat\varepsilon(\omega)}{\hat\psi(\omega)} ,
# $$
#
# and white noise has the same expected magnitude $|\hat\varepsilon(\omega)|$ at every
# frequency. Where $|\hat\psi(\omega)|$ is $10^{-2}$ the noise is multiplied by 100; where
# it is $10^{-6}$, by a million. The signal, in contrast, has little energy at high
# frequencies. Let us see it, first without noise (the inverse is then exact),
# then with the paper's noise of standard deviation $0.01$:

# %%
from jfb_core.baselines import direct_inverse

Ac = blur_from_setting("5x5_s1", padding="circular")
clean = Ac(x)
noisy = measure(Ac, x, preset.noise_std, seed=0)
inv_clean = direct_inverse(Ac, clean.double()).float()
inv_noisy = direct_inverse(Ac, noisy.double()).float()
print(f"A^-1 (A x):       PSNR {psnr(inv_clean, x):6.2f} dB  (exact up to rounding)")
print(f"A^-1 (A x + eps): PSNR {psnr(inv_noisy, x):6.2f} dB  (the measurement itself: {psnr(noisy, x):.2f} dB)")
print(f"largest |pixel| of A^-1 d: {inv_noisy.abs().max():.1f}  (images live in [0, 1])")
show([x, noisy, inv_clean, inv_noisy],
     ["x", "d = Ax + eps", "A^-1 (Ax), no noise", "A^-1 d (clipped to [0,1])"])

# %% [markdown]
# The spectrum explains the picture. Below, the magnitude of the DFT of the
# noise, before and after division by $\hat\psi$, averaged over rings of equal
# frequency, beside the spectrum of the clean image:

# %%
def radial_profile(img_fft: torch.Tensor, bins: int = 40):
    """Mean |F| over rings of constant |omega| (omega in cycles/pixel, 0..0.71)."""
    hgt, wid = img_fft.shape[-2:]
    fy = torch.fft.fftfreq(hgt).view(-1, 1)
    fx = torch.fft.fftfreq(wid).view(1, -1)
    radius = torch.sqrt(fy**2 + fx**2).flatten()
    mag = img_fft.abs().mean(dim=tuple(range(img_fft.dim() - 2))).flatten()
    edges = torch.linspace(0, float(radius.max()) + 1e-9, bins + 1)
    idx = (torch.bucketize(radius, edges, right=True) - 1).clamp(0, bins - 1)
    prof = torch.zeros(bins).scatter_add_(0, idx, mag.float()) / torch.bincount(idx, minlength=bins).clamp_min(1)
    return (0.5 * (edges[1:] + edges[:-1])).numpy(), prof.numpy()


eps = (noisy - clean).double()
h = Ac.transfer_function(128, 128)
fig, ax = plt.subplots(figsize=(6.5, 3.6))
for data, label in ((torch.fft.fft2(x.double()), "clean image x"),
                    (torch.fft.fft2(eps), r"noise $\varepsilon$"),
                    (torch.fft.fft2(eps) / h, r"$A^{-1}\varepsilon$ (noise after inversion)")):
    r, p = radial_profile(data)
    ax.semilogy(r, p, label=label)
ax.set_xlabel(r"frequency $|\omega|$ (cycles / pixel)")
ax.set_ylabel("mean |DFT coefficient|")
ax.set_title("Inversion amplifies the high-frequency noise", fontsize=10)
ax.legend(fontsize=8)
ax.grid(alpha=0.3)
fig.tight_layout()
plt.show()

# %% [markdown]
# Above a frequency of about $0.3$ cycles per pixel the inverted noise dominates
# the clean image by orders of magnitude: the reconstruction is all noise.
#
# With zero padding there is no FFT formula, and the library computes the least
# squares solution by conjugate gradients (CG) on the normal equations
# $A^\top A x = A^\top d$. CG recovers the large eigenvalues' components first
# and the tiny ones last, so its early iterates are smooth and its late ones
# noisy: the PSNR first rises, then collapses. This *semi-convergence* means the
# iteration count acts as a regulariser.

# %%
A = blur_from_setting("5x5_s1", padding="zeros")
d = measure(A, x, preset.noise_std, seed=0)
iters = [1, 2, 3, 5, 8, 12, 20, 30, 50, 80, 120, 200]
scores = [float(psnr(direct_inverse(A, d.double(), max_iter=k, tol=0.0).float(), x)) for k in iters]
best = iters[int(np.argmax(scores))]
fig, ax = plt.subplots(figsize=(6, 3.4))
ax.semilogx(iters, scores, "o-")
ax.axhline(float(psnr(d, x)), color="gray", ls="--", label="measurement d")
ax.set_xlabel("CG iterations on the normal equations")
ax.set_ylabel("PSNR (dB)")
ax.set_title("Semi-convergence of the unregularised inverse (5x5, sigma=1, zeros)", fontsize=10)
ax.legend(fontsize=8)
ax.grid(alpha=0.3)
fig.tight_layout()
plt.show()
print(f"best PSNR {max(scores):.2f} dB after {best} iterations; {scores[-1]:.2f} dB after {iters[-1]}")

# %% [markdown]
# Stopping early is a crude regulariser: the best iteration depends on the
# image and the noise, which we do not know. Chapter 2 replaces it by an
# explicit one, the total variation, and chapter 4 learns the regulariser from
# data.
#
# ## Summary
#
# * The measurement is $d = Ax + \varepsilon$ (3.1), with $A$ a normalised Gaussian
#   blur and $\varepsilon$ white noise of standard deviation $0.01$ on $[0, 1]$.
# * The library's `GaussianBlur` has an explicit, tested adjoint for zero,
#   circular and reflective boundaries.
# * $L = \lambda_{\max}(A^\top A) \le 1$ and $\mu = \lambda_{\min}(A^\top A) \approx 0$: the
#   problem is severely ill-conditioned, and $A^{-1}d$ drowns the image in
#   amplified high-frequency noise.
#
# ## Exercises
#
# 1. Show that for a symmetric kernel and zero padding, $A$ is a symmetric matrix,
#    so $A^\top = A$. Is that still true for reflective padding? Check numerically
#    with `blur_from_setting("5x5_s1", padding="reflect")`.
# 2. Without computing, predict whether $\mu$ grows or shrinks when the image grows
#    from $32 \times 32$ to $128 \times 128$, for a fixed kernel. Then check with
#    `eigenvalue_bounds`.
# 3. The bundled photographs' credits are in `jfb_core.data.BUNDLED_PHOTOS`. Which
#    ones are in the test split, and why is it important that no photograph is
#    cut into crops for two splits?
#
# ```{admonition} Solutions
# :class: dropdown
#
# 1. With zero padding, $(Ax)_i = \sum_j \psi_{i-j} x_j$, so $A_{ij} = \psi_{i-j}$; a symmetric
#    kernel has $\psi_{i-j} = \psi_{j-i}$, hence $A_{ij} = A_{ji}$. With reflection, pixels
#    near the border receive extra weight from their mirror images, and the
#    matrix is no longer symmetric: `(A(x) * y).sum()` differs from `(A(y) * x).sum()`
#    for random `x, y` (try it), while the adjoint identity with `A.adjoint` still holds.
# 2. It shrinks or stays the same: a larger image samples the transfer function
#    on a finer frequency grid, which can only get closer to its minimum. For the
#    $5 \times 5$, $\sigma = 1$ blur with circular padding the minimum is at
#    $\omega = 1/2$, which both grids contain, so $\mu$ stays at $2.89 \times 10^{-7}$;
#    the $9 \times 9$ blur's transfer function nearly vanishes *between* grid
#    points, and its $\mu$ drops from $2 \times 10^{-12}$ to $7 \times 10^{-17}$. With zero
#    padding $\mu$ decreases slowly with the size ($3.03$ to $2.90 \times 10^{-7}$).
# 3. The two portraits, `astronaut` and `grace_hopper`. Neighbouring crops of one
#    photograph overlap and share content; if some went to training and others to
#    testing, the test score would measure memorisation, not generalisation.
# ```
#
# ## Image credits
#
# The photographs used in every chapter ship inside scikit-image, scikit-learn and
# matplotlib:

# %%
from IPython.display import Markdown

rows = [f"| `{p.name}` | {p.split} | {p.credit} | {p.licence} |" for p in BUNDLED_PHOTOS]
Markdown("\n".join(["| image | split | credit | licence |", "|---|---|---|---|", *rows]))
