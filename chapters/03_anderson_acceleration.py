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
# # Fixed points and Anderson acceleration
#
# An implicit network's output is a *fixed point*: the $x^\star$ with
# $T_\Theta(x^\star) = x^\star$. Every forward pass of chapter 4's network, every
# training step of chapter 6, starts by finding one, so the fixed-point solver
# is the engine of the whole course. This chapter follows Section 3.3 of the
# paper {cite:p}`liu2024jfbdeblur`. You will learn why plain fixed-point
# iteration converges, and why slowly; how Anderson acceleration (the paper's
# Algorithm 3.1, {cite:p}`walker2011anderson`) reuses past iterates to converge
# many times faster; how its small least-squares problem is solved safely; and
# how to tell, per image, whether a solve has actually converged: every solve
# here reports, per image, its residual and whether it met the tolerance.

# %%
# %matplotlib inline
import json

import matplotlib.pyplot as plt
import numpy as np
import torch

from jfb_core.config import get_preset
from jfb_core.solvers import anderson, fixed_point, relative_residual

torch.manual_seed(0)
preset = get_preset()
print(f"preset: {preset.name}; Anderson memory m = {preset.anderson_m}, tolerance {preset.tol}, "
      f"at most {preset.max_iter} iterations")

# %% [markdown]
# ## Fixed-point iteration
#
# To solve $z = f(z)$, the simplest method iterates $z^{k+1} = f(z^k)$. If $f$ is a
# *contraction*, $\|f(z) - f(z')\| \le \gamma\|z - z'\|$ with $\gamma < 1$, Banach's
# fixed-point theorem guarantees a unique fixed point $z^\star$ and
#
# $$
# \|z^k - z^\star\| \le \gamma^k \|z^0 - z^\star\| ,
# $$
#
# *linear* convergence: each iteration gains the same number of digits,
# $-\log_{10}\gamma$. With $\gamma = 0.99$ that is 0.0044 digits per iteration: about 1,400
# iterations to gain six digits.
#
# **When to stop.** We never know $z^\star$, but we can measure how far $z$ is from
# being a fixed point. The library uses the *relative residual*
#
# $$
# \operatorname{res}(z) = \frac{\|f(z) - z\|}{\|f(z)\|},
# $$
#
# per sample of a batch, and declares a sample converged when $\operatorname{res}(z) \le$ `tol`.
# For a contraction this also bounds the error:
# $\|z - z^\star\| \le \|f(z) - z\|/(1 - \gamma)$, so a small residual with $\gamma$ close
# to 1 can still hide a sizeable error.
#
# Our first test problem is linear, $f(z) = Mz + b$ with $M$ symmetric, eigenvalues
# spread over $[0, 0.99]$, so $\gamma = 0.99$, and a known solution
# $z^\star = (I - M)^{-1} b$ from a dense solve.

# %%
n, batch = 100, 4
g = torch.Generator().manual_seed(0)
Q, _ = torch.linalg.qr(torch.randn(n, n, generator=g, dtype=torch.float64))
M = Q @ torch.diag(torch.linspace(0.0, 0.99, n, dtype=torch.float64)) @ Q.T
b = torch.randn(batch, n, generator=g, dtype=torch.float64)
z_star = torch.linalg.solve(torch.eye(n, dtype=torch.float64) - M, b.T).T


def f_linear(z):
    return z @ M.T + b


z0 = torch.zeros(batch, n, dtype=torch.float64)
plain = fixed_point(f_linear, z0, tol=1e-8, max_iter=5000)
err = (plain.z - z_star).norm(dim=1) / z_star.norm(dim=1)
print(f"plain iteration: {plain.nfe} evaluations, converged {plain.converged.tolist()}, "
      f"relative error {err.max():.1e}")

