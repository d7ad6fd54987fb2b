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
# # Implicit differentiation versus Jacobian-free backpropagation
#
# Chapter 4 built DE-GRAD and found its fixed point $x^\star$ without recording a
# graph. To *train* it we need the gradient of a loss with respect to the
# parameters $\Theta$, and $x^\star$ depends on $\Theta$ only implicitly, through the
# equation $x^\star = T_\Theta(x^\star)$. This chapter follows Sections 3.4 and 4 of the
# paper {cite:p}`liu2024jfbdeblur`: it derives the exact gradient with the implicit
# function theorem (3.9)-(3.10), shows how it is computed without ever forming a
# Jacobian, where an implementation can go quietly wrong, and why
# Jacobian-free backpropagation {cite:p}`fung2022jfb` (4.1) may drop the linear
# solve altogether. Every claim is checked numerically (a dense solve, hundreds of
# unrolled iterations, how often JFB descends). The chapter ends with the paper's
# timing experiment (Fig. 2), redone with a protocol that can be trusted, and with memory.
#
# After this chapter you will be able to write the backward pass of any
# fixed-point layer in a few lines (the chapter does, in about 25), test it, and say
# what it costs.

# %%
# %matplotlib inline
import copy
import json

import matplotlib.pyplot as plt
import numpy as np
import torch

from jfb_core.bench import bench_backward
from jfb_core.config import get_preset
from jfb_core.data import bundled_images, measure
from jfb_core.gradients import IFT, make_backward
from jfb_core.models import DEGRAD, DnCNN, lipschitz_power
from jfb_core.operators import blur_from_setting, conjugate_gradient
from jfb_core.provenance import find_results_dir

torch.manual_seed(0)
preset = get_preset()
print(f"preset {preset.name}: {preset.image_size}x{preset.image_size} images, network depth {preset.depth}, "
      f"width {preset.width}, eta {preset.eta}, blur {preset.blur}")

# %% [markdown]
# ## The implicit function theorem
#
# Write $J = \partial T_\Theta(x^\star)/\partial x$ for the Jacobian of one DE-GRAD step
# at the fixed point (an $n \times n$ matrix, $n$ = number of pixels times
# channels) and $M = \partial T_\Theta(x^\star)/\partial\Theta$ for its derivative with
# respect to the parameters ($n \times P$, for $P$ parameters). Differentiating the equilibrium equation
# $x^\star(\Theta) = T_\Theta(x^\star(\Theta))$ with the chain rule gives
#
# $$
# \frac{dx^\star}{d\Theta} = J\,\frac{dx^\star}{d\Theta} + M
# \quad\Longrightarrow\quad
# \underbrace{(I - J)}_{\mathcal{J}}\,\frac{dx^\star}{d\Theta} = M. \tag{3.9}
# $$
#
# The theorem also says when this is legitimate: $\mathcal{J} = I - J$ must be
# invertible. For DE-GRAD, Theorem 3.1 of chapter 4 gives $\|J\| \le \gamma < 1$, so every
# eigenvalue of $J$ lies inside the unit disc and $\mathcal{J}$ is invertible. For a
# loss $\ell(x^\star)$ with gradient $g = \partial\ell/\partial x^\star$ (a row vector in the
# paper's notation), gradient descent on $\Theta$ with learning rate $\theta_{\rm lr}$ (the paper
# writes $\alpha$, which this course keeps for Anderson's weights) reads
#
# $$
# \Theta \leftarrow \Theta - \theta_{\rm lr}\, g\, \mathcal{J}^{-1} M. \tag{3.10}
# $$
#
# Nobody forms $\mathcal{J}^{-1}$: at $128 \times 128$ RGB, $n = 49{,}152$ and $\mathcal{J}$ alone
# would take 9.7 GB in single precision. The product is evaluated from the left.
# First solve the *adjoint equation* for the row vector $w = g\mathcal{J}^{-1}$, in
# column form
#
# $$
# (I - J)^\top w = g, \tag{3.10a}
# $$
#
# then $w M$ is one vector-Jacobian product through one application of $T_\Theta$,
# exactly what `loss.backward()` computes when the incoming gradient is $w$
# instead of $g$. (The paper writes (3.10a) in Section 5.3, in row form
# $w\mathcal{J} = d\ell/dx^\star$, without a number.) Its coefficient matrix is applied with vector-Jacobian products
# $v \mapsto J^\top v$, which autograd provides for the price of one backward pass
# through $T_\Theta$. Two solvers:
#
# * **Fixed-point iteration** $w \leftarrow g + J^\top w$. It converges because
#   $\|J^\top\| = \|J\| \le \gamma < 1$: started at $w = g$, its error after $k$ products is at most
#   $\gamma^{k+1}\|g\|/(1 - \gamma)$. It is also the
#   Neumann series (4.2) summed term by term.
# * **Conjugate gradients on the normal equations**, the paper's choice (Section 5.3):
#   multiply (3.10a) by $(I - J)$ to get the symmetric positive definite system
#
# $$
# (I - J)(I - J)^\top w = (I - J)\, g. \tag{3.10b}
# $$
#
#   In the paper's row notation this is $w\mathcal{J}\mathcal{J}^\top = g\mathcal{J}^\top$. Each CG
#   step costs a vector-Jacobian *and* a Jacobian-vector product, and squaring the
#   matrix squares its condition number. It is the right tool when $T_\Theta$ is
#   not contractive but $I - J$ is still invertible.
#
# **Where it goes wrong.** The right-hand side of (3.10b) contains $\mathcal{J} = I - J$,
# not $J$. Code that builds the left-hand side from $x - T_\Theta(x)$ but the
# right-hand side from $T_\Theta$ solves a different system, runs without error,
# and returns a plausible-looking vector. The paper's public code does exactly this: in
# `support/models.py` (commit `975ad38`, `DEGRAD.jacobian_based_update`, line 158) the
# right-hand side passed to its CG solver is built by `dldx_J = dldx = dldx_dTdx`, where
# `dldx_dTdx` is the vector-Jacobian product of $g$ with $\partial T_\Theta/\partial x$ alone,
# $J^\top g$ in this chapter's notation, while its matrix-vector product uses `v - v_dRdu`,
# that is $I - J$. The library computes $(I - J)g$ as `g - jvp(g)`
# (`jfb_core.gradients.adjoint_solve_cg_normal`). Below, the right-hand side $(I - J)g$, the
# paper's $J^\top g$ and $Jg$ (the identity dropped, without the transpose) are each used in CG
# on (3.10b) and compared with the truth, on a problem small enough to form $J$ densely.
#
# The same function then updates with more than its implicit gradient. After
# `Txstar.backward(normal_eq_sol)` (line 214) it evaluates the loss again and calls `loss.backward()`
# (line 216) before `optimizer.step()`, so the JFB direction is added to the gradient already
# accumulated: its step is that IFT direction plus JFB's. Its CG runs with `atol=1e-3` and
# `maxiter=50` (lines 208–209), and when CG has not converged (`if info['optimal']:`, line 212) the
# step makes no update at all.

