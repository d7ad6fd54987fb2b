"""Regularisers R(x) for eq. (3.2): total variation, smoothed (with its gradient) or
exact (with its proximal operator). Tikhonov's regulariser needs no code of its own:
its solve is :func:`jfb_core.baselines.tikhonov`.

All functions act on batches ``(B, C, H, W)`` and return one value per image
(shape ``(B,)``) or a gradient of the same shape as ``x``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from jfb_core.errors import UserError


def image_gradient(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Forward differences with a zero difference across the last row/column
    (Neumann boundary): ``(dx, dy)``, each of the shape of ``x``."""
    dx = torch.zeros_like(x)
    dy = torch.zeros_like(x)
    dx[..., :, :-1] = x[..., :, 1:] - x[..., :, :-1]
    dy[..., :-1, :] = x[..., 1:, :] - x[..., :-1, :]
    return dx, dy


def divergence(px: torch.Tensor, py: torch.Tensor) -> torch.Tensor:
    """``div = -grad^T``: the negative adjoint of :func:`image_gradient`."""
    d = torch.zeros_like(px)
    d[..., :, :-1] += px[..., :, :-1]
    d[..., :, 1:] -= px[..., :, :-1]
    d[..., :-1, :] += py[..., :-1, :]
    d[..., 1:, :] -= py[..., :-1, :]
    return d


#: ``||grad||^2 <= 8`` for the forward-difference gradient in 2-D.
GRADIENT_NORM_SQ = 8.0


def tv(x: torch.Tensor, delta: float = 1e-2) -> torch.Tensor:
    """Smoothed isotropic total variation, per image:
    ``R(x) = sum_{c,i,j} sqrt(dx^2 + dy^2 + delta^2) - delta`` (zero for a constant image).

    ``delta > 0`` makes R differentiable; as ``delta -> 0`` it tends to the TV of
    Rudin, Osher and Fatemi (1992).
    """
    if not delta > 0:
        raise UserError(f"delta must be positive, got {delta}")
    dx, dy = image_gradient(x)
    return (torch.sqrt(dx**2 + dy**2 + delta**2) - delta).flatten(1).sum(1)


def tv_grad(x: torch.Tensor, delta: float = 1e-2) -> torch.Tensor:
    """Gradient of :func:`tv` with respect to ``x``: ``-div(grad x / sqrt(|grad x|^2 + delta^2))``.

    It is Lipschitz with constant at most ``8 / delta`` (see :data:`GRADIENT_NORM_SQ`).
    """
    if not delta > 0:
        raise UserError(f"delta must be positive, got {delta}")
    dx, dy = image_gradient(x)
    w = torch.rsqrt(dx**2 + dy**2 + delta**2)
    return -divergence(dx * w, dy * w)


def tv_lipschitz(delta: float) -> float:
    """An upper bound on the Lipschitz constant of :func:`tv_grad`."""
    return GRADIENT_NORM_SQ / delta


def tv_exact(x: torch.Tensor) -> torch.Tensor:
    """Isotropic total variation without smoothing, per image:
    ``TV(x) = sum_{c,i,j} sqrt(dx^2 + dy^2)`` (the limit of :func:`tv` as ``delta -> 0``)."""
    dx, dy = image_gradient(x)
    return torch.sqrt(dx**2 + dy**2).flatten(1).sum(1)


def _project_unit(px: torch.Tensor, py: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Project each pixel's pair ``(px, py)`` onto the unit disc."""
    scale = torch.sqrt(px**2 + py**2).clamp_min(1.0)
    return px / scale, py / scale


@dataclass
class TVProx:
    """Output of :func:`tv_prox`: ``x = v + tau div p`` and the dual field ``p = (px, py)``
    (reuse it as ``p0`` to warm-start the next call); ``gap`` is the duality gap per image
    (``>= 0``; zero exactly at the proximal point) when it was asked for, else ``None``."""

    x: torch.Tensor
    p: tuple[torch.Tensor, torch.Tensor]
    gap: torch.Tensor | None = None


def tv_prox(v: torch.Tensor, tau: float, iterations: int = 50,
            p0: tuple[torch.Tensor, torch.Tensor] | None = None, gap: bool = False,
            box: tuple[float, float] | None = None) -> TVProx:
    """``prox_{tau TV}(v) = argmin_x 1/2 ||x - v||^2 + tau TV(x)`` (exact, unsmoothed TV).

    Since ``TV(x) = max_{|p_ij| <= 1} <x, -div p>``, the minimiser is ``x = v + tau div p``
    with ``p`` minimising ``1/2 ||v + tau div p||^2`` over the unit discs. That dual
    problem is solved by projected gradient with Nesterov momentum (the fast gradient
    projection of Beck and Teboulle, 2009), step ``1 / (8 tau^2)`` (``||div||^2 <= 8``),
    for ``iterations`` steps. ``gap=True`` also returns the duality gap
    ``P(x) - D(p)``, a certificate: ``P(x) - P(x_exact) <= gap``.

    ``box = (a, b)`` adds the constraint ``a <= x <= b`` (Beck and Teboulle's constrained
    denoising): ``x(p) = clip(v + tau div p, a, b)`` replaces ``v + tau div p`` in the dual
    steps and in the answer. The duality gap above is for the unconstrained problem, so
    ``gap=True`` needs ``box=None``.
    """
    if tau < 0:
        raise UserError(f"tau must be >= 0, got {tau}")
    if iterations < 1:
        raise UserError(f"iterations must be at least 1, got {iterations}")
    if box is not None and gap:
        raise UserError("the duality gap of tv_prox is for the problem without a box: pass box=None")
    if box is not None and not box[0] < box[1]:
        raise UserError(f"box must be (low, high) with low < high, got {box}")

    def x_of(p: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        x = v + tau * divergence(*p)
        return x if box is None else x.clamp(box[0], box[1])

    if p0 is None:
        p0 = (torch.zeros_like(v), torch.zeros_like(v))
    p, q, t = p0, p0, 1.0
    if tau > 0:
        step = 1.0 / (GRADIENT_NORM_SQ * tau)
        for _ in range(iterations):
            gx, gy = image_gradient(x_of(q))
            p_new = _project_unit(q[0] + step * gx, q[1] + step * gy)
            t_new = 0.5 * (1.0 + math.sqrt(1.0 + 4.0 * t * t))
            w = (t - 1.0) / t_new
            q = (p_new[0] + w * (p_new[0] - p[0]), p_new[1] + w * (p_new[1] - p[1]))
            p, t = p_new, t_new
    x = x_of(p)
    certificate = None
    if gap:
        primal = 0.5 * ((x - v) ** 2).flatten(1).sum(1) + tau * tv_exact(x)
        dual = 0.5 * (v**2).flatten(1).sum(1) - 0.5 * (x**2).flatten(1).sum(1)
        certificate = primal - dual
    return TVProx(x=x, p=p, gap=certificate)


__all__ = ["GRADIENT_NORM_SQ", "TVProx", "divergence", "image_gradient",
           "tv", "tv_exact", "tv_grad", "tv_lipschitz", "tv_prox"]
