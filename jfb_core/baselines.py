"""Classical reconstructions of x from d = A x + eps (paper Sec. 3.2).

* :func:`direct_inverse`: ``A^{-1} d``, the naive answer that noise ruins.
* :func:`tikhonov`: ``argmin 1/2 ||A x - d||^2 + lam/2 ||x||^2`` (Wiener-like).
* :func:`tv_gradient_descent`: eq. (3.3) with a smoothed total variation.
* :func:`tv_fista`: the same problem with the exact (unsmoothed) total variation,
  by FISTA with an inner dual solve of TV's proximal map: the strongest TV baseline.
* :func:`tune_weight`: pick a regularisation weight on a *validation* split.

All act on batches ``(B, C, H, W)`` and treat every image independently.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Sequence

import torch

from jfb_core.metrics import psnr
from jfb_core.operators import LinearOperator
from jfb_core.solvers import conjugate_gradient
from jfb_core.regularizers import divergence, image_gradient, tv, tv_exact, tv_grad, tv_lipschitz, tv_prox
from jfb_core.errors import UserError

#: The box of :func:`tv_fista`: pixel values of images in [0, 1] with a margin of 1/2.
TV_BOX = (-0.5, 1.5)


def direct_inverse(A: LinearOperator, d: torch.Tensor, max_iter: int = 200,
                   tol: float = 1e-8) -> torch.Tensor:
    """``A^{-1} d`` (least squares, no regularisation).

    Circular padding: exact, by division in the Fourier domain (``A`` is
    diagonalised by the FFT). Other paddings: conjugate gradients on the normal
    equations ``A^T A x = A^T d``, started at zero and stopped after ``max_iter``
    iterations or at relative residual ``tol``. Because ``A^T A`` is nearly
    singular, more iterations fit more noise: the iteration count acts as an
    (implicit) regulariser, which is why ``max_iter`` is part of the answer.
    """
    if A.padding == "circular":
        h = A.transfer_function(*d.shape[-2:], dtype=torch.float64).to(d.device)
        x = torch.fft.ifft2(torch.fft.fft2(d.double()) / h).real
        return x.to(d.dtype)
    x, _ = conjugate_gradient(A.normal, A.adjoint(d), tol=tol, max_iter=max_iter)
    return x


def tikhonov(A: LinearOperator, d: torch.Tensor, lam: float, max_iter: int = 500,
             tol: float = 1e-6) -> torch.Tensor:
    """``argmin_x 1/2 ||A x - d||^2 + lam/2 ||x||^2 = (A^T A + lam I)^{-1} A^T d``.

    Circular padding: exact, ``X = conj(H) D / (|H|^2 + lam)`` in the Fourier domain
    (the Wiener filter for white signal and noise spectra). Otherwise conjugate
    gradients, which converge quickly because ``lam`` bounds the condition number.
    """
    if not lam > 0:
        raise UserError(f"lam must be positive, got {lam}")
    if A.padding == "circular":
        h = A.transfer_function(*d.shape[-2:], dtype=torch.float64).to(d.device)
        x = torch.fft.ifft2(h * torch.fft.fft2(d.double()) / (h**2 + lam)).real
        return x.to(d.dtype)
    x, _ = conjugate_gradient(lambda v: A.normal(v) + lam * v, A.adjoint(d), tol=tol, max_iter=max_iter)
    return x


def tv_objective(A: LinearOperator, d: torch.Tensor, x: torch.Tensor, lam: float,
                 delta: float = 1e-2) -> torch.Tensor:
    """Per image: ``1/2 ||A x - d||^2 + lam * TV_delta(x)`` (eq. 3.2 with R = smoothed TV)."""
    return 0.5 * ((A(x) - d) ** 2).flatten(1).sum(1) + lam * tv(x, delta)


@dataclass
class TVResult:
    """Output of :func:`tv_gradient_descent`.

    ``iterations`` is per image. ``objective`` has shape ``(K + 1, B)``, one row per
    iterate ``x^k``, when the run was asked to ``track`` it, else ``(2, B)`` (first
    and last iterate); ``psnr`` (only when the ground truth was given) has shape
    ``(K + 1, B)``. Rows after an image stopped repeat its final value. ``gap`` (from
    :func:`tv_fista` only) is the duality gap per image of the final iterate.
    """

    x: torch.Tensor
    iterations: torch.Tensor
    step: float
    objective: torch.Tensor
    psnr: torch.Tensor | None = None
    converged: torch.Tensor = field(default_factory=lambda: torch.zeros(0, dtype=torch.bool))
    gap: torch.Tensor | None = None


def tv_gradient_descent(A: LinearOperator, d: torch.Tensor, lam: float, delta: float = 1e-2,
                        step: float | None = None, max_iter: int = 300, tol: float = 1e-5,
                        x0: torch.Tensor | None = None, x_true: torch.Tensor | None = None,
                        momentum: bool = False, L: float | None = None, track: bool = False) -> TVResult:
    """Gradient descent on ``1/2 ||A x - d||^2 + lam * TV_delta(x)``: eq. (3.3),

        ``x^{k+1} = x^k - step * (A^T (A x^k - d) + lam * grad TV_delta(x^k))``.

    The objective's gradient is Lipschitz with constant ``L + lam * 8 / delta``
    (``L = lambda_max(A^T A)``); the default ``step`` is its inverse, for which
    every step decreases the objective. Image ``i`` stops when
    ``||x^{k+1} - x^k|| <= tol * ||x^k||`` (early stopping) or after ``max_iter``.
    ``x0`` defaults to ``A^T d``, as in the paper. ``momentum=True`` uses Nesterov's
    accelerated gradient (faster, not monotone). ``track=True`` records the
    objective of every iterate (it costs one more blur per step); passing ``x_true``
    records the PSNR of every iterate (to see semi-convergence). Neither changes the
    result.
    """
    if lam < 0:
        raise UserError(f"lam must be >= 0, got {lam}")
    if L is None:
        L = A.eigenvalue_bounds(*d.shape[-2:]).L
    lip = L + lam * tv_lipschitz(delta)
    if step is None:
        step = 1.0 / lip
    if not step > 0:
        raise UserError(f"step must be positive, got {step}")
    x = A.adjoint(d) if x0 is None else x0.clone()
    y = x.clone()
    B = d.shape[0]
    active = torch.ones(B, dtype=torch.bool, device=d.device)
    iters = torch.zeros(B, dtype=torch.long, device=d.device)
    objective = [tv_objective(A, d, x, lam, delta)]
    psnrs = [psnr(x, x_true, reduction="none")] if x_true is not None else None
    t = 1.0
    for _ in range(max_iter):
        grad = A.adjoint(A(y) - d) + lam * tv_grad(y, delta)
        x_new = y - step * grad
        if momentum:
            t_new = 0.5 * (1.0 + math.sqrt(1.0 + 4.0 * t * t))
            y_new = x_new + ((t - 1.0) / t_new) * (x_new - x)
            t = t_new
        else:
            y_new = x_new
        x, y, active = _advance(active, iters, x, y, x_new, y_new, tol)
        if track:
            objective.append(tv_objective(A, d, x, lam, delta))
        if psnrs is not None:
            psnrs.append(psnr(x, x_true, reduction="none"))
        if not bool(active.any()):
            break
    if not track:
        objective.append(tv_objective(A, d, x, lam, delta))
    return TVResult(
        x=x, iterations=iters, step=float(step), objective=torch.stack(objective),
        psnr=torch.stack(psnrs) if psnrs is not None else None, converged=~active,
    )


def _advance(active: torch.Tensor, iters: torch.Tensor, x: torch.Tensor, y: torch.Tensor, x_new: torch.Tensor,
             y_new: torch.Tensor, tol: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One step of the TV solvers for the images still running: take ``x_new``, ``y_new`` where
    ``active``, count the step in ``iters`` (in place), and stop each image whose relative change
    ``||x_new - x|| / ||x||`` fell to ``tol``. Returns ``(x, y, active)``."""
    change = (x_new - x).flatten(1).norm(dim=1)
    moving = change > tol * x.flatten(1).norm(dim=1).clamp_min(torch.finfo(x.dtype).tiny)
    m = active.view((-1,) + (1,) * (x.dim() - 1))
    iters += active.long()
    return torch.where(m, x_new, x), torch.where(m, y_new, y), active & moving