# %%
def tiny_model(mode="ift", seed=0, **kw):
    """A float64 DE-GRAD small enough for a dense Jacobian (3 x 6 x 6 = 108 unknowns)."""
    torch.manual_seed(seed)
    f = DnCNN(depth=3, channels=4, lipschitz=0.9).double()
    return DEGRAD(blur_from_setting("5x5_s1"), f, eta=0.45, tol=1e-13, max_iter=500,
                  backward=make_backward(mode, tol=1e-13, max_iter=5000, **kw)).double().eval()


def grad_and_stats(model, d, x):
    """dl/dTheta for l = ||N(d) - x||^2 through the model's backward, and what the pass did
    (`stats.backward` is filled in by `.backward()`)."""
    model.zero_grad(set_to_none=True)
    out, stats = model.run(d)
    ((out - x) ** 2).sum().backward()
    return torch.cat([p.grad.flatten() for p in model.parameters()]), stats


def param_grad(model, d, x):
    return grad_and_stats(model, d, x)[0]


def like(model, mode, **options):
    """A copy of ``model`` with another backward strategy (``make_backward``'s options);
    an IFT model's tolerance and iteration cap carry over unless given."""
    if isinstance(model.backward, IFT):
        options = {"tol": model.backward.tol, "max_iter": model.backward.max_iter, **options}
    return copy.deepcopy(model).set_backward(mode, **options)


g_ = torch.Generator().manual_seed(0)
x_t = torch.rand(1, 3, 6, 6, generator=g_, dtype=torch.float64)
A_t = blur_from_setting("5x5_s1")
d_t = A_t(x_t) + 0.01 * torch.randn(x_t.shape, generator=g_, dtype=torch.float64)
model_t = tiny_model()
with torch.no_grad():
    z_star = model_t.solve(d_t).z
n = z_star.numel()
J = torch.autograd.functional.jacobian(lambda z: model_t.T(z.view_as(z_star), d_t).flatten(), z_star.flatten())
I = torch.eye(n, dtype=torch.float64)
g_vec = 2 * (model_t.T(z_star, d_t).detach() - x_t).flatten()  # dl/dx* for l = ||x* - x||^2


def grad_from_w(w):
    """dl/dTheta = w^T M: one vector-Jacobian product through T at the fixed point."""
    grads = torch.autograd.grad(model_t.T(z_star, d_t), list(model_t.parameters()), w.view_as(z_star))
    return torch.cat([t.flatten() for t in grads])


truth = grad_from_w(torch.linalg.solve((I - J).T, g_vec))  # dense solve of (3.10a)
# CG on the normal equations (3.10b): the right right-hand side, and the slip that drops the identity
normal = lambda v: (I - J) @ ((I - J).T @ v)  # noqa: E731
w_right, _ = conjugate_gradient(lambda v: normal(v.flatten()).view_as(v), ((I - J) @ g_vec).view(1, -1),
                                tol=1e-14, max_iter=1000)
w_wrong, _ = conjugate_gradient(lambda v: normal(v.flatten()).view_as(v), (J @ g_vec).view(1, -1),
                                tol=1e-14, max_iter=1000)
w_paper, _ = conjugate_gradient(lambda v: normal(v.flatten()).view_as(v), (J.T @ g_vec).view(1, -1),
                                tol=1e-14, max_iter=1000)


def rel(a, b):
    return float((a - b).norm() / b.norm())


def cos(a, b):
    return float(a @ b / (a.norm() * b.norm()))


lib = {s: param_grad(like(model_t, "ift", solver=s), d_t, x_t) for s in ("fixed_point", "anderson", "cg_normal")}
print(f"n = {n} unknowns, {truth.numel()} parameters, ||J||_2 = {torch.linalg.matrix_norm(J, 2):.3f}")
print(f"{'gradient':<44} {'rel. error':>11} {'cosine':>8}")
for name, grad in [("library IFT, fixed-point adjoint solve", lib["fixed_point"]),
                   ("library IFT, Anderson adjoint solve", lib["anderson"]),
                   ("library IFT, CG on the normal equations", lib["cg_normal"]),
                   ("CG, right-hand side (I - J) g", grad_from_w(w_right.flatten())),
                   ("CG, right-hand side J g (identity dropped)", grad_from_w(w_wrong.flatten())),
                   ("CG, right-hand side J^T g (paper's code)", grad_from_w(w_paper.flatten())),
                   ("JFB (eq. 4.1)", param_grad(like(model_t, "jfb"), d_t, x_t))]:
    err = rel(grad, truth)  # rounding-level errors are shown as a bound: their digits vary with the machine
    print(f"{name:<44} {'< 1e-12' if err < 1e-12 else f'{err:.2e}':>11} {cos(grad, truth):8.3f}")
assert max(rel(lib[s], truth) for s in lib) < 1e-12

