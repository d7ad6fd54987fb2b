"""The forward model d = A x + eps (paper eq. 3.1): Gaussian blur, its adjoint, spectrum, noise.

Conventions
-----------
* Images are batches ``(B, C, H, W)`` with values in [0, 1].
* ``A(x)`` blurs each channel with the same normalised Gaussian kernel and returns
  an image of the same size ("same" convolution). What happens at the border is
  the *padding mode*: ``"zeros"`` (the image is zero outside its frame),
  ``"circular"`` (periodic) or ``"reflect"`` (mirrored without repeating the edge).
* ``A.adjoint(y)`` is the exact adjoint for every mode, written out explicitly
  (transposed convolution followed by the adjoint of the padding), not obtained
  by autograd: ``<A x, y> = <x, A.adjoint(y)>`` holds to rounding error.
* ``L = lambda_max(A^T A)`` and ``mu = lambda_min(A^T A)`` for one channel of an
  ``H x W`` image (the channels are independent copies of the same operator).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import torch
import torch.nn as nn
import torch.nn.functional as F

from jfb_core.errors import UserError
from jfb_core.solvers import conjugate_gradient, inverse_iteration, power_iteration  # re-exported here

PADDINGS = ("zeros", "circular", "reflect")  #: the blur's boundary condition


@dataclass(frozen=True)
class BlurSetting:
    """A Gaussian blur: odd ``kernel_size``, standard deviation ``sigma`` in pixels."""

    kernel_size: int
    sigma: float
    description: str = ""

    def __post_init__(self) -> None:
        if self.kernel_size < 1 or self.kernel_size % 2 == 0:
            raise UserError(f"kernel_size must be a positive odd integer, got {self.kernel_size}")
        if not self.sigma > 0:
            raise UserError(f"sigma must be positive, got {self.sigma}")


#: The three blur settings met in the paper and in the work its Table 2 quotes.
BLURS: dict[str, BlurSetting] = {
    # Section 5.1 (training, Fig. 1, Table 1): 5x5 kernel, variance 1.
    "5x5_s1": BlurSetting(5, 1.0, "5x5 kernel, sigma = 1 (paper Sec. 5.1, training)"),
    # Section 5.2 (Table 2 comparison): 9x9 kernel, variance 5, i.e. sigma = sqrt(5).
    "9x9_var5": BlurSetting(9, math.sqrt(5.0), "9x9 kernel, variance 5 (paper Sec. 5.2, Table 2)"),
    # Gilton et al.'s public code, whose numbers Table 2 quotes: 5x5 kernel, sigma = 5.
    "5x5_s5": BlurSetting(5, 5.0, "5x5 kernel, sigma = 5 (Gilton et al.'s code)"),
}


@runtime_checkable
class LinearOperator(Protocol):
    """What the models, baselines and data need of a forward operator ``A`` (a
    :class:`GaussianBlur` is one): applying it, its adjoint, the normal operator
    ``A^T A``, the proximal solve ``(A^T A + rho I)^{-1} r`` of the data term, bounds on
    the spectrum of ``A^T A``, and its boundary condition."""

    padding: str

    def __call__(self, x: torch.Tensor) -> torch.Tensor: ...

    def adjoint(self, y: torch.Tensor) -> torch.Tensor: ...

    def normal(self, x: torch.Tensor) -> torch.Tensor: ...

    def shifted_normal_solve(self, r: torch.Tensor, rho: torch.Tensor | float, x0: torch.Tensor | None = None,
                             tol: float = 1e-5, max_iter: int = 300) -> torch.Tensor: ...

    def eigenvalue_bounds(self, height: int, width: int) -> "Spectrum": ...


def gaussian_kernel1d(kernel_size: int, sigma: float, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """Sampled 1-D Gaussian ``exp(-t^2 / (2 sigma^2))`` on ``t = -r..r``, normalised to sum 1."""
    if kernel_size < 1 or kernel_size % 2 == 0:
        raise UserError(f"kernel_size must be a positive odd integer, got {kernel_size}")
    if not sigma > 0:
        raise UserError(f"sigma must be positive, got {sigma}")
    r = kernel_size // 2
    t = torch.arange(-r, r + 1, dtype=torch.float64)
    k = torch.exp(-(t**2) / (2.0 * sigma**2))
    return (k / k.sum()).to(dtype)


def gaussian_kernel2d(kernel_size: int, sigma: float, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """The separable 2-D kernel ``k k^T`` of shape ``(kernel_size, kernel_size)``, summing to 1."""
    k = gaussian_kernel1d(kernel_size, sigma, dtype)
    return torch.outer(k, k)


def _pad_adjoint_1d(y: torch.Tensor, p: int, mode: str, dim: int) -> torch.Tensor:
    """Adjoint of padding ``p`` entries on both ends of dimension ``dim``."""
    n = y.shape[dim] - 2 * p
    core = y.narrow(dim, p, n).clone()
    if p == 0 or mode == "zeros":
        return core
    left = y.narrow(dim, 0, p)  # padded entries before the frame
    right = y.narrow(dim, p + n, p)  # padded entries after the frame
    if mode == "circular":
        # padded[j] = x[n - p + j] (left), padded[p + n + j] = x[j] (right)
        core.narrow(dim, n - p, p).add_(left)
        core.narrow(dim, 0, p).add_(right)
        return core
    if mode == "reflect":
        # padded[j] = x[p - j] (left), padded[p + n + j] = x[n - 2 - j] (right)
        core.narrow(dim, 1, p).add_(left.flip(dim))
        core.narrow(dim, n - 1 - p, p).add_(right.flip(dim))
        return core
    raise UserError(f"unknown padding {mode!r}")


def _correlate_valid(z: torch.Tensor, taps: list[float], dim: int) -> torch.Tensor:
    """``out[i] = sum_t taps[t] * z[i + t]`` along ``dim`` ('valid': ``len(taps) - 1`` shorter).

    Written as a sum of shifted slices: on a CPU this is several times faster than
    PyTorch's grouped (depthwise) convolution for kernels this small."""
    n = z.shape[dim] - len(taps) + 1
    out = z.narrow(dim, 0, n) * taps[0]
    for t in range(1, len(taps)):
        out.add_(z.narrow(dim, t, n), alpha=taps[t])
    return out