def tv_fista(A: LinearOperator, d: torch.Tensor, lam: float, max_iter: int = 300, tol: float = 1e-5,
             inner_iter: int = 10, x0: torch.Tensor | None = None, L: float | None = None,
             gap_tol: float | None = None, box: tuple[float, float] = TV_BOX, check_every: int = 10) -> TVResult:
    """FISTA (Beck and Teboulle, 2009) on ``1/2 ||A x - d||^2 + lam * TV(x)`` with the exact TV:

        ``x^{k+1} = prox_{lam TV / L}(y^k - A^T (A y^k - d) / L)``, ``y`` the momentum point,

    ``L = lambda_max(A^T A)``, over the images with ``box[0] <= x <= box[1]`` (a wide box
    around [0, 1] that the answers do not touch; it makes the duality gap finite, see
    :func:`tv_exact_gap`). TV's proximal map has no closed form; each outer step runs
    ``inner_iter`` steps of its dual solver (:func:`jfb_core.regularizers.tv_prox`),
    warm-started from the previous step's dual field, so the inner solves get more
    accurate as the outer iterates settle.

    Stops per image after ``max_iter`` steps, or: with ``gap_tol``, once its duality gap
    is at most ``gap_tol`` times its objective (checked every ``check_every`` steps);
    without, as :func:`tv_gradient_descent` does (relative change below ``tol``).
    ``objective`` holds the exact objective at ``x0`` and at the result, ``gap`` the
    final duality gap per image (an upper bound on how far the objective is above its
    minimum).
    """
    if lam < 0:
        raise UserError(f"lam must be >= 0, got {lam}")
    if gap_tol is not None and not gap_tol > 0:
        raise UserError(f"gap_tol must be positive, got {gap_tol}")
    if L is None:
        L = A.eigenvalue_bounds(*d.shape[-2:]).L
    x = (A.adjoint(d) if x0 is None else x0.clone()).clamp(*box)
    y, p, t = x.clone(), None, 1.0
    active = torch.ones(d.shape[0], dtype=torch.bool, device=d.device)
    iters = torch.zeros_like(active, dtype=torch.long)
    objective = [tv_objective_exact(A, d, x, lam)]
    for k in range(max_iter):
        prox = tv_prox(y - A.adjoint(A(y) - d) / L, lam / L, iterations=inner_iter, p0=p, box=box)
        m = active.view(-1, *([1] * (d.dim() - 1)))  # a stopped image keeps its x, y and p
        p = prox.p if p is None else (torch.where(m, prox.p[0], p[0]), torch.where(m, prox.p[1], p[1]))
        t_new = 0.5 * (1.0 + math.sqrt(1.0 + 4.0 * t * t))
        y_new = prox.x + ((t - 1.0) / t_new) * (prox.x - x)
        t = t_new
        x, y, active = _advance(active, iters, x, y, prox.x, y_new, 0.0 if gap_tol is not None else tol)
        if gap_tol is not None and (k + 1) % check_every == 0:
            active &= tv_exact_gap(A, d, x, lam, p, box) > gap_tol * tv_objective_exact(A, d, x, lam)
        if not bool(active.any()):
            break
    objective.append(tv_objective_exact(A, d, x, lam))
    gap = tv_exact_gap(A, d, x, lam, p, box) if p is not None else None
    return TVResult(x=x, iterations=iters, step=1.0 / float(L), objective=torch.stack(objective),
                    converged=~active, gap=gap)