# %% [markdown]
# All three library solvers agree with the dense solve to rounding error. The
# right-hand sides that drop the identity, the paper's $J^\top g$ and $Jg$, pay for a full
# linear solve and return gradients that are off by about half their length, a larger error
# than JFB's, which does no solve at all. Exercise 2 shows what the slip $Jg$
# computes in general: the true adjoint with its sign *flipped*, plus a term that happens to
# dominate for DE-GRAD. Nothing in a training loop would flag the error; only a comparison
# with an independent answer does. `tests/test_gradients.py` checks the library's IFT against
# `torch.autograd.gradcheck`, a dense solve and 400 unrolled iterations, and fails if the
# right-hand side is changed to the one above.
#
# The adjoint equation is itself a fixed-point problem, $w = g + J^\top w$, whose map is a
# contraction with factor $\|J^\top\| = \|J\| \le \gamma$, and its asymptotic rate is the
# spectral radius $r(J)$, the forward iteration's own. So the library solves it with the
# solver functions of chapter 3 (`solvers.fixed_point`, or `solvers.anderson` with memory 5),
# each sample stopping when $\|(I - J)^\top w - g\| \le \text{tol}\,\|g\|$ (CG stops on the
# residual of (3.10b) instead, relative to $\|(I - J)g\|$). What each route costs on the problem above,
# counted in products with $J^\top$ (a CG iteration on the normal equations costs two,
# one with $J$ and one with $J^\top$):

# %%
for s in ("fixed_point", "anderson", "cg_normal"):
    _, st = grad_and_stats(like(model_t, "ift", solver=s), d_t, x_t)
    what = "CG iterations" if s == "cg_normal" else "products with J^T"
    assert max(st.backward.residual) <= 1e-13
    print(f"IFT adjoint by {s:<12} {st.backward.iterations:4d} {what}, residual <= 1e-13")

# %% [markdown]
# Anderson acceleration needs well under half the products of plain iteration here; CG needs as
# many iterations, but each costs a product with $J$ as well as one with $J^\top$.
#
# ### The backward pass, in a few lines
#
# The library's backward modes are short; here is one written from scratch. The
# forward pass solves without a graph, then applies $T_\Theta$ once *with* a graph, so
# that gradients reach $\Theta$ (and $d$) through that application. For IFT, a hook on
# the output replaces the incoming gradient $g$ by the solution $w$ of the adjoint
# equation (3.10a), found by the fixed-point iteration $w \leftarrow g + J^\top w$; each
# $J^\top w$ is one vector-Jacobian product through a second, detached application of
# $T_\Theta$. Autograd then multiplies by $M$ as usual, giving $wM$ as in (3.10). For JFB
# there is no hook at all: $g$ itself goes into $M$, which is (4.1). The library records
# $T_\Theta$ only once, so that one graph gives both the products $J^\top w$ and $wM$; the
# version below keeps the two applications apart, which reads more easily and gives the same
# gradient.

# %%
from jfb_core.solvers import anderson


def implicit_layer(T, d, z0, mode="ift", tol=1e-13, max_iter=5000):
    """x* = T(x*, d), differentiable in the parameters of T by IFT (3.10) or JFB (4.1)."""
    with torch.no_grad():
        z = anderson(lambda v: T(v, d), z0, m=5, tol=1e-13, max_iter=500).z
    out = T(z, d)  # one application with a graph: dl/dTheta = (incoming gradient) x M
    if mode == "ift":
        z_ = z.detach().requires_grad_()
        Tz = T(z_, d)  # only for the products J^T w

        def adjoint(g):  # solve (I - J)^T w = g by w <- g + J^T w
            w = g
            for _ in range(max_iter):
                w_new = g + torch.autograd.grad(Tz, z_, w, retain_graph=True)[0]
                done = (w_new - w).norm() <= tol * w_new.norm()
                w = w_new
                if done:
                    break
            return w

        out.register_hook(adjoint)
    return out


def scratch_grad(mode):
    model_t.zero_grad(set_to_none=True)
    x_out = implicit_layer(model_t.T, d_t, A_t.adjoint(d_t), mode)
    ((x_out - x_t) ** 2).sum().backward()
    return torch.cat([p.grad.flatten() for p in model_t.parameters()])


jfb_lib = param_grad(like(model_t, "jfb"), d_t, x_t)
errors = {"scratch IFT vs dense solve": rel(scratch_grad("ift"), truth),
          "scratch IFT vs library IFT": rel(scratch_grad("ift"), lib["fixed_point"]),
          "scratch JFB vs library JFB": rel(scratch_grad("jfb"), jfb_lib)}
for name, err in errors.items():  # rounding error, whose last digits vary with the machine
    print(f"{name}: relative error {'below 1e-10' if err < 1e-10 else f'{err:.1e}'}")
assert max(errors.values()) < 1e-10

# %% [markdown]
# ## The Neumann view, and unrolling
#
# Because $\|J\| < 1$, the inverse is a convergent geometric series,
#
# $$
# (I - J)^{-1} = \sum_{k=0}^{\infty} J^k, \tag{4.2}
# $$
#
# so $w^\top = g^\top \sum_k J^k$. Keeping the first $k+1$ terms gives the *Neumann-$k$*
# gradient (`grad_mode="neumann"`). Keeping only the first term, the identity,
# is JFB. Backpropagation through $K$ recorded iterations (*unrolling*,
# `grad_mode="unrolled"`) is a third approximation: it differentiates what the
# network computed after $K$ steps rather than the fixed point. The figure measures
# all three against the dense truth. Neumann-$k$'s error falls by about the spectral radius $r(J)$
# per term (at most by $\|J\|$, its bound), unrolling at
# the rate the forward iteration converges, and IFT sits at rounding error.

