"""Solvers: plain fixed-point iteration and Anderson acceleration (paper Algorithm 3.1),
and the matrix-free linear iterations the rest of the library leans on (conjugate
gradients per sample, power and inverse iteration for extreme eigenvalues).

Both find ``z`` with ``f(z) = z`` for a batch of independent problems: ``z0`` has a
leading batch dimension and ``f`` must treat every sample independently. Both
return a :class:`SolverResult`.

Residual
    Per sample, relative: ``r(z) = ||f(z) - z|| / ||f(z)||`` (the denominator is
    guarded against zero), or ``||f(z) - z|| / scale`` for a fixed per-sample ``scale``
    when one is given (IFT's adjoint measures against ``||g||``). A sample has converged
    when ``r(z) <= tol``.
Stopping
    Per sample: a converged sample stops changing while the others continue.
    The solver returns, for every sample, the iterate with the lowest residual
    seen, and says whether it met the tolerance.
Gradients
    No autograd graph is built: the solvers run under ``torch.no_grad()``.
    Attaching gradients to a fixed point is the job of :mod:`jfb_core.gradients`, which
    solves IFT's adjoint equation with these same solvers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch

from jfb_core.errors import UserError

Map = Callable[[torch.Tensor], torch.Tensor]


@dataclass
class SolverResult:
    """Outcome of a fixed-point solve.

    Attributes
    ----------
    z:
        Per sample, the iterate with the lowest residual (same shape as ``z0``).
    residual:
        Its relative residual ``||f(z) - z|| / ||f(z)||`` (or ``/ scale`` when the solver
        was given one), shape ``(B,)``.
    converged:
        ``residual <= tol``, shape ``(B,)``.
    iterations:
        Per sample, the iterations run until it converged (or ``max_iter``), ``(B,)``.
    nfe:
        Evaluations of ``f`` on the whole batch (each counts once, however many
        samples were still active).
    history:
        Relative residual of every evaluated iterate, shape ``(nfe, B)``; entries
        of a sample after it stopped repeat its last value.
    fallbacks:
        Anderson steps replaced by a plain step because the least-squares solve
        failed or gave a non-finite iterate (always 0 for plain iteration).
    """

    z: torch.Tensor
    residual: torch.Tensor
    converged: torch.Tensor
    iterations: torch.Tensor
    nfe: int
    history: torch.Tensor
    fallbacks: int = 0

    @property
    def converged_fraction(self) -> float:
        return float(self.converged.float().mean())


def relative_residual(fz: torch.Tensor, z: torch.Tensor, scale: torch.Tensor | None = None) -> torch.Tensor:
    """``||f(z) - z|| / ||f(z)||`` per sample (flattened), guarded against ``f(z) = 0``;
    ``||f(z) - z|| / scale`` when a per-sample ``scale`` is given."""
    num = (fz - z).flatten(1).norm(dim=1)
    den = fz.flatten(1).norm(dim=1) if scale is None else scale
    return num / den.clamp_min(torch.finfo(fz.dtype).tiny)


def _check(z0: torch.Tensor, tol: float, max_iter: int, kwargs: dict) -> None:
    if kwargs:
        raise TypeError(f"unexpected keyword argument(s) {sorted(kwargs)}")
    if z0.dim() < 1 or z0.shape[0] < 1:
        raise UserError("z0 needs a leading batch dimension")
    if not tol > 0:
        raise UserError(f"tol must be positive, got {tol}")
    if max_iter < 1:
        raise UserError(f"max_iter must be >= 1, got {max_iter}")


def _eval(f: Map, z_flat: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    return f(z_flat.view(shape)).reshape(shape[0], -1)


class _Tracker:
    """Best iterate, residual history and per-sample activity, shared by both solvers."""

    def __init__(self, z: torch.Tensor, tol: float) -> None:
        b = z.shape[0]
        self.tol = tol
        self.best = z.clone()
        self.best_res = torch.full((b,), float("inf"), dtype=z.dtype, device=z.device)
        self.active = torch.ones(b, dtype=torch.bool, device=z.device)
        self.iterations = torch.zeros(b, dtype=torch.long, device=z.device)
        self.history: list[torch.Tensor] = []

    def update(self, z: torch.Tensor, res: torch.Tensor) -> None:
        res = torch.where(torch.isfinite(res), res, torch.full_like(res, float("inf")))
        previous = self.history[-1] if self.history else res
        better = self.active & (res < self.best_res)
        self.best = torch.where(better.unsqueeze(1), z, self.best)
        self.best_res = torch.where(better, res, self.best_res)
        self.history.append(torch.where(self.active, res, previous))
        self.active = self.active & (self.best_res > self.tol)

    def result(self, shape: torch.Size, nfe: int, fallbacks: int = 0) -> SolverResult:
        return SolverResult(
            z=self.best.view(shape), residual=self.best_res, converged=self.best_res <= self.tol,
            iterations=self.iterations, nfe=nfe, history=torch.stack(self.history), fallbacks=fallbacks,
        )


@torch.no_grad()
def fixed_point(f: Map, z0: torch.Tensor, tol: float = 1e-3, max_iter: int = 100, scale: torch.Tensor | None = None,
                **kwargs) -> SolverResult:
    """Plain fixed-point iteration ``z_{k+1} = f(z_k)``, per-sample stopping.

    Converges linearly, with rate the Lipschitz constant of ``f``, when ``f`` is a
    contraction (Banach's fixed-point theorem). Uses ``max_iter + 1`` evaluations
    at most (the last one only to measure the residual of the last iterate).
    """
    _check(z0, tol, max_iter, kwargs)
    shape = z0.shape
    z = z0.reshape(shape[0], -1).clone()
    track = _Tracker(z, tol)
    nfe = 0
    for k in range(max_iter + 1):
        fz = _eval(f, z, shape)
        nfe += 1
        track.update(z, relative_residual(fz, z, scale))
        if k == max_iter or not bool(track.active.any()):
            break
        track.iterations += track.active.long()
        z = torch.where(track.active.unsqueeze(1), fz, z)
    return track.result(shape, nfe)


def _anderson_weights(G: torch.Tensor, lam: float) -> tuple[torch.Tensor, torch.Tensor]:
    """The weights ``alpha`` ``(b, m_k)`` minimising ``||G alpha||^2 + lam s ||alpha||^2`` subject to
    ``sum(alpha) = 1`` for residual columns ``G`` ``(b, m_k, n)`` (float64), through the bordered
    (KKT) system, with ``s = max(diag(G^T G))``; and ``solve_ex``'s info (non-zero: singular)."""
    b, mk = G.shape[:2]
    gram = G @ G.transpose(1, 2)  # (b, mk, mk)
    gram_scale = gram.diagonal(dim1=1, dim2=2).amax(dim=1).clamp_min(1e-300)
    kkt = torch.zeros(b, mk + 1, mk + 1, dtype=torch.float64, device=G.device)
    kkt[:, 0, 1:] = 1.0
    kkt[:, 1:, 0] = 1.0
    kkt[:, 1:, 1:] = gram + (lam * gram_scale).view(b, 1, 1) * torch.eye(mk, dtype=torch.float64, device=G.device)
    rhs = torch.zeros(b, mk + 1, dtype=torch.float64, device=G.device)
    rhs[:, 0] = 1.0
    sol, info = torch.linalg.solve_ex(kkt, rhs)
    return sol[:, 1:], info


@torch.no_grad()
def anderson(f: Map, z0: torch.Tensor, m: int = 5, lam: float = 1e-4, beta: float = 1.0,
             tol: float = 1e-3, max_iter: int = 50, scale: torch.Tensor | None = None, **kwargs) -> SolverResult:
    """Anderson acceleration (Algorithm 3.1; Walker and Ni 2011), batched, per-sample stopping.

    With the current iterate and the ``m_k = min(m, k)`` before it (``m_k + 1``
    columns, as in the paper's Algorithm 3.1) and their residuals
    ``g_i = f(x_i) - x_i`` as the columns of ``X`` and ``G``, each step solves

        ``min_alpha ||G alpha||^2  subject to  sum(alpha) = 1``

    through its bordered (KKT) system
    ``[[0, 1^T], [1, G^T G + lam * s * I]] [nu; alpha] = [1; 0]``, where
    ``s = max(diag(G^T G))`` makes ``lam`` relative to the scale of the residuals,
    and moves to ``x_{k+1} = beta * F alpha + (1 - beta) * X alpha``
    (``beta = 1`` is the paper's update ``sum_i alpha_i f(x_i)``). The small system
    is solved in float64. If it cannot be solved or gives a non-finite iterate,
    the step falls back to the plain step ``f(x_k)`` for that sample (counted in
    ``fallbacks``) instead of failing.
    """
    _check(z0, tol, max_iter, kwargs)
    if m < 1:
        raise UserError(f"m must be >= 1, got {m}")
    if lam < 0 or not 0 < beta <= 1:
        raise UserError(f"need lam >= 0 and 0 < beta <= 1, got lam={lam}, beta={beta}")
    shape = z0.shape
    b = shape[0]
    x = z0.reshape(b, -1).clone()
    n = x.shape[1]
    cols = m + 1  # the current iterate and m before it
    X = x.new_zeros(b, cols, n)
    F = x.new_zeros(b, cols, n)
    track = _Tracker(x, tol)
    fallbacks = 0
    fx = _eval(f, x, shape)
    nfe = 1
    track.update(x, relative_residual(fx, x, scale))
    X[:, 0], F[:, 0] = x, fx
    last = 0  # slot of the newest iterate
    for k in range(1, max_iter + 1):
        if not bool(track.active.any()):
            break
        track.iterations += track.active.long()
        mk = min(k, cols)  # columns available: x^0 .. x^(k-1), at most m + 1
        alpha, info = _anderson_weights((F[:, :mk] - X[:, :mk]).double(), lam)
        alpha = alpha.to(x.dtype)  # (b, mk)
        x_and = beta * torch.einsum("bi,bin->bn", alpha, F[:, :mk])
        if beta < 1:
            x_and = x_and + (1 - beta) * torch.einsum("bi,bin->bn", alpha, X[:, :mk])
        ok = (info == 0) & torch.isfinite(alpha).all(dim=1) & torch.isfinite(x_and).all(dim=1)
        plain = F[:, last]
        fallbacks += int((~ok & track.active).sum())
        x_new = torch.where(ok.unsqueeze(1), x_and, plain)
        # samples that have stopped keep their best iterate
        x_new = torch.where(track.active.unsqueeze(1), x_new, track.best)
        fx_new = _eval(f, x_new, shape)
        nfe += 1
        track.update(x_new, relative_residual(fx_new, x_new, scale))
        last = k % cols
        X[:, last], F[:, last] = x_new, fx_new
    return track.result(shape, nfe, fallbacks)


def _plain(f: Map, z0: torch.Tensor, *, m: int | None = None, lam: float | None = None, **kwargs) -> SolverResult:
    """:func:`fixed_point` with the solver table's common signature (it has no memory ``m``
    and no ridge ``lam``: they are accepted and ignored)."""
    return fixed_point(f, z0, **kwargs)


#: The forward solvers by name, one signature: ``(f, z0, *, m, lam, tol, max_iter, scale)``.
FORWARD_SOLVERS: dict[str, Callable[..., SolverResult]] = {"anderson": anderson, "fixed_point": _plain}
DEFAULT_FORWARD_SOLVER = "anderson"  #: DE-GRAD's forward solve unless told otherwise


def forward_solver(name: str) -> Callable[..., SolverResult]:
    """The solver ``name`` of :data:`FORWARD_SOLVERS` (``"picard"`` names plain iteration too), or a
    :class:`UserError` listing the names: the one check of a forward solver's name."""
    name = "fixed_point" if name == "picard" else name
    if name not in FORWARD_SOLVERS:
        raise UserError(f"forward_solver must be one of {tuple(FORWARD_SOLVERS)}, got {name!r}")
    return FORWARD_SOLVERS[name]


def solve(f: Map, z0: torch.Tensor, method: str = DEFAULT_FORWARD_SOLVER, **kwargs) -> SolverResult:
    """The fixed point of ``f`` from ``z0`` by the solver ``method`` (:func:`forward_solver`)."""
    return forward_solver(method)(f, z0, **kwargs)


# Linear-algebra iterations on matrix-free symmetric operators (a blur's normal operator,
# the proximal step's shifted system, IFT's adjoint on the normal equations).

def power_iteration(apply, shape: tuple[int, ...], iters: int = 200, tol: float = 1e-10,
                    dtype: torch.dtype = torch.float64, seed: int = 0) -> float:
    """Largest eigenvalue of a symmetric positive semi-definite operator ``apply`` (matrix-free)."""
    g = torch.Generator().manual_seed(seed)
    v = torch.randn(shape, generator=g, dtype=dtype)
    v /= v.norm()
    lam = 0.0
    for _ in range(iters):
        w = apply(v)
        new = float((v * w).sum())
        v = w / w.norm()
        if abs(new - lam) <= tol * abs(new):
            lam = new
            break
        lam = new
    return lam


def _bdot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-sample inner products over all but the first dimension, shaped for broadcasting."""
    return (a * b).flatten(1).sum(1).view(-1, *([1] * (a.dim() - 1)))


def conjugate_gradient(apply, b: torch.Tensor, x0: torch.Tensor | None = None, tol: float = 1e-10,
                       max_iter: int = 1000) -> tuple[torch.Tensor, torch.Tensor]:
    """Solve ``apply(x) = b`` per sample for a symmetric positive (semi-)definite ``apply``.

    ``b`` has a leading batch dimension; ``apply`` must act on each sample
    independently (a blur does). Sample ``i`` stops when
    ``||r_i|| <= tol * ||b_i||``; converged samples stop changing.
    Returns ``(x, iterations)`` with ``iterations`` of shape ``(B,)``.
    """
    x = torch.zeros_like(b) if x0 is None else x0.clone()
    r = b - apply(x) if x0 is not None else b.clone()
    p = r.clone()
    rs = _bdot(r, r)
    b_norm = _bdot(b, b).sqrt().clamp_min(torch.finfo(b.dtype).tiny)
    iters = torch.zeros(b.shape[0], dtype=torch.long, device=b.device)
    for _ in range(max_iter):
        active = rs.sqrt() > tol * b_norm
        if not bool(active.any()):
            break
        iters += active.flatten().long()
        ap = apply(p)
        pap = _bdot(p, ap)
        alpha = torch.where(active & (pap > 0), rs / pap.clamp_min(torch.finfo(b.dtype).tiny),
                            torch.zeros_like(rs))
        x = x + alpha * p
        r = r - alpha * ap
        rs_new = _bdot(r, r)
        beta = torch.where(active, rs_new / rs.clamp_min(torch.finfo(b.dtype).tiny), torch.zeros_like(rs))
        p = torch.where(active, r + beta * p, p)
        rs = torch.where(active, rs_new, rs)
    return x, iters


def inverse_iteration(apply, shape: tuple[int, ...], iters: int = 50, cg_tol: float = 1e-12,
                      cg_max_iter: int = 5000, dtype: torch.dtype = torch.float64, seed: int = 0) -> float:
    """Smallest eigenvalue of a symmetric positive definite operator on tensors of ``shape``
    (leading batch dimension 1): power iteration on its inverse, each inverse applied by conjugate gradients. Accurate for small, moderately
    conditioned problems; slow when the operator is nearly singular (a blur's is)."""
    g = torch.Generator().manual_seed(seed)
    v = torch.randn(shape, generator=g, dtype=dtype)
    v /= v.norm()
    lam = math.inf
    for _ in range(iters):
        w, _ = conjugate_gradient(apply, v, tol=cg_tol, max_iter=cg_max_iter)
        lam_new = 1.0 / float((v * w).sum())
        v = w / w.norm()
        if abs(lam_new - lam) <= 1e-10 * abs(lam_new):
            return lam_new
        lam = lam_new
    return lam


__all__ = ["DEFAULT_FORWARD_SOLVER", "FORWARD_SOLVERS", "SolverResult", "forward_solver", "anderson", "conjugate_gradient", "fixed_point", "inverse_iteration", "power_iteration",
           "relative_residual", "solve"]