# %% [markdown]
# ## Anderson's idea
#
# Plain iteration throws away everything but the last iterate. Anderson
# acceleration keeps the last few iterates $x^{k-m_k}, \dots, x^k$ and their residuals
# $g(x^i) = f(x^i) - x^i$, and looks for the *combination* of them whose residual is
# smallest. The paper states it as
#
# :::{admonition} Algorithm 3.1 (Anderson acceleration)
# For $k = 1, 2, \dots$: set $m_k = \min(m, k)$ and $G_k = [g(x^{k-m_k}) \dots g(x^k)]$; find
#
# $$
# \alpha^k = \arg\min_{\alpha \in \mathbb{R}^{m_k+1}} \|G_k\alpha\|_2^2 \quad \text{s.t.} \quad \alpha_0 + \dots + \alpha_{m_k} = 1 ;
# $$
#
# update $x^{k+1} = \sum_{i=0}^{m_k} \alpha_i^k f(x^{k-m_k+i})$.
# :::
#
# If $f$ were affine, $f(x) = Mx + b$, then $\sum_i\alpha_i f(x^i) = f(\sum_i \alpha_i x^i)$
# whenever $\sum_i\alpha_i = 1$, and $G_k\alpha$ is exactly the residual of the combined
# point $\sum_i\alpha_i x^i$. Anderson therefore picks the best point in the affine span
# of its history, a Krylov-like idea: for linear problems it is closely related
# to GMRES.
#
# **Solving the small problem.** The constraint is handled with a Lagrange
# multiplier $\nu$. Setting the gradient of the Lagrangian
# $\tfrac12\alpha^\top (G^\top G + \zeta s I)\alpha + \nu(\mathbf 1^\top\alpha - 1)$ to zero,
# $(G^\top G + \zeta s I)\alpha + \nu\mathbf 1 = 0$, and adding the constraint
# $\mathbf 1^\top\alpha = 1$ gives the *bordered* (KKT) system
#
# $$
# \begin{pmatrix} 0 & \mathbf 1^\top \\ \mathbf 1 & G^\top G + \zeta s I \end{pmatrix}
# \begin{pmatrix} \nu \\ \alpha \end{pmatrix} =
# \begin{pmatrix} 1 \\ 0 \end{pmatrix},
# $$
#
# a $(m_k + 2) \times (m_k + 2)$ system per sample, whatever the image size. The
# term $\zeta s I$ is a small ridge ($\zeta = 0$ is Algorithm 3.1 exactly). Near
# convergence the columns of $G$ become nearly parallel and $G^\top G$ nearly
# singular, so the ridge is scaled by $s = \max_i \|g(x^i)\|^2$ so that
# $\zeta$ (`lam` in the code) is relative to the size of the residuals (an absolute $\zeta$ would
# dominate once the residuals are small and quietly switch the acceleration
# off). The paper's code uses such an absolute ridge: its `anderson` adds
# `lam*torch.eye(n)` with `lam=1e-4` to $G^\top G$ (`support/models.py` in
# `lliu58b/Jacobian-free-Backprop-Implicit-Networks`, commit `975ad38`, lines 75 and 98).
# Walker and Ni {cite:p}`walker2011anderson` solve the same least-squares problem in an
# unconstrained form, with differences of residuals and a QR factorisation updated one
# column at a time, which avoids squaring the condition number of $G$; for memories of
# $m \le 10$ the small bordered system in double precision is simpler and, with the
# ridge, accurate enough. The system is solved in double precision; if it still fails, the
# library takes a plain step $f(x^k)$ for that sample and counts it as a
# *fallback*. A *damping* $\beta \in (0, 1]$ gives
# $x^{k+1} = \beta\sum_i\alpha_i f(x^i) + (1-\beta)\sum_i\alpha_i x^i$; $\beta = 1$ is the
# paper's update.
#
# Here is a teaching version for a single vector, written to match the library
# line by line:

# %%
def anderson_teaching(f, x0, m=5, lam=1e-4, beta=1.0, iterations=20):
    """Algorithm 3.1 for one vector x0 of shape (n,). Returns the list of iterates."""
    xs, fs = [x0], [f(x0)]
    for k in range(1, iterations + 1):
        mk = min(m + 1, k)  # the newest iterate and up to m before it: m_k + 1 columns
        X, F = torch.stack(xs[-mk:], 1), torch.stack(fs[-mk:], 1)  # (n, mk)
        G = F - X
        gram = G.T @ G
        kkt = torch.zeros(mk + 1, mk + 1, dtype=torch.float64)
        kkt[0, 1:] = kkt[1:, 0] = 1.0
        kkt[1:, 1:] = gram + lam * gram.diagonal().max() * torch.eye(mk, dtype=torch.float64)
        rhs = torch.zeros(mk + 1, dtype=torch.float64)
        rhs[0] = 1.0
        alpha = torch.linalg.solve(kkt, rhs)[1:]
        x_new = beta * F @ alpha + (1 - beta) * X @ alpha
        xs.append(x_new)
        fs.append(f(x_new))
    return xs


def f_first(v):  # the problem of the first sample only, for a single vector v of shape (n,)
    return M @ v + b[0]


mine = anderson_teaching(f_first, z0[0], iterations=20)
lib = anderson(lambda z: z @ M.T + b[:1], z0[:1], tol=1e-300, max_iter=20)  # tolerance never met: 20 steps
# the library returns the lowest-residual iterate; compare it with the teaching run's
best = min(mine, key=lambda v: float((f_first(v) - v).norm() / f_first(v).norm()))
diff = float((best - lib.z[0]).abs().max())  # rounding error, whose last digits vary with the machine
assert diff < 1e-10
print("teaching vs library after 20 steps: the same iterate to better than 1e-10")

# %% [markdown]
# ## Convergence: residual against function evaluations
#
# The fair unit of cost is the number of evaluations of $f$ (for DE-GRAD each is
# a pass through a 17-layer network). Anderson's extra work per iteration, a
# $(m+2)\times(m+2)$ solve and a few inner products, grows only linearly with the image;
# what it costs against a cheap map is measured at the end of the chapter.

# %%
acc = anderson(f_linear, z0, m=5, tol=1e-8, max_iter=5000)
err_acc = (acc.z - z_star).norm(dim=1) / z_star.norm(dim=1)
print(f"Anderson (m=5):  {acc.nfe} evaluations, converged {acc.converged.tolist()}, "
      f"relative error {err_acc.max():.1e}, fallbacks {acc.fallbacks}")
print(f"evaluations saved: {plain.nfe / acc.nfe:.1f}x")

fig, ax = plt.subplots(figsize=(6.5, 3.6))
for r, label in ((plain, "fixed-point iteration"), (acc, "Anderson, m = 5")):
    worst = r.history.max(dim=1).values
    ax.semilogy(np.arange(1, len(worst) + 1), worst, label=label)
ax.axhline(1e-8, color="gray", ls=":", label="tolerance")
ax.set_xlabel("function evaluations")
ax.set_ylabel("relative residual (worst sample)")
ax.set_xscale("log")
ax.set_title(r"Linear contraction, $\gamma = 0.99$, n = 100", fontsize=10)
ax.legend(fontsize=8)
ax.grid(alpha=0.3)
fig.tight_layout()
plt.show()

# %% [markdown]
# ### A map from this course: TV gradient descent
#
# Chapter 2's iteration (3.3) is itself a fixed-point iteration of
# $T(z) = z - \eta(A^\top(Az - d) + \lambda\nabla R_\delta(z))$, whose fixed points are the
# minimisers of (3.2). It has exactly the shape of the DE-GRAD map of chapter 4,
# with TV in place of a learned regulariser. Its contraction factor is
# $1 - \eta\,\cdot$ (smallest curvature of the objective), very close to 1
# because $\mu \approx 0$: a hard case for plain iteration.