# %%
ks = [0, 1, 2, 4, 8, 16, 32, 64]
err_neumann = [rel(param_grad(like(model_t, "neumann", neumann_k=k), d_t, x_t), truth) for k in ks]
Ks = [1, 2, 4, 8, 16, 32, 64, 128]
err_unrolled = [rel(param_grad(like(model_t, "unrolled", unroll_k=K), d_t, x_t), truth) for K in Ks]
radius = float(torch.linalg.eigvals(J).abs().max())
fig, ax = plt.subplots(figsize=(6.5, 4))
ax.semilogy(ks, err_neumann, "o-", label="Neumann-$k$ ($k$ extra terms; $k=0$ is JFB)")
ax.semilogy(Ks, err_unrolled, "s-", label="unrolled backprop through $K$ steps from $A^\\top d$")
ax.semilogy(ks, [err_neumann[0] * radius**k for k in ks], "k:", label=f"spectral radius $r(J)^k$, $r(J) = {radius:.2f}$")
ax.axhline(rel(lib["fixed_point"], truth), color="C2", label="IFT (library), fixed-point adjoint")
ax.set(xlabel="$k$ or $K$", ylabel="relative error of $d\\ell/d\\Theta$", ylim=(1e-16, 3),
       title="Gradient error against a dense solve (float64, 108 unknowns)")
ax.legend(fontsize=8)
plt.show()
print("Neumann errors:", " ".join(f"{e:.1e}" for e in err_neumann))
print("unrolled errors:", " ".join(f"{e:.1e}" for e in err_unrolled))

# %% [markdown]
# ## Jacobian-free backpropagation and its assumptions
#
# JFB replaces $\mathcal{J}^{-1}$ in (3.10) by the identity:
#
# $$
# p_\Theta = g\, M = \frac{\partial \ell}{\partial x^\star}\,
#            \frac{\partial T_\Theta(x^\star)}{\partial \Theta}. \tag{4.1}
# $$
#
# In code this is what you get for free when the solve runs under
# `torch.no_grad()` and the output is $T_\Theta(x^\star)$ with one recorded
# application: the chain rule then stops at that application. Why should this be
# a useful direction? Write the true gradient as $\nabla\ell = M^\top u$ with
# $u = (I - J)^{-\top} g$ (the $w$ of (3.10a)), and $p = M^\top g = M^\top (I - J)^\top u$. If $MM^\top$ were the
# identity, then
#
# $$
# \langle p, \nabla\ell\rangle = u^\top (I - J)\, u \;\ge\; (1 - \|J\|)\,\|u\|^2 > 0,
# $$
#
# so $p$ would be a descent direction whenever $T_\Theta$ contracts. In general
#
# $$
# \langle p, \nabla\ell\rangle = u^\top (I - J)\, M M^\top u
# \;\ge\; \bigl(\lambda_{\min}(MM^\top) - \gamma\,\lambda_{\max}(MM^\top)\bigr)\,\|u\|^2 ,
# $$
#
# because $u^\top MM^\top u \ge \lambda_{\min}\|u\|^2$ and $|u^\top J MM^\top u| \le \gamma\lambda_{\max}\|u\|^2$. This is the
# content of the descent theorem of {cite:t}`fung2022jfb` (their Theorem 3.1, not the paper's), to which the paper refers with
# "more constraints on $T_\Theta$". In the column convention of this chapter
# its conditions read:
#
# 1. $T_\Theta$ is a **contraction** in $x$ with factor $\gamma < 1$ (chapter 4 certifies
#    this for DE-GRAD);
# 2. $MM^\top$ is **invertible**: $M$ has full row rank, which needs at least as many
#    parameters as unknowns, $P \ge n$;
# 3. $MM^\top$ is **well conditioned** relative to the contraction:
#    $\operatorname{cond}(MM^\top) < 1/\gamma$.
#
# Then $\langle p, \nabla\ell\rangle > 0$ for every $g \neq 0$ (with $\le$ in condition 3 the
# same argument gives only $\ge 0$). Conditions 2 and 3 are strong. For
# one $32 \times 32$ RGB image $n = 3{,}072$ and the `fast` network has about $3 \cdot 10^4$
# parameters, so condition 2 can hold for one image; for a batch of 16 images
# $n = 16 \cdot 3{,}072$. Nobody certifies $\operatorname{cond}(MM^\top)$ of a CNN. So the theorem is a
# sufficient condition, not a guarantee we can check.
#
# For DE-GRAD there is a more concrete reason to expect JFB to work. The
# Jacobian of (3.5) is $J = (1 - \eta) I - \eta\,(A^\top A - \partial f_\Theta)$, so
#
# $$
# I - J = \eta\,\bigl(I + A^\top A - \partial f_\Theta\bigr).
# $$
#
# The true adjoint is $u = \eta^{-1}(I + A^\top A - \partial f_\Theta)^{-\top} g$, and JFB uses
# $g = (I - J)^\top u$ in its place. The substitution happens in image space, before
# the multiplication by $M^\top$: with $E = I + A^\top A - \partial f_\Theta$, whose singular
# values lie in $[1 + \mu - \epsilon,\ 1 + L + \epsilon]$ (Weyl's inequality; $\mu$ and $L$ are the extreme
# eigenvalues of $A^\top A$ and $\epsilon$ the Lipschitz constant of $f_\Theta$, as in chapter 4),
# $\|g\| / \|u\|$ lies between $\eta(1 + \mu - \epsilon)$ and $\eta(1 + L + \epsilon)$, and $g$ is close
# to a multiple of $u$ where $g$ lives in directions on which $A^\top A$ and $\partial f_\Theta$
# vary little (smooth image content, for which $A^\top A \approx I$). In parameter space,
# $p = M^\top g$ and $\nabla\ell = M^\top u$, and without conditions on $M$ nothing bounds
# their angle or length ratio: hence Fung et al.'s conditions 2 and 3. (The length does not
# matter to Adam, which normalises each parameter's step.) The same
# algebra prices IFT: $\|J\| \approx 1 - \eta$, so the fixed-point adjoint solve needs about
# $\log(\text{tol}) / \log(1 - \eta)$ products by plain iteration. That is few for
# $\eta = 0.4$ and about $10^4$ for the paper's $\eta = 10^{-3}$; Anderson acceleration
# on the adjoint equation cuts the count for small $\eta$ (measured below down to $\eta = 0.05$).
#
# We can measure all of this. The next cell draws DE-GRAD models at the `fast`
# scale over a range of step sizes and two Lipschitz targets, computes both
# gradients on a batch of bundled images (adjoint solve to $10^{-5}$, a tolerance that
# float32 reaches), and records the cosine, the norm ratio, $\|J\|$ at the fixed
# point, and the adjoint products by plain iteration and by Anderson acceleration.

