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
``"ift"``       ``w`` from a linear solve: the fixed point of ``w -> g + J^T w`` by the
                forward pass's own solvers (plain iteration, which converges when ``T``
                is a contraction, or Anderson acceleration), or, as the paper did,
                conjugate gradients on the normal equations ``(I - J)(I - J)^T w = (I - J) g``;
``"unrolled"``  no fixed point: backpropagation through ``K`` recorded applications of ``T``
                from the starting point.

Note the right-hand side: the normal equations of ``(I - J)^T w = g`` are
``(I - J)(I - J)^T w = (I - J) g``. Writing ``g J^T`` (or ``J g``) on the right instead,
which drops the identity from ``I - J``, solves a different system.

Each mode is one :class:`Backward` strategy, built and validated once by
:func:`make_backward`. Its :meth:`Backward.run` does the whole forward pass (solve,
then attach; or unroll) and returns the output with the solve's result and a
:class:`BackwardStats` that the backward pass fills in. The first three attach through
a hook on one recorded application of ``T`` at the fixed point, so the forward solve
never records a graph; :func:`attach` is that step on its own.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, ClassVar

import torch

from jfb_core.config import GRAD_MODES
from jfb_core.errors import UserError
from jfb_core.solvers import SolverResult, conjugate_gradient, forward_solver

Map = Callable[[torch.Tensor], torch.Tensor]
Adjoint = Callable[[Map, Map, torch.Tensor], "tuple[torch.Tensor, int, list[float]]"]


@dataclass
class BackwardStats:
    """What a backward pass did: the mode, and for ``ift`` the products with ``J^T`` (or,
    for ``cg_normal``, CG iterations) and the final relative residual
    ``||(I - J)^T w - g|| / ||g||`` per sample; for ``neumann`` the ``k`` extra terms;
    for ``unrolled`` the ``K`` recorded steps. Filled in when the backward pass runs."""

    mode: str = ""
    iterations: int = 0
    residual: list[float] = field(default_factory=list)


def _bnorm(t: torch.Tensor) -> torch.Tensor:
    return t.flatten(1).norm(dim=1)


def _gnorm(g: torch.Tensor) -> torch.Tensor:
    return _bnorm(g).clamp_min(torch.finfo(g.dtype).tiny)


def adjoint_solve_fixed_point(vjp: Map, g: torch.Tensor, tol: float, max_iter: int,
                              method: str = "fixed_point") -> tuple[torch.Tensor, int, torch.Tensor]:
    """The fixed point of ``w -> g + J^T w``, i.e. ``(I - J)^T w = g``, by the forward pass's
    solvers (``method`` ``"fixed_point"`` or ``"anderson"``, as in
    :func:`jfb_core.solvers.forward_solver`), per-sample stopping at
    ``||(I - J)^T w - g|| <= tol ||g||``. Returns ``w``, the products with ``J^T`` and
    the residuals."""
    step = lambda w: g + vjp(w)  # noqa: E731
    r = forward_solver(method)(step, g, m=5, lam=1e-10, tol=tol, max_iter=max_iter, scale=_gnorm(g))
    return r.z, r.nfe, r.residual


def adjoint_solve_cg_normal(vjp: Map, jvp: Map, g: torch.Tensor, tol: float,
                            max_iter: int) -> tuple[torch.Tensor, int, torch.Tensor]:
    """Conjugate gradients on ``(I - J)(I - J)^T w = (I - J) g`` (the paper's route).

    Squares the condition number, so it needs more products than the fixed-point
    route on a contraction; it also works when ``I - J`` is invertible but ``T`` is
    not contractive."""
    def apply_a(v: torch.Tensor) -> torch.Tensor:  # (I - J)(I - J)^T v
        u = v - vjp(v)
        return u - jvp(u)

    rhs = g - jvp(g)
    w, iters = conjugate_gradient(apply_a, rhs, x0=g.clone(), tol=tol, max_iter=max_iter)
    return w, int(iters.max()), _bnorm(w - vjp(w) - g) / _gnorm(g)


