"""Regularisers R(x) for eq. (3.2): smoothed total variation and Tikhonov.

All functions act on batches ``(B, C, H, W)`` and return one value per image
(shape ``(B,)``) or a gradient of the same shape as ``x``.
"""

from __future__ import annotations

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


def tikhonov(x: torch.Tensor) -> torch.Tensor:
    """``R(x) = 1/2 ||x||^2`` per image; its gradient is ``x``."""
    return 0.5 * (x**2).flatten(1).sum(1)


def tikhonov_grad(x: torch.Tensor) -> torch.Tensor:
    return x


__all__ = ["GRADIENT_NORM_SQ", "divergence", "image_gradient", "tikhonov", "tikhonov_grad",
           "tv", "tv_grad", "tv_lipschitz"]