# %% tags=["nbval-ignore-output"]
# The adjoint iteration counts move by a few with the processor's floating-point paths, so the
# notebook check compares the claims asserted at the end, not the printout.
size = preset.image_size
A = preset.blur_operator()
x_b = bundled_images("train", size, n=4, seed=preset.seed)
d_b = measure(A, x_b, preset.noise_std, seed=preset.seed)


def fast_model(lip, eta, seed, mode="ift"):
    torch.manual_seed(seed)
    f = DnCNN(preset.depth, preset.width, lipschitz=lip)
    return DEGRAD(A, f, eta=eta, m=preset.anderson_m, tol=1e-5, max_iter=500,
                  backward=make_backward(mode, tol=1e-5, max_iter=3000)).eval()


rows = []
for seed, (eta, lip) in enumerate([(eta, lip) for eta in (0.05, 0.1, 0.2, 0.3, 0.45) for lip in (0.5, 0.99)]):
    m_ift = fast_model(lip, eta, seed)
    g_ift, st_ift = grad_and_stats(m_ift, d_b, x_b)
    g_jfb = param_grad(like(m_ift, "jfb"), d_b, x_b)
    _, st_and = grad_and_stats(like(m_ift, "ift", solver="anderson"), d_b, x_b)  # the same adjoint, accelerated
    with torch.no_grad():
        zs = m_ift.solve(d_b).z
    rows.append({"eta": eta, "lip": lip, "cos": cos(g_jfb, g_ift), "ratio": float(g_jfb.norm() / g_ift.norm()),
                 "J": lipschitz_power(lambda z: m_ift.T(z, d_b), zs, iters=20),
                 "ift_iters": st_ift.backward.iterations,
                 "anderson_iters": st_and.backward.iterations})
cosines = np.array([r["cos"] for r in rows])
print(f"{len(rows)} untrained DE-GRAD models ({preset.name} preset, batch 4 of {size}x{size}):\n  JFB descends in "
      f"{np.mean(cosines > 0):.0%}; cosine with the true gradient: min {cosines.min():.4f}, max {cosines.max():.4f}")
print(f"{'eta':>5} {'Lip(f)':>6} {'||J||':>6} {'1-eta':>6} {'|p|/|grad|':>10} {'cosine':>7} "
      f"{'adjoint products: plain':>23} {'Anderson':>8}")
for r in rows:
    print(f"{r['eta']:5.2f} {r['lip']:6.2f} {r['J']:6.3f} {1 - r['eta']:6.3f} {r['ratio']:10.3f} {r['cos']:7.4f} "
          f"{r['ift_iters']:23d} {r['anderson_iters']:8d}")
assert cosines.min() > 0.999 and all(r["eta"] <= r["ratio"] <= 2 * r["eta"] for r in rows)
assert all(r["anderson_iters"] < r["ift_iters"] for r in rows)  # Anderson needs fewer products everywhere

# %% [markdown]
# At initialisation the network's Jacobian is small and smooth, and JFB is
# parallel to the true gradient to about four digits, at roughly $1.9\eta$ times its length. A trained
# network may differ: $\partial f_\Theta$ grows and picks up image structure,
# which is exactly the part of $I - J$ that JFB ignores. The next cell trains a DE-GRAD
# with JFB (the `fast` preset's $\eta$) for 100 Adam steps on the bundled training
# photographs and measures the cosine on a fixed batch every 10 steps.

# %% tags=["nbval-ignore-output"]
# After 100 training steps the last digits vary with the processor's floating-point
# paths, so the notebook check compares the claims asserted at the end, not the printout.
x_tr = bundled_images("train", size, n=32, seed=preset.seed)
d_tr = measure(A, x_tr, preset.noise_std, seed=preset.seed)
torch.manual_seed(preset.seed)
net = DEGRAD(A, DnCNN(preset.depth, preset.width, lipschitz=preset.lipschitz), eta=preset.eta,
             m=preset.anderson_m, tol=1e-5, max_iter=300)  # trained with JFB (the default)
opt = torch.optim.Adam(net.parameters(), lr=1e-3)
trace = []
for step in range(101):
    batch = slice((4 * step) % 32, (4 * step) % 32 + 4)
    if step % 10 == 0:  # measure on the fixed batch, in eval mode (no power step)
        net.eval()
        g_true, st_true = grad_and_stats(like(net, "ift", tol=1e-5, max_iter=3000), d_b, x_b)
        g_j = param_grad(like(net, "jfb"), d_b, x_b)
        with torch.no_grad():
            loss_b = float(((net(d_b) - x_b) ** 2).mean())
        trace.append({"step": step, "cos": cos(g_j, g_true), "ift_iters": st_true.backward.iterations,
                      "loss": loss_b})
        net.train()
    opt.zero_grad(set_to_none=True)
    ((net(d_tr[batch]) - x_tr[batch]) ** 2).mean().backward()  # one JFB training step
    opt.step()
for t in trace:
    print(f"step {t['step']:3d}: loss {t['loss']:.2e}, cosine(JFB, true gradient) = {t['cos']:.3f}, "
          f"IFT adjoint iterations {t['ift_iters']}")
assert trace[-1]["loss"] < trace[0]["loss"] and all(t["cos"] > 0 for t in trace)  # JFB descended throughout

