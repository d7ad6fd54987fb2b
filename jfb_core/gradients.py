"""Backward modes through a fixed point (paper eq. 3.9, 3.10, 4.1, 4.2).

Let ``z_star = T(z_star)`` depend on parameters ``theta`` (and on the data ``d``),
``J = dT/dz`` at ``z_star`` and ``g = dl/dz_star`` the gradient of the loss. The
implicit function theorem (eq. 3.9) gives the exact gradient (eq. 3.10)

    ``dl/dtheta = w^T dT/dtheta``  with  ``w = (I - J)^{-T} g``,

i.e. ``w`` solves the *adjoint* equation ``(I - J)^T w = g``. The backward modes
differ only in how they replace ``w``:

``"jfb"``       ``w = g`` (eq. 4.1: the identity in place of ``(I - J)^{-1}``);
``"neumann"``   ``w = sum_{j=0..k} (J^T)^j g`` (eq. 4.2 truncated after ``k + 1`` terms;
                ``k = 0`` is JFB);
``"ift"``       ``w`` from a linear solve: fixed-point iteration ``w <- g + J^T w`` (it
                converges when ``T`` is a contraction), or, as the paper did,
                conjugate gradients on the normal equations ``(I - J)(I - J)^T w = (I - J) g``;
``"unrolled"``  no fixed point: backpropagation through ``K`` recorded applications of ``T``
                (handled by the caller, :class:`jfb_core.models.DEGRAD`).

Note the right-hand side: the normal equations of ``(I - J)^T w = g`` are
``(I - J)(I - J)^T w = (I - J) g``. Writing ``g J^T`` (or ``J g``) on the right instead,
which drops the identity from ``I - J``, solves a different system.

:func:`attach` wires any of the first three into autograd through a hook on
one recorded application of ``T`` at the fixed point, so the forward solve never
records a graph.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch

from jfb_core.config import GRAD_MODES, IFT_SOLVERS
from jfb_core.solvers import conjugate_gradient
from jfb_core.errors import UserError



@dataclass
class BackwardStats:
    """What the last backward pass did: the mode, and for ``ift`` the solver's iterations
    and final relative residual ``||(I - J)^T w - g|| / ||g||`` (per sample)."""

    mode: str = ""
    iterations: int = 0
    residual: list[float] = field(default_factory=list)


def _bnorm(t: torch.Tensor) -> torch.Tensor:
    return t.flatten(1).norm(dim=1)


def adjoint_solve_fixed_point(vjp: Callable[[torch.Tensor], torch.Tensor], g: torch.Tensor, tol: float,
                              max_iter: int) -> tuple[torch.Tensor, int, torch.Tensor]:
    """``w <- g + J^T w`` until ``||(I - J)^T w - g|| <= tol ||g||`` per sample."""
    w = g.clone()
    gn = _bnorm(g).clamp_min(torch.finfo(g.dtype).tiny)
    res = torch.full((g.shape[0],), float("inf"), dtype=g.dtype, device=g.device)
    k = 0
    for k in range(1, max_iter + 1):
        jtw = vjp(w)
        res = _bnorm(w - jtw - g) / gn
        if bool((res <= tol).all()):
            break
        w = g + jtw
    return w, k, res


def adjoint_solve_cg_normal(vjp: Callable[[torch.Tensor], torch.Tensor], jvp: Callable[[torch.Tensor], torch.Tensor],
                            g: torch.Tensor, tol: float, max_iter: int) -> tuple[torch.Tensor, int, torch.Tensor]:
    """Conjugate gradients on ``(I - J)(I - J)^T w = (I - J) g`` (the paper's route).

    Squares the condition number, so it needs more products than the fixed-point
    route on a contraction; it also works when ``I - J`` is invertible but ``T`` is
    not contractive."""
    def apply_a(v: torch.Tensor) -> torch.Tensor:  # (I - J)(I - J)^T v
        u = v - vjp(v)
        return u - jvp(u)

    rhs = g - jvp(g)
    w, iters = conjugate_gradient(apply_a, rhs, x0=g.clone(), tol=tol, max_iter=max_iter)
    res = _bnorm(w - vjp(w) - g) / _bnorm(g).clamp_min(torch.finfo(g.dtype).tiny)
    return w, int(iters.max()), res


def attach(T: Callable[[torch.Tensor], torch.Tensor], z_star: torch.Tensor, mode: str = "jfb",
           neumann_k: int = 5, tol: float = 1e-6, max_iter: int = 200, solver: str = "fixed_point",
           stats: BackwardStats | None = None) -> torch.Tensor:
    """One recorded application of ``T`` at the fixed point, whose backward uses ``mode``.

    ``T`` must close over the parameters (and the data) whose gradients are wanted.
    Returns ``T(z_star)`` (equal to ``z_star`` up to the solver's tolerance). ``stats``
    is filled in during the backward pass.
    """
    if mode not in ("jfb", "ift", "neumann"):
        raise UserError(f"attach handles 'jfb', 'ift' and 'neumann', got {mode!r}")
    if solver not in IFT_SOLVERS:
        raise UserError(f"solver must be one of {IFT_SOLVERS}, got {solver!r}")
    if neumann_k < 0:
        raise UserError(f"neumann_k must be >= 0, got {neumann_k}")
    stats = stats if stats is not None else BackwardStats()
    z_star = z_star.detach()
    out = T(z_star)
    if mode == "jfb" or not out.requires_grad:
        stats.mode = mode
        return out
    z0 = z_star.clone().requires_grad_(True)
    with torch.enable_grad():
        f0 = T(z0)

    def vjp(v: torch.Tensor) -> torch.Tensor:  # J^T v
        (r,) = torch.autograd.grad(f0, z0, v, retain_graph=True)
        return r

    def jvp(v: torch.Tensor) -> torch.Tensor:  # J v, by the double-vjp trick
        u = torch.zeros_like(f0, requires_grad=True)
        (jtu,) = torch.autograd.grad(f0, z0, u, create_graph=True, retain_graph=True)
        (jv,) = torch.autograd.grad(jtu, u, v, retain_graph=True)
        return jv

    def hook(g: torch.Tensor | None) -> torch.Tensor | None:
        stats.mode = mode
        if g is None:  # an undefined gradient stays undefined
            return None
        with torch.enable_grad():
            if mode == "neumann":
                w, term = g.clone(), g
                for _ in range(neumann_k):
                    term = vjp(term)
                    w = w + term
                stats.iterations, stats.residual = neumann_k, []
                return w
            if solver == "fixed_point":
                w, iters, res = adjoint_solve_fixed_point(vjp, g, tol, max_iter)
            else:
                w, iters, res = adjoint_solve_cg_normal(vjp, jvp, g, tol, max_iter)
        stats.iterations, stats.residual = iters, res.tolist()
        return w

    out.register_hook(hook)
    return out


__all__ = ["BackwardStats", "GRAD_MODES", "IFT_SOLVERS", "adjoint_solve_cg_normal", "adjoint_solve_fixed_point",
           "attach"]