# %% tags=["nbval-ignore-output"]
# The evaluation counts move by a few between processors (the map runs in float32); the notebook
# check compares the claims asserted at the end of the cell, not the printout.
from jfb_core.bench import tv_fixed_point_map

T_tv, z0_tv = tv_fixed_point_map(preset, size=preset.image_size, batch=4, device="cpu")
z0_tv = z0_tv.double()
T64 = lambda z: T_tv(z.float()).double()  # noqa: E731  the map runs in float32, the solver in float64
runs_tv = {
    "fixed-point iteration": fixed_point(T64, z0_tv, tol=1e-6, max_iter=3000),
    **{f"Anderson, m = {m}": anderson(T64, z0_tv, m=m, tol=1e-6, max_iter=3000) for m in (1, 2, 5, 10)},
}
fig, ax = plt.subplots(figsize=(6.5, 3.6))
for name, r in runs_tv.items():
    worst = r.history.max(dim=1).values
    ax.semilogy(np.arange(1, len(worst) + 1), worst, label=name)
    to_paper_tol = int(np.argmax(worst.numpy() <= preset.tol)) + 1
    print(f"{name:>22}: {to_paper_tol:4d} evaluations to {preset.tol:g}, {r.nfe:5d} to 1e-6, "
          f"converged {r.converged_fraction:.2f}, fallbacks {r.fallbacks}")
ax.axhline(preset.tol, color="gray", ls=":", label=f"paper's tolerance {preset.tol:g}")
ax.set_xlabel("function evaluations")
ax.set_ylabel("relative residual (worst sample)")
ax.set_xscale("log")
ax.set_title(f"TV gradient-descent map, {preset.image_size}x{preset.image_size} crops, {preset.blur}", fontsize=10)
ax.legend(fontsize=8)
ax.grid(alpha=0.3)
fig.tight_layout()
plt.show()
evals = {name: (int(np.argmax(r.history.max(dim=1).values.numpy() <= preset.tol)) + 1, r.nfe) for name, r in runs_tv.items()}
assert all(r.converged_fraction == 1.0 for r in runs_tv.values())
plain, aa5 = evals["fixed-point iteration"], evals["Anderson, m = 5"]
assert plain[0] > 4 * aa5[0] and plain[1] > 20 * aa5[1]  # about five at 1e-3, more than twenty at 1e-6
assert evals["Anderson, m = 1"][1] < plain[1] / 5  # m = 1 already helps a lot

# %% [markdown]
# Two lessons. First, the gain grows with the accuracy asked for: at the
# paper's tolerance of $10^{-3}$ on the *relative* residual (a loose one) Anderson
# saves a factor of about five, at $10^{-6}$ more than twenty. Second, $m = 1$
# (one past iterate besides the current one) already helps a lot, and a memory
# longer than about 5 gives diminishing returns.
#
# ## The effect of $\zeta$ and $\beta$
#
# On the linear problem:

# %%
print(f"{'zeta':>8} {'beta':>5} {'evals to 1e-8':>14} {'fallbacks':>9}")
for lam in (0.0, 1e-8, 1e-4, 1e-2, 1e-1, 1.0):
    for beta in (1.0, 0.5):
        r = anderson(f_linear, z0, m=5, lam=lam, beta=beta, tol=1e-8, max_iter=5000 if lam < 1 else 20000)
        print(f"{lam:8.0e} {beta:5.1f} {r.nfe:14d} {r.fallbacks:9d}")

# %% [markdown]
# Without a ridge ($\zeta = 0$, or a negligible $10^{-8}$) Anderson needs about twice
# as many evaluations as with the small relative ridge $10^{-4}$: near convergence
# the nearly parallel residual columns make the unregularised weights $\alpha$
# erratic. A large ridge makes $\alpha$ close to uniform weights, a smoothed plain
# iteration, and slows convergence to a crawl. Damping ($\beta = 0.5$) halves the
# step along the residual $g(x)$ and costs a few iterations on this well-behaved problem; it can
# rescue maps that oscillate.
#
# ## When Anderson fails, and what the safeguards do
#
# A map without a fixed point cannot be solved by any method. The solver must
# then say so, per sample, and return finite numbers, never crash and never
# claim success. Below, sample 0 is a contraction and sample 1 rotates by 90° on
# the unit circle (no fixed point: its residual is at least 1 everywhere):