# %%
fig, axes = plt.subplots(1, 3, figsize=(14, 3.8))
etas = np.array([r["eta"] for r in rows])
for lip, mk in ((0.5, "o"), (0.99, "x")):
    sel = [r for r in rows if r["lip"] == lip]
    axes[0].plot([r["eta"] for r in sel], [r["ratio"] for r in sel], mk, ms=8, label=f"Lip$(f)$ = {lip}")
    axes[1].plot([r["eta"] for r in sel], [r["ift_iters"] for r in sel], mk, ms=8, color="C0", mfc="none",
                 label=f"plain iteration, Lip$(f)$ = {lip}")
    axes[1].plot([r["eta"] for r in sel], [r["anderson_iters"] for r in sel], mk, ms=8, color="C3", mfc="none",
                 label=f"Anderson, Lip$(f)$ = {lip}")
ee = np.linspace(etas.min(), etas.max(), 50)
axes[0].fill_between(ee, ee, 2 * ee, color="grey", alpha=0.2, label="$[\\eta, 2\\eta]$")
axes[0].set(xlabel="step size $\\eta$", ylabel="$\\|p_{JFB}\\| / \\|\\nabla\\ell\\|$",
            title=f"JFB's length (cosines {cosines.min():.4f} to {cosines.max():.4f})")
axes[1].plot(ee, np.log(1e-5) / np.log(1 - ee), "k:", label="$\\log(10^{-5})/\\log(1-\\eta)$")
axes[1].set(xlabel="step size $\\eta$", ylabel="adjoint products with $J^T$ to $10^{-5}$", yscale="log",
            title="What IFT pays for the exact gradient")
axes[2].plot([t["step"] for t in trace], [t["cos"] for t in trace], "r^-")
axes[2].axhline(0, color="grey", lw=0.8)
axes[2].set(xlabel="JFB training step (Adam)", ylabel="cosine(JFB, true gradient)", ylim=(-0.05, 1.05),
            title="Descent during training")
for ax in axes[:2]:
    ax.legend(fontsize=8)
plt.tight_layout()
plt.show()

# %% [markdown]
# Read the three panels together. JFB's length is a step-size-dependent fraction of the
# true gradient's, inside the band $[\eta, 2\eta]$ for these models (an observation, not
# a bound: see above). IFT's adjoint products by plain iteration track
# $\log(\text{tol})/\log(1 - \eta)$, a little below it; Anderson acceleration on the same
# equation needs 8 to 17 over the whole range. During training the cosine drops below 1 as the
# network learns structure, but the direction still descends at every
# measured step. These are measurements on small models, not a proof; chapter 6 tests
# JFB where it matters, in training.
#
# ### When JFB is a poor direction
#
# The smallest problem that shows what happens inside and outside those conditions
# is linear: $T_\Theta(x) = Jx + M\Theta$ with $\|J\| = \gamma$ and a loss with gradient $g$ at the
# fixed point, so that $\nabla\ell = M^\top(I - J)^{-\top}g$ and JFB's direction is $M^\top g$. The
# cell draws random problems with $n = 60$ unknowns, $J = \gamma Q$ for a random orthogonal
# $Q$ (a contraction that rotates), and $M$ with $P = 120$ parameters and singular values
# spaced from 1 down to $1/\mathrm{cond}(M)$, or with only $P = 20$ parameters (then
# $MM^\top$ is singular), and counts how often JFB descends.

# %%
def jfb_on_linear_problems(gamma, n_theta, cond_m, trials=400, n=60, seed=0):
    """Fraction of random linear fixed-point problems on which JFB descends, and the median cosine."""
    g = torch.Generator().manual_seed(seed)
    orth = lambda r, c: torch.linalg.qr(torch.randn(r, c, generator=g, dtype=torch.float64))[0]  # noqa: E731
    r, cosines = min(n, n_theta), []
    for _ in range(trials):
        J_lin = gamma * orth(n, n)
        M_lin = orth(n, r) @ torch.diag(torch.logspace(0, -np.log10(cond_m), r, dtype=torch.float64)) @ orth(n_theta, r).T
        g_lin = torch.randn(n, generator=g, dtype=torch.float64)
        true = M_lin.T @ torch.linalg.solve((torch.eye(n, dtype=torch.float64) - J_lin).T, g_lin)
        cosines.append(cos(M_lin.T @ g_lin, true))
    cosines = np.array(cosines)
    return float(np.mean(cosines > 0)), float(np.median(cosines))


print(f"{'gamma':>6} {'P':>7} {'cond(M)':>8} {'conditions 2-3 hold':>20} {'JFB descends':>13} {'median cosine':>14}")
for gamma in (0.5, 0.9, 0.99):
    for n_lin, cond_m in ((120, 1.0), (120, 10.0), (20, 1.0)):
        frac, med = jfb_on_linear_problems(gamma, n_lin, cond_m)
        holds = n_lin >= 60 and cond_m**2 <= 1 / gamma
        print(f"{gamma:6.2f} {n_lin:7d} {cond_m:8g} {str(holds):>20} {frac:13.1%} {med:14.3f}")

# %% [markdown]
# Where the conditions hold JFB always descends, as the theorem says, although at
# $\gamma = 0.99$ its typical cosine with the true gradient is small: a descent
# direction, but a poor one. Where they fail (an ill-conditioned $M$, or fewer parameters
# than unknowns) and $\gamma$ is near 1, JFB points uphill in a sizeable fraction of
# problems; at $\gamma = 0.5$ it still descends, the conditions being sufficient, not
# necessary. DE-GRAD sits in the good corner for two
# reasons the earlier cells measured: its $\|J\|$ is about $1 - \eta$, far from 1, and its $J$
# is dominated by a multiple of the identity rather than a rotation.
#
# ## What a step costs: the paper's Fig. 2, made trustworthy
#
# The paper times one parameter update for a batch of 16 images at sizes 16 to
# 128 (Section 5.3). A fair timing needs more care than it may seem, and `python
# -m jfb_core bench backward` (`jfb_core.bench.bench_backward`) builds it in:
#
# * **the same forward work** for every method: the solver's tolerance is
#   disabled and every method runs exactly the same number of Anderson
#   iterations, so only the backward differs;
# * **its own copy** of the same initial model and its own Adam optimiser for each
#   method, so one method's updates do not change what the next one solves;
# * **warm-up** steps before timing (allocator, kernel selection), then the median
#   of the timed steps;
# * on a GPU, `torch.cuda.synchronize()` before *every* clock reading: kernels
#   run asynchronously, and an unsynchronised clock measures only how fast Python
#   queues work;
# * the step split into forward solve, backward (for IFT including the adjoint
#   solve) and optimiser, plus the **floor**: one forward plus backward pass of
#   $T_\Theta$ alone. Any gradient through the fixed point costs at least one
#   vector-Jacobian product, and JFB's backward *is* that pass.
#
# A live run at two small sizes on the `fast` model:

# %% tags=["nbval-ignore-output"]
live = bench_backward(preset, sizes=(16, 32), batch=preset.bench_batch, repeats=3, warmup=1)
print(f"batch {live['batch']}, {live['forward_iters']} forward iterations, {live['device']}; median ms per step")
print(f"{'size':>5} {'method':>8} {'forward':>9} {'backward':>9} {'optimizer':>9} {'adjoint its':>11}")
for r in live["rows"]:
    for name, m in r["methods"].items():
        print(f"{r['size']:5d} {name:>8} {1e3 * m['forward_median']:9.1f} {1e3 * m['backward_median']:9.1f} "
              f"{1e3 * m['optimizer_median']:9.2f} {m['backward_iterations_median']:11g}")
    print(f"{r['size']:5d} JFB backward = {r['methods']['jfb']['backward_over_t_T']:.2f} x (one T forward+backward)")

# %% [markdown]
# The committed benchmark ran this protocol from the command line with all five backward
# passes, 15 timed steps per size and method, on the `fast` network (5 layers × 32 channels,
# batch 4, 20 forward iterations) on a CPU; its JSON records the machine, the versions and
# the configuration:
#
# ```
# python -m jfb_core bench backward --methods jfb,ift_cg,ift_fp,ift_aa,neumann --repeats 15
# ```
#
# The paper's network (17 × 64, batch 16, sizes 16–128) is timed the same way with
# `--preset paper --data <CelebA folder>`, and on a GPU with `--device cuda`;
# `results/README.md` lists the paper-network timings made on the CPU.

# %%
from IPython.display import Markdown

from jfb_core.report import markdown_table

results = find_results_dir()
bench = json.loads((results / "bench" / "backward_fast_cpu.json").read_text())
env = bench["provenance"]["environment"]
names = {"jfb": "JFB", "neumann": f"Neumann-{bench['neumann_k']}", "ift_aa": "IFT, Anderson adjoint",
         "ift_fp": "IFT, plain adjoint", "ift_cg": "IFT, CG on the normal equations (paper)"}
sizes = [r["size"] for r in bench["rows"]]
fig, ax = plt.subplots(figsize=(6.4, 3.8))
for k, label in names.items():
    ax.plot(sizes, [1e3 * r["methods"][k]["backward_median"] for r in bench["rows"]], "o-", label=label)
ax.plot(sizes, [1e3 * r["t_T_forward_backward"] for r in bench["rows"]], "k:", label="one $T$ forward + backward")
ax.set(xlabel="image side (pixels)", ylabel="backward pass (ms, median)", yscale="log",
       title=f"backward_fast_cpu.json: batch {bench['batch']}, {bench['depth']}x{bench['width']}, {env['device']}")
ax.title.set_fontsize(9)
ax.legend(fontsize=8)
plt.show()
big = bench["rows"][-1]
jfb = big["methods"]["jfb"]
Markdown(f"At {big['size']} px (medians of {bench['repeats']} timed steps):\n\n" + markdown_table(
    ["backward", "products", "backward (ms)", "× JFB's backward", "forward (ms)", "step (ms)", "× JFB's step"],
    [[label, f"{m['backward_iterations_median']:g}", f"{1e3 * m['backward_median']:.1f}",
      f"{m['backward_median'] / jfb['backward_median']:.1f}", f"{1e3 * m['forward_median']:.0f}",
      f"{1e3 * m['step_median']:.0f}", f"{big['step_ratio_to_jfb'][k]:.2f}"]
     for k, label in names.items() for m in [big["methods"][k]]]))

# %% [markdown]
# How to read it. JFB's backward is the floor: one forward-plus-backward pass of $T_\Theta$
# (dotted line). IFT adds one vector-Jacobian product per adjoint iteration, or a
# vector-Jacobian and a Jacobian-vector product per CG iteration on the normal equations;
# autograd builds the Jacobian-vector product from two more backward passes (the
# double-vector-Jacobian trick of `jfb_core.gradients`), which is why the paper's route is the
# slowest. The adjoint solves are short because $\|J\| \approx 1 - \eta = 0.6$ and the
# tolerance is $10^{-4}$ (at the paper's $\eta = 10^{-3}$ they would not be); Anderson
# acceleration halves their products again. The forward solve dominates the steps of JFB and
# Neumann, so their step ratios are smaller than their backward ratios. JFB stays the cheapest,
# and the exact gradient, solved well, costs less than the paper's route suggests. (The forward
# solve is the same for every method; its spread between rows is the noise of a CPU timing.)
#
# ## Memory
#
# JFB and IFT keep no graph of the forward iterations, so their memory does not
# grow with the number of forward iterations. Backpropagation through $K$ unrolled
# steps stores every step. The committed `bench memory` run counts the bytes
# autograd saves for the backward pass, independently of the allocator. IFT's hook reuses the graph of the
# one recorded $T_\Theta$ for every product with $J^\top$, so it saves exactly what JFB saves
# (the work vectors of its adjoint solve come on top, a few images' worth).