#: IFT's adjoint solvers by name, one signature: ``(vjp, jvp, g, tol, max_iter) -> (w, products, residuals)``.
ADJOINT_SOLVERS: dict[str, Callable[..., "tuple[torch.Tensor, int, torch.Tensor]"]] = {
    "fixed_point": lambda vjp, jvp, g, tol, max_iter: adjoint_solve_fixed_point(vjp, g, tol, max_iter),
    "anderson": lambda vjp, jvp, g, tol, max_iter: adjoint_solve_fixed_point(vjp, g, tol, max_iter, "anderson"),
    "cg_normal": adjoint_solve_cg_normal,
}
IFT_SOLVERS = tuple(ADJOINT_SOLVERS)  #: the names of IFT's adjoint solvers (the command line's choices)


def _attach_hooked(T: Map, z_star: torch.Tensor, stats: BackwardStats, adjoint: Adjoint) -> torch.Tensor:
    """``T(z_star)`` recorded once, as a function of the parameters *and* of its input; its
    backward replaces the incoming ``g`` by ``adjoint(vjp, jvp, g)``'s ``w`` and records the
    adjoint's statistics in ``stats``. The products with ``J^T`` reuse that one graph (as
    torchdeq's hook does), so ``T`` is evaluated once, not once for the output and once more
    for the adjoint."""
    if not torch.is_grad_enabled():
        return T(z_star.detach())
    z0 = z_star.detach().clone().requires_grad_(True)
    f0 = T(z0)

    def vjp(v: torch.Tensor) -> torch.Tensor:  # J^T v
        (r,) = torch.autograd.grad(f0, z0, v, retain_graph=True)
        return r

    def jvp(v: torch.Tensor) -> torch.Tensor:  # J v, by the double-vjp trick
        with torch.enable_grad():
            u = torch.zeros_like(f0, requires_grad=True)
            (jtu,) = torch.autograd.grad(f0, z0, u, create_graph=True, retain_graph=True)
            (jv,) = torch.autograd.grad(jtu, u, v, retain_graph=True)
        return jv

    inside = [False]  # the products below backpropagate through f0 too: its hook must let them pass

    def hook(g: torch.Tensor | None) -> torch.Tensor | None:
        if g is None or inside[0]:  # an undefined gradient stays undefined; a product passes unchanged
            return g
        inside[0] = True
        try:
            with torch.enable_grad():
                w, stats.iterations, stats.residual = adjoint(vjp, jvp, g)
        finally:
            inside[0] = False
        return w

    f0.register_hook(hook)
    return f0


class Backward:
    """A backward mode: how the gradient passes through the fixed point. Chosen once
    (:func:`make_backward`); :meth:`run` is the model's whole forward pass."""

    name: ClassVar[str] = ""

    def attach(self, T: Map, z_star: torch.Tensor) -> tuple[torch.Tensor, BackwardStats]:
        """One recorded application of ``T`` at ``z_star`` whose backward is this mode's,
        and the statistics its backward pass will fill in. ``T`` must close over the
        parameters (and the data) whose gradients are wanted."""
        raise NotImplementedError

    def run(self, T: Map, z0: torch.Tensor,
            solve: Callable[[torch.Tensor], SolverResult]) -> tuple[torch.Tensor, SolverResult | None, BackwardStats]:
        """Solve from ``z0`` with ``solve`` (no graph), then attach: ``(T(z_star), result, stats)``."""
        result = solve(z0)
        out, stats = self.attach(T, result.z)
        return out, result, stats


@dataclass(frozen=True)
class JFB(Backward):
    """Eq. 4.1: ``w = g``; the backward pass is plain backpropagation through one ``T``."""

    name: ClassVar[str] = "jfb"

    def attach(self, T: Map, z_star: torch.Tensor) -> tuple[torch.Tensor, BackwardStats]:
        return T(z_star.detach()), BackwardStats(mode=self.name)


class _Hooked(Backward):
    """A mode that attaches through the hook of :func:`_attach_hooked`: it only says how to
    turn the incoming ``g`` into ``w`` (:meth:`adjoint`)."""

    def adjoint(self, vjp: Map, jvp: Map, g: torch.Tensor) -> tuple[torch.Tensor, int, list[float]]:
        """``(w, iterations, per-sample residuals)`` from ``g``, with products by ``J^T`` and ``J``."""
        raise NotImplementedError

    def attach(self, T: Map, z_star: torch.Tensor) -> tuple[torch.Tensor, BackwardStats]:
        stats = BackwardStats(mode=self.name)
        return _attach_hooked(T, z_star, stats, self.adjoint), stats