def _correlate_valid_adjoint(y: torch.Tensor, taps: list[float], dim: int) -> torch.Tensor:
    """Adjoint of :func:`_correlate_valid`: ``out[i + t] += taps[t] * y[i]`` (``len(taps) - 1`` longer)."""
    n = y.shape[dim]
    shape = list(y.shape)
    shape[dim] = n + len(taps) - 1
    out = y.new_zeros(shape)
    for t, w in enumerate(taps):
        out.narrow(dim, t, n).add_(y, alpha=w)
    return out


class GaussianBlur(nn.Module):
    """Gaussian blur ``A`` on ``(B, C, H, W)`` images with an exact adjoint.

    Parameters
    ----------
    kernel_size, sigma:
        An odd kernel width and the standard deviation in pixels. The paper uses
        ``(5, 1.0)`` for training and ``(9, sqrt(5))`` (variance 5) for Table 2.
    channels:
        Number of image channels; each is blurred independently.
    padding:
        ``"zeros"``, ``"circular"`` or ``"reflect"`` (see the module docstring).

    The blur is applied as two 1-D correlations (the kernel is separable and
    symmetric), which equals the 2-D convolution with :func:`gaussian_kernel2d` to
    rounding error.
    """

    def __init__(self, kernel_size: int, sigma: float, channels: int = 3, padding: str = "zeros") -> None:
        super().__init__()
        if padding not in PADDINGS:
            raise UserError(f"padding must be one of {PADDINGS}, got {padding!r}")
        if channels < 1:
            raise UserError(f"channels must be >= 1, got {channels}")
        self.kernel_size = int(kernel_size)
        self.sigma = float(sigma)
        self.channels = int(channels)
        self.padding = padding
        self.radius = self.kernel_size // 2
        k1 = gaussian_kernel1d(self.kernel_size, self.sigma)  # float64 master copy
        # The blur runs on Python-float taps (so it works on any device and dtype unchanged);
        # the kernel is also a buffer, so that it moves with ``.to(device)`` and shows in the
        # module tree. Not persistent: a DE-GRAD state dict holds the network, not the blur.
        self._tap_values = [float(v) for v in k1]
        self.register_buffer("kernel1d", k1, persistent=False)

    def extra_repr(self) -> str:
        return (f"kernel_size={self.kernel_size}, sigma={self.sigma:g}, "
                f"channels={self.channels}, padding={self.padding!r}")

    def _k1(self) -> torch.Tensor:
        """The 1-D kernel in float64 on the CPU, whatever device or dtype the module was moved to."""
        return torch.tensor(self._tap_values, dtype=torch.float64)

    @property
    def kernel(self) -> torch.Tensor:
        """The 2-D kernel (float64)."""
        k1 = self._k1()
        return torch.outer(k1, k1)

    def _check(self, x: torch.Tensor) -> None:
        if x.dim() != 4 or x.shape[1] != self.channels:
            raise UserError(f"expected a (B, {self.channels}, H, W) tensor, got shape {tuple(x.shape)}")
        if not x.is_floating_point():
            raise TypeError(f"expected a floating-point tensor, got {x.dtype}")
        if self.padding != "zeros" and min(x.shape[-2:]) <= self.radius:
            raise UserError(f"{self.padding} padding needs H, W > {self.radius}, got {tuple(x.shape[-2:])}")

    def _pad(self, x: torch.Tensor) -> torch.Tensor:
        p = self.radius
        mode = "constant" if self.padding == "zeros" else self.padding
        return F.pad(x, (p, p, p, p), mode=mode)

    def _taps(self) -> list[float]:
        return self._tap_values

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``A x``: blur, same size as ``x``."""
        self._check(x)
        z = self._pad(x)
        return _correlate_valid(_correlate_valid(z, self._taps(), -2), self._taps(), -1)

    def adjoint(self, y: torch.Tensor) -> torch.Tensor:
        """``A^T y``: the transposed (scattering) correlations, then the adjoint of the padding."""
        self._check(y)
        z = _correlate_valid_adjoint(y, self._taps(), -1)
        z = _correlate_valid_adjoint(z, self._taps(), -2)
        z = _pad_adjoint_1d(z, self.radius, self.padding, dim=-1)
        return _pad_adjoint_1d(z, self.radius, self.padding, dim=-2)

    def normal(self, x: torch.Tensor) -> torch.Tensor:
        """``A^T A x``."""
        return self.adjoint(self(x))

    def shifted_normal_solve(self, r: torch.Tensor, rho: torch.Tensor | float, x0: torch.Tensor | None = None,
                             tol: float = 1e-5, max_iter: int = 300) -> torch.Tensor:
        """``(A^T A + rho I)^{-1} r``, the proximal solve of the data term: see
        :func:`shifted_normal_solve` (differentiable in ``r`` and ``rho``)."""
        return shifted_normal_solve(self, r, rho, x0=x0, tol=tol, max_iter=max_iter)

    # ----------------------------------------------------------------- spectrum
    def transfer_function(self, height: int, width: int, dtype: torch.dtype = torch.float64) -> torch.Tensor:
        """Circular padding only: the DFT ``H`` of the kernel on an ``height x width`` grid.

        ``A x = ifft2(H * fft2(x))`` for the circular blur; the eigenvalues of
        ``A^T A`` are ``|H|^2``. The kernel is symmetric, so ``H`` is real.
        """
        if self.padding != "circular":
            raise UserError("the transfer function diagonalises A only for circular padding")
        if min(height, width) < self.kernel_size:
            raise UserError(f"the grid must be at least {self.kernel_size} pixels wide")
        grid = torch.zeros(height, width, dtype=torch.float64)
        r = self.radius
        grid[: 2 * r + 1, : 2 * r + 1] = self.kernel
        grid = torch.roll(grid, shifts=(-r, -r), dims=(0, 1))  # centre the kernel at (0, 0)
        return torch.fft.fft2(grid).real.to(dtype)

    def matrix_1d(self, n: int) -> torch.Tensor:
        """The ``n x n`` matrix of the 1-D blur with this padding (float64).

        The 2-D operator on one channel is the Kronecker product of two of these
        (rows, then columns), so its spectrum follows from two small dense ones.
        """
        if self.padding != "zeros" and n <= self.radius:
            raise UserError(f"{self.padding} padding needs n > {self.radius}")
        eye = torch.eye(n, dtype=torch.float64).view(n, 1, n)  # n unit signals of length n
        mode = "constant" if self.padding == "zeros" else self.padding
        z = F.pad(eye, (self.radius, self.radius), mode=mode)
        cols = F.conv1d(z, self._k1().view(1, 1, -1)).view(n, n)  # row j = A e_j
        return cols.T.contiguous()

    def eigenvalue_bounds(self, height: int, width: int) -> "Spectrum":
        """Exact ``L = lambda_max(A^T A)`` and ``mu = lambda_min(A^T A)`` on ``height x width``.

        Circular padding: from the FFT of the kernel. Other paddings: the 2-D
        operator is the Kronecker product ``A_rows (x) A_cols`` of 1-D blurs, so the
        singular values of ``A`` are products of those of two small dense matrices.
        (:func:`power_iteration` and :func:`inverse_iteration` give the same numbers
        matrix-free; the tests check all three against a dense decomposition.)
        """
        if self.padding == "circular":
            ev = self.transfer_function(height, width) ** 2
            return Spectrum(L=float(ev.max()), mu=float(ev.min()))
        s_rows = torch.linalg.svdvals(self.matrix_1d(height))
        s_cols = torch.linalg.svdvals(self.matrix_1d(width))
        return Spectrum(L=float((s_rows.max() * s_cols.max()) ** 2),
                        mu=float((s_rows.min() * s_cols.min()) ** 2))

    def eigenvalues(self, height: int, width: int) -> torch.Tensor:
        """All eigenvalues of ``A^T A`` for one channel (``height * width`` of them, float64, sorted)."""
        if self.padding == "circular":
            ev = (self.transfer_function(height, width) ** 2).flatten()
        else:
            s_rows = torch.linalg.svdvals(self.matrix_1d(height))
            s_cols = torch.linalg.svdvals(self.matrix_1d(width))
            ev = torch.outer(s_rows**2, s_cols**2).flatten()
        return torch.sort(ev).values


class _ShiftedNormalSolve(torch.autograd.Function):
    """``y = (A^T A + rho I)^{-1} r`` by conjugate gradients, differentiable in ``r`` and ``rho``.

    The matrix is symmetric positive definite, so the backward pass is one more solve
    with the same matrix: ``w = (A^T A + rho I)^{-1} g`` is the gradient for ``r`` and
    ``-<w, y>`` the one for ``rho`` (from ``d M^{-1} = -M^{-1} dM M^{-1}``). The
    forward-mode derivative (for ``torch.func.jvp``) is ``M^{-1} (dr - drho y)``.
    ``x0`` warm-starts the forward solve and carries no gradient."""

    @staticmethod
    def _solve(A, rho, b, x0, tol, max_iter):
        y, _ = conjugate_gradient(lambda v: A.normal(v) + rho * v, b, x0=x0, tol=tol, max_iter=max_iter)
        return y

    @staticmethod
    def forward(r, rho, x0, A, tol, max_iter):  # type: ignore[override]
        return _ShiftedNormalSolve._solve(A, rho, r, x0, tol, max_iter)

    @staticmethod
    def setup_context(ctx, inputs, output):  # type: ignore[override]
        _, rho, _, A, tol, max_iter = inputs
        ctx.save_for_backward(output, rho)
        ctx.save_for_forward(output, rho)
        ctx.A, ctx.tol, ctx.max_iter = A, tol, max_iter

    @staticmethod
    def backward(ctx, g):  # type: ignore[override]
        y, rho = ctx.saved_tensors
        w = _ShiftedNormalSolve._solve(ctx.A, rho, g, None, ctx.tol, ctx.max_iter)
        grad_rho = -(w * y).sum().reshape(rho.shape) if ctx.needs_input_grad[1] else None
        return w, grad_rho, None, None, None, None

    @staticmethod
    def jvp(ctx, dr, drho, dx0, *_):  # type: ignore[override]
        y, rho = ctx.saved_tensors
        b = dr if dr is not None else torch.zeros_like(y)
        if drho is not None:
            b = b - drho * y
        return _ShiftedNormalSolve._solve(ctx.A, rho, b, None, ctx.tol, ctx.max_iter)


def shifted_normal_solve(A: GaussianBlur, r: torch.Tensor, rho: torch.Tensor, x0: torch.Tensor | None = None,
                         tol: float = 1e-5, max_iter: int = 300) -> torch.Tensor:
    """``(A^T A + rho I)^{-1} r`` per sample, with gradients for ``r`` and ``rho`` (see
    :class:`_ShiftedNormalSolve`); ``tol`` is the relative residual of conjugate gradients."""
    rho = torch.as_tensor(rho, dtype=r.dtype, device=r.device)
    if not bool((rho.detach() > 0).all()):
        raise UserError(f"rho must be positive, got {rho}")
    return _ShiftedNormalSolve.apply(r, rho, None if x0 is None else x0.detach(), A, tol, max_iter)


@dataclass(frozen=True)
class Spectrum:
    """Extreme eigenvalues of ``A^T A``; ``condition`` is ``L / mu`` (inf when ``mu == 0``)."""

    L: float
    mu: float

    @property
    def condition(self) -> float:
        return self.L / self.mu if self.mu > 0 else math.inf


def add_noise(y: torch.Tensor, std: float, seed: int | None = None,
              generator: torch.Generator | None = None) -> torch.Tensor:
    """``y + std * n`` with ``n`` standard Gaussian; seeded for reproducibility.

    Pass ``seed`` (a fresh generator on ``y``'s device) or a ``generator``.
    ``std`` is relative to images in [0, 1] (the paper: 0.01).
    """
    if std < 0:
        raise UserError(f"noise std must be >= 0, got {std}")
    if generator is None:
        generator = torch.Generator(device=y.device)
        generator.manual_seed(0 if seed is None else int(seed))
    noise = torch.randn(y.shape, generator=generator, device=y.device, dtype=y.dtype)
    return y + std * noise


def blur_from_setting(name: str, channels: int = 3, padding: str = "zeros") -> GaussianBlur:
    """The blur of a named setting of :data:`BLURS` (e.g. ``"5x5_s1"``)."""
    if name not in BLURS:
        raise UserError(f"unknown blur setting {name!r}; choose one of {sorted(BLURS)}")
    b = BLURS[name]
    return GaussianBlur(b.kernel_size, b.sigma, channels=channels, padding=padding)


__all__ = ["BLURS", "BlurSetting", "GaussianBlur", "LinearOperator", "PADDINGS", "Spectrum", "add_noise", "blur_from_setting", "shifted_normal_solve",
           "conjugate_gradient", "gaussian_kernel1d", "gaussian_kernel2d", "inverse_iteration",
           "power_iteration"]