def tv_exact_gap(A: LinearOperator, d: torch.Tensor, x: torch.Tensor, lam: float,
                 p: tuple[torch.Tensor, torch.Tensor], box: tuple[float, float] = TV_BOX) -> torch.Tensor:
    """Duality gap per image of ``min_{a <= x <= b} 1/2 ||A x - d||^2 + lam TV(x)`` at ``x``.

    Writing both terms as maxima, ``1/2 ||r||^2 = max_u <r, u> - 1/2 ||u||^2`` and
    ``TV(x) = max_{|p_ij| <= 1} <grad x, p>``, every ``u`` and every field ``p`` in the
    unit discs give a lower bound on the minimum,
    ``D(u, p) = -<d, u> - 1/2 ||u||^2 + sum_i min_{a <= z <= b} z c_i`` with
    ``c = A^T u - lam div p``. With ``u = A x - d`` the gap ``P(x) - D(u, p)`` is

        ``lam * sum (|grad x| - <p, grad x>) + sum_i (c_i x_i - min(a c_i, b c_i))``,

    two sums of non-negative terms for ``x`` in the box, both zero at the minimiser with its
    optimal ``p``. The box is what keeps the second sum finite: without it, ``D`` is
    ``-infinity`` unless ``c = 0`` exactly. ``x`` outside the box gives ``inf``.
    """
    a, b = box
    gx, gy = image_gradient(x)
    c = A.adjoint(A(x) - d) - lam * divergence(*p)
    tv_part = lam * (torch.sqrt(gx**2 + gy**2) - (p[0] * gx + p[1] * gy)).flatten(1).sum(1)
    box_part = (c * x - torch.minimum(a * c, b * c)).flatten(1).sum(1)
    outside = ((x < a) | (x > b)).flatten(1).any(1)
    return torch.where(outside, torch.full_like(tv_part, math.inf), tv_part + box_part)