@dataclass(frozen=True)
class Neumann(_Hooked):
    """Eq. 4.2 truncated: ``w = sum_{j=0..k} (J^T)^j g`` (``k = 0`` is JFB)."""

    k: int = 5
    name: ClassVar[str] = "neumann"

    def __post_init__(self) -> None:
        if self.k < 0:
            raise UserError(f"neumann_k must be >= 0, got {self.k}")

    def adjoint(self, vjp: Map, jvp: Map, g: torch.Tensor) -> tuple[torch.Tensor, int, list[float]]:
        w, term = g.clone(), g
        for _ in range(self.k):
            term = vjp(term)
            w = w + term
        return w, self.k, []


@dataclass(frozen=True)
class IFT(_Hooked):
    """Eq. 3.10: ``w`` solves ``(I - J)^T w = g`` to relative residual ``tol`` with
    ``solver`` (one of ``IFT_SOLVERS``), at most ``max_iter`` iterations."""

    tol: float = 1e-4
    max_iter: int = 200
    solver: str = "fixed_point"
    name: ClassVar[str] = "ift"

    def __post_init__(self) -> None:
        if self.solver not in IFT_SOLVERS:
            raise UserError(f"backward_solver must be one of {IFT_SOLVERS}, got {self.solver!r}")
        if not self.tol > 0:
            raise UserError(f"backward_tol must be > 0 (IFT's adjoint tolerance), got {self.tol}")
        if self.max_iter < 1:
            raise UserError(f"backward_max_iter must be >= 1 (IFT's adjoint iterations), got {self.max_iter}")

    def adjoint(self, vjp: Map, jvp: Map, g: torch.Tensor) -> tuple[torch.Tensor, int, list[float]]:
        w, iters, res = ADJOINT_SOLVERS[self.solver](vjp, jvp, g, self.tol, self.max_iter)
        return w, iters, res.tolist()


@dataclass(frozen=True)
class Unrolled(Backward):
    """No fixed point: ``k`` recorded plain steps of ``T`` from the starting point, and
    backpropagation through all of them."""

    k: int = 20
    name: ClassVar[str] = "unrolled"

    def __post_init__(self) -> None:
        if self.k < 1:
            raise UserError(f"unroll_k must be >= 1, got {self.k}")

    def attach(self, T: Map, z_star: torch.Tensor) -> tuple[torch.Tensor, BackwardStats]:
        raise UserError("unrolled has no fixed point to attach to: it records its own steps (run)")

    def run(self, T: Map, z0: torch.Tensor,
            solve: Callable[[torch.Tensor], SolverResult]) -> tuple[torch.Tensor, None, BackwardStats]:
        z = z0
        for _ in range(self.k):
            z = T(z)
        return z, None, BackwardStats(mode=self.name, iterations=self.k)


def make_backward(mode: str = "jfb", *, neumann_k: int | None = None, unroll_k: int | None = None,
                  tol: float | None = None, max_iter: int | None = None, solver: str | None = None) -> Backward:
    """The strategy for ``mode`` (one of ``GRAD_MODES``); an option not given takes the
    default of the strategy that owns it (:class:`Neumann`, :class:`Unrolled`, :class:`IFT`:
    the only place each default is written). Every option is checked, also those only
    another mode uses (a mistyped solver fails even with ``mode="jfb"``)."""
    def given(**options):
        return {k: v for k, v in options.items() if v is not None}

    strategies = {"jfb": JFB(), "neumann": Neumann(**given(k=neumann_k)), "unrolled": Unrolled(**given(k=unroll_k)),
                  "ift": IFT(**given(tol=tol, max_iter=max_iter, solver=solver))}
    if mode not in strategies:
        raise UserError(f"grad_mode must be one of {GRAD_MODES}, got {mode!r}")
    return strategies[mode]


def attach(T: Map, z_star: torch.Tensor, mode: str = "jfb", **options) -> tuple[torch.Tensor, BackwardStats]:
    """One recorded application of ``T`` at the fixed point, whose backward uses ``mode``
    (``jfb``, ``ift`` or ``neumann``) with :func:`make_backward`'s ``options``:
    ``(T(z_star), stats)``, the statistics filled in during the backward pass."""
    return make_backward(mode, **options).attach(T, z_star)


__all__ = ["ADJOINT_SOLVERS", "Backward", "BackwardStats", "GRAD_MODES", "IFT", "IFT_SOLVERS", "JFB", "Neumann", "Unrolled",
           "adjoint_solve_cg_normal", "adjoint_solve_fixed_point", "attach", "make_backward"]