# %%
def mixed(z):
    contraction = 0.5 * z[:1] + 1.0
    rot = torch.stack([-z[1:, 1], z[1:, 0]], dim=1)
    return torch.cat([contraction, rot / rot.norm(dim=1, keepdim=True)])


r = anderson(mixed, torch.tensor([[0.3, -0.2], [1.0, 0.0]], dtype=torch.float64), tol=1e-8, max_iter=50)
print(f"converged per sample: {r.converged.tolist()}")
print(f"best residual per sample: {[f'{v:.1e}' for v in r.residual.tolist()]}")
print(f"iterations per sample: {r.iterations.tolist()}, all outputs finite: {bool(torch.isfinite(r.z).all())}")

# %% [markdown]
# Sample 0 converged in a handful of iterations and then stopped changing;
# sample 1 ran to the iteration limit and is reported as not converged, with
# its best residual. Chapter 4 uses exactly these flags to report what fraction
# of a batch reached its fixed point.
#
# The second safeguard concerns the least-squares solve. Without the ridge
# ($\zeta = 0$), a map whose residuals are all parallel, such as a translation
# $f(z) = z + c$, makes the bordered system singular; the library then takes a
# plain step instead of producing NaNs:

# %%
shift = torch.tensor([[1.0, 2.0]], dtype=torch.float64)
r = anderson(lambda z: z + shift, torch.zeros(1, 2, dtype=torch.float64), m=3, lam=0.0, tol=1e-12, max_iter=6)
print(f"fallbacks to a plain step: {r.fallbacks}; output finite: {bool(torch.isfinite(r.z).all())}; "
      f"converged: {bool(r.converged.all())}")

# %% [markdown]
# ## What does the acceleration cost?
#
# `python -m jfb_core bench solvers` times both solvers to the preset's tolerance
# on the TV map at the preset's largest benchmark size and batch, and the cost of
# one map evaluation, then derives the overhead of Anderson's least-squares step.
# The committed result for this preset (its JSON records the machine and versions):

# %%
from jfb_core.provenance import find_results_dir

path = find_results_dir() / "bench" / f"solvers_{preset.name}_cpu.json"
if path.exists():
    bench = json.loads(path.read_text())
    env = bench["provenance"]["environment"]
    print(f"{bench['map']}\nbatch {bench['batch']} x 3 x {bench['size']} x {bench['size']}, tol {bench['tol']}, "
          f"device {env['device']}, torch {env['torch']}")
    print(f"one evaluation: {1000 * bench['seconds_per_evaluation']:.1f} ms")
    for name, s in bench["solvers"].items():
        print(f"{name:>12}: {s['nfe']:4d} evaluations, median {s['seconds_median']:.3f} s, converged {s['converged_fraction']:.2f}")
    print(f"Anderson overhead per iteration: {100 * bench['anderson_overhead_per_iteration']:.0f}% of one evaluation")
    print(f"command: {bench['provenance']['command']}")
    fig, ax = plt.subplots(figsize=(6, 3.2))
    for name, s in bench["solvers"].items():
        ax.semilogy(np.arange(1, len(s["residual_history_mean"]) + 1), s["residual_history_mean"], label=name)
    ax.axhline(bench["tol"], color="gray", ls=":")
    ax.set_xlabel("function evaluations")
    ax.set_ylabel("mean relative residual")
    ax.set_title("bench solvers (committed result)", fontsize=10)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    plt.show()