def tv_objective_exact(A: LinearOperator, d: torch.Tensor, x: torch.Tensor, lam: float) -> torch.Tensor:
    """Per image: ``1/2 ||A x - d||^2 + lam * TV(x)`` with the exact (unsmoothed) TV."""
    return 0.5 * ((A(x) - d) ** 2).flatten(1).sum(1) + lam * tv_exact(x)


@dataclass
class TuningResult:
    """The weight with the best mean PSNR on the validation images, and the whole table."""

    best: float | list[float]
    weights: list[float | list[float]]
    psnr: list[float]


def tune_weight(reconstruct: Callable[[float], torch.Tensor], x_val: torch.Tensor,
                weights: Sequence[float], progress: Callable[[str], None] | None = None) -> TuningResult:
    """Choose a regularisation weight by mean PSNR on a validation split.

    ``reconstruct(w)`` returns the reconstructions of the validation measurements
    for weight ``w`` (a number, or a tuple of settings for a method with several, such
    as Plug-and-Play's step and denoiser strength). Never pass test images here: a
    weight tuned on the test split makes the test score optimistic. ``progress``, if
    given, receives one line per weight tried.
    """
    if not weights:
        raise UserError("give at least one weight to try")
    scores = []
    for i, w in enumerate(weights):
        scores.append(float(psnr(reconstruct(w), x_val)))
        if progress is not None:
            progress(f"{i + 1}/{len(weights)}: {_plain(w)} -> {scores[-1]:.2f} dB")
    best = max(range(len(weights)), key=lambda i: scores[i])
    return TuningResult(best=_plain(weights[best]), weights=[_plain(w) for w in weights], psnr=scores)


def _plain(w):
    """A weight as JSON-ready numbers: a float, or a list of floats for a tuple of settings."""
    return [float(v) for v in w] if isinstance(w, (tuple, list)) else float(w)


def pnp_pgd(A: LinearOperator, d: torch.Tensor, denoiser: Callable[[torch.Tensor], torch.Tensor], step: float = 1.0,
            max_iter: int = 50, tol: float = 1e-4, x0: torch.Tensor | None = None,
            strength: float = 1.0, stats: dict | None = None) -> torch.Tensor:
    """Plug-and-Play proximal gradient: ``x <- D_a(x - step * A^T (A x - d))``, from ``A^T d``.

    ``D`` is a learned denoiser in place of the proximal map of a regulariser
    (Venkatakrishnan et al.). ``strength`` ``a`` in (0, 1] relaxes it,
    ``D_a(z) = z + a (D(z) - z)``: a denoiser trained at one noise level is too strong
    for the much smaller error left by one gradient step, and ``a < 1`` weakens it.
    With ``step <= 2 / L`` the gradient step is non-expansive, and if ``Lip(D) = e < 1``
    then ``Lip(D_a) <= 1 - a (1 - e) < 1``, so the whole map stays a contraction
    (more slowly for small ``a``). Stops when every sample's relative change is below ``tol``.
    A ``stats`` dict, if given, receives ``iterations`` (run) and ``converged`` (how many
    samples met ``tol``): with ``max_iter`` reached the result is an early stop, not the
    fixed point.
    """
    if not 0 < strength <= 1:
        raise UserError(f"strength must be in (0, 1], got {strength}")
    if max_iter < 1:
        raise UserError(f"max_iter must be >= 1, got {max_iter}")
    x = A.adjoint(d) if x0 is None else x0
    with torch.no_grad():
        for k in range(1, max_iter + 1):
            z = x - step * A.adjoint(A(x) - d)
            x_new = denoiser(z) if strength == 1 else z + strength * (denoiser(z) - z)
            change = (x_new - x).flatten(1).norm(dim=1) / x_new.flatten(1).norm(dim=1).clamp_min(1e-12)
            x = x_new
            if bool((change <= tol).all()):
                break
    if stats is not None:
        stats.update(iterations=k, converged=int((change <= tol).sum()))
    return x


__all__ = ["pnp_pgd", "TVResult", "TuningResult", "direct_inverse", "tikhonov", "tune_weight",
           "TV_BOX", "tv_exact_gap", "tv_fista", "tv_gradient_descent", "tv_objective", "tv_objective_exact"]