# %%
path = results / "bench" / "memory_fast_cpu.json"
mem = json.loads(path.read_text())
fig, ax = plt.subplots(figsize=(6, 3.6))
for mode, style in (("unrolled", "s-"), ("ift", "^-"), ("jfb", "o--")):
    pts = [(r["iterations"], r["saved_bytes"] / 2**20) for r in mem["rows"] if r["mode"] == mode]
    if pts:
        ax.plot(*zip(*pts), style, label=mode)
ax.set(xlabel="forward iterations $K$", ylabel="MiB saved for backward", yscale="log",
       title=f"{path.name}: batch {mem['batch']} x 3 x {mem['size']}$^2$, depth {mem['depth']}, "
             f"width {mem['width']}, {mem['device']}")
ax.title.set_fontsize(8)
ax.legend()
plt.show()
for r in mem["rows"]:
    print(f"{r['mode']:>9} K={r['iterations']:4d}: {r['saved_bytes'] / 2**20:7.1f} MiB")

# %% [markdown]
# ## Summary
#
# * The exact gradient of a fixed-point layer is $g(I - J)^{-1}M$ (3.10): solve the adjoint
#   equation $(I - J)^\top w = g$ with vector-Jacobian products, then backpropagate $w$ in
#   place of $g$. A hook of about 25 lines matches a dense solve to rounding error.
# * CG on the normal equations (the paper's route) needs the right-hand side $(I - J)g$;
#   with $Jg$ it runs without complaint and returns a gradient off by half its length.
# * Neumann-$k$ interpolates between JFB ($k = 0$) and IFT; its error falls by about $r(J)$ per term.
# * JFB's descent guarantee cannot be checked for a CNN, but its conclusion can be
#   measured: descent in every sampled DE-GRAD case, where $I - J$ is close to a multiple of
#   the identity; uphill about one time in six for rotating $J$ near $\|J\| = 1$ and a poorly
#   conditioned $M$.
# * JFB's backward costs one pass of $T_\Theta$; IFT's grows with its adjoint iterations and
#   saves no more memory; unrolling's memory grows with the forward iterations.
#
# ## Exercises
#
# 1. Show that if $\|J\| \le \gamma$, the Neumann-$k$ adjoint $w_k$ satisfies
#    $\|w_k - w\| \le \gamma^{k+1}\|g\|/(1 - \gamma)$.
# 2. The paper's normal equations $w\mathcal{J}\mathcal{J}^\top = g\mathcal{J}^\top$ are correct as
#    written. Show that they are equivalent to $w\mathcal{J} = g$ when $\mathcal{J}$ is
#    invertible, and find the solution of the system with right-hand side $gJ^\top$
#    in terms of the true $w$.
# 3. Why does the timing protocol disable the forward tolerance instead of letting
#    each method stop when it converges?
# 4. (Coding.) Give `implicit_layer` a third mode, Neumann-$k$ (4.2) truncated after $k + 1$
#    terms, as a hook of a few lines. Check it against the library's `"neumann"` mode
#    and against `truth` for $k = 0, 2, 8, 32$: how does the error fall with $k$?
#
# ````{admonition} Solutions
# :class: dropdown
#
# 1. $w - w_k = \sum_{j > k} (J^\top)^j g$, so
#    $\|w - w_k\| \le \sum_{j>k} \gamma^j \|g\| = \gamma^{k+1}\|g\|/(1 - \gamma)$.
# 2. Multiplying $w\mathcal{J} = g$ on the right by $\mathcal{J}^\top$ gives the normal
#    equations. Conversely, $\mathcal{J}\mathcal{J}^\top$ is invertible when $\mathcal{J}$ is, so the
#    normal equations have exactly one solution, the true $w$. With $gJ^\top$ on the
#    right the solution is $\tilde w = gJ^\top(\mathcal{J}\mathcal{J}^\top)^{-1}$. Since
#    $J = I - \mathcal{J}$, $gJ^\top = g - g\mathcal{J}^\top$, so
#    $\tilde w = g(\mathcal{J}\mathcal{J}^\top)^{-1} - w$: the true adjoint with its sign flipped,
#    plus a term that is small only if $\mathcal{J}$ is large. For DE-GRAD $\mathcal{J}$ is of order
#    $\eta$; at this chapter's $\eta$ the two terms are of comparable size and partly cancel, leaving
#    a vector roughly along the true gradient with the wrong length (the first table).
# 3. With a tolerance, each copy of the model would stop after a different number
#    of iterations (their parameters drift apart after the first update), and the
#    comparison would mix forward and backward costs. Fixing the iterations makes
#    the forward identical, so any difference is the backward's.
# 4. One way to write it, with the chapter's `model_t`, `d_t`, `x_t`, `truth`, `like`,
#    `param_grad` and `rel`:
#
#    ```python
#    def neumann_layer(T, d, z0, k):
#        with torch.no_grad():
#            z = anderson(lambda v: T(v, d), z0, m=5, tol=1e-13, max_iter=500).z
#        out = T(z, d)
#        z_ = z.detach().requires_grad_()
#        Tz = T(z_, d)
#
#        def hook(g):  # w_k = g + J^T g + ... + (J^T)^k g
#            w, term = g, g
#            for _ in range(k):
#                term = torch.autograd.grad(Tz, z_, term, retain_graph=True)[0]
#                w = w + term
#            return w
#
#        out.register_hook(hook)
#        return out
#
#    for k in (0, 2, 8, 32):
#        model_t.zero_grad(set_to_none=True)
#        ((neumann_layer(model_t.T, d_t, A_t.adjoint(d_t), k) - x_t) ** 2).sum().backward()
#        mine = torch.cat([p.grad.flatten() for p in model_t.parameters()])
#        library = param_grad(like(model_t, "neumann", neumann_k=k), d_t, x_t)
#        print(f"k = {k:2d}: error {rel(mine, truth):.2e}, vs the library {rel(mine, library):.1e}")
#    ```
#
#    It matches the library to rounding error, and its error falls geometrically, by about
#    the spectral radius $r(J)$ per extra term (the dotted line of the Neumann figure above);
#    $k = 0$ is JFB.
# ````