else:
    print(f"no committed benchmark at {path.name}: run `python -m jfb_core bench solvers`")

# %% [markdown]
# Read these numbers with their scale in mind. At the `fast` size one evaluation
# of the TV map takes well under a millisecond, so the fixed cost of Anderson's
# step (a few small tensor operations and a batched $(m+2)\times(m+2)$ solve, each
# with Python and dispatch overhead) costs about two evaluations, and the
# saving in evaluations only partly shows up in wall time. The overhead grows
# only linearly with the image (a few inner products per column), while an
# evaluation of DE-GRAD at paper scale
# is a pass through a 17-layer, 64-channel network on 128×128 images; the same
# command with `JFB_PRESET=paper` measures it there.
#
# ## Summary
#
# * Fixed-point iteration converges linearly for a contraction, slowly when the
#   contraction factor is close to 1.
# * Anderson acceleration (Algorithm 3.1) combines the last $m + 1$ iterates to
#   minimise the residual; its constrained least-squares problem is a tiny
#   bordered system, regularised by a ridge relative to the residuals' size.
# * The library's solvers stop per sample, return each sample's best iterate with
#   its residual and a `converged` flag, count function evaluations, and fall
#   back to a plain step instead of failing.
#
# ## Exercises
#
# 1. For $f(z) = Mz + b$ with $M$ symmetric and eigenvalues in $[0, \gamma]$, how many
#    plain iterations reduce the error by $10^{-8}$? Compare with the run above.
# 2. Show that for an affine $f$ and $\sum_i\alpha_i = 1$, $\sum_i \alpha_i f(x^i) = f(\sum_i\alpha_i x^i)$.
#    Why does the argument fail for a non-linear $f$, and why does Anderson still work
#    well near a fixed point?
# 3. The last rows of the table ($\zeta = 1$, run with up to 20,000 evaluations) are
#    slower than plain iteration. Explain them using the bordered system.
#
# ```{admonition} Solutions
# :class: dropdown
#
# 1. The slowest error component shrinks by $\gamma = 0.99$ per step:
#    $k \ge 8\ln 10 / (-\ln 0.99) \approx 1833$ iterations to shrink the *error* by $10^{-8}$.
#    The run stops on the *residual* instead, whose slow component is
#    $(1-\gamma)$ times smaller, so it needs somewhat fewer evaluations.
# 2. $\sum_i\alpha_i(Mx^i + b) = M\sum_i\alpha_i x^i + (\sum_i\alpha_i)b$, and the last factor is 1.
#    For non-linear $f$ the identity only holds to first order; near a fixed point
#    $f$ is well approximated by its linearisation, so Anderson behaves like its
#    linear version there.
# 3. It converges, but about 3.4 times *slower* than plain iteration: 4,717 evaluations
#    against 1,369 (and 9,527 with $\beta = 0.5$; the table's last rows). With $\zeta s$ much larger than the
#    entries of $G^\top G$ the system is dominated by $\zeta s I$, and its solution is
#    $\alpha \approx \mathbf 1/(m_k + 1)$: the update is the plain average of $f$ at the last
#    $m + 1$ iterates, most of them older and less converged than the newest. Along the
#    slowest direction (factor $\gamma$) the error $e$ then obeys
#    $e^{k+1} = \tfrac{\gamma}{m+1}\sum_{i=0}^{m} e^{k-i}$; putting $e^k = q^k$ with
#    $q = 1 - t$ and keeping first-order terms in $t$ gives
#    $t \approx 2(1-\gamma)/(m+2)$, that is $(m+2)/2 = 3.5$ times as many
#    iterations as plain iteration's $t = 1 - \gamma$ for $m = 5$, and twice that
#    again with $\beta = 0.5$, which halves every step. The table above shows the
#    transition: $\zeta = 10^{-1}$ already needs 3,097 evaluations, and with $\beta = 0.5$
#    it does not reach the tolerance within its 5,000.
# ```
