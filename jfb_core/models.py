"""The implicit network of Section 3.4: S_Theta, the DE-GRAD map T_Theta (eq. 3.5), N_Theta (eq. 3.4).

Conventions
-----------
* ``d`` measurement, ``z`` iterate, ``z_star`` fixed point, images ``(B, C, H, W)``.
* The data term is ``1/2 ||A z - d||^2`` with gradient ``A^T (A z - d)`` (the paper
  writes ``grad ||A z - d||^2``; the factor 2 is absorbed in ``eta``).
* The learned regulariser is ``S(z) = z - f(z)`` with ``f`` a spectrally normalised
  DnCNN (Gilton et al.'s form). Then ``S - I = -f`` is ``eps``-Lipschitz with
  ``eps = Lip(f) < 1``, and Theorem 3.1 gives the contraction factor
  ``gamma = 1 - eta (1 + mu) + eta eps < 1`` for ``0 < eta < 1 / (L + 1)``.
  (Using a spectrally normalised network directly as ``S`` would not: ``S - I``
  could then have Lipschitz constant near 2.)
* Optionally the regulariser carries a trainable weight ``rho`` in ``(0, 1)``:
  ``S(z) = rho (z - f(z))``. This is the same form with the network
  ``(1 - rho) I + rho f``, whose Lipschitz constant is at most
  ``1 - rho (1 - eps) < 1``, so Theorem 3.1 still applies, with
  ``gamma = 1 - eta (mu + rho (1 - eps))``. Why it matters: ``S`` is then
  ``rho (1 - eps)``-strongly monotone, a Tikhonov-like floor under the
  regularisation; with ``rho = 1`` and ``eps = 0.9`` that floor (0.1) is ten
  times the weight a tuned Tikhonov uses on CelebA, and the network cannot undo it.
* ``data_step="proximal"`` replaces the explicit step on the data term by an exact
  one (forward-backward splitting with ``eta = 1 / rho``):
  ``T(z) = (A^T A + rho I)^{-1} (A^T d + rho f(z))``. Same fixed points, but the
  contraction factor is ``Lip(f) rho / (mu + rho) <= Lip(f)`` instead of
  ``1 - eta rho (1 - eps)``. The solve is conjugate gradients with its own backward
  (:meth:`jfb_core.operators.GaussianBlur.shifted_normal_solve`).
* ``DnCNN(skip=True)`` is ``f(x) = c + eps (alpha (x - c) + (1 - alpha) g(x - c))`` with a
  1-Lipschitz ``g``: the same bound ``eps``, the identity one parameter away.
  ``activation="maxmin"`` sorts channel pairs instead of applying ReLU.
* ``CPLNet`` builds the same two forms from convex potential layers, a 1-Lipschitz
  ``g`` that is far more expressive than a chain of norm-bounded convolutions.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn as nn
import torch.nn.functional as F

from jfb_core.config import ACTIVATIONS, ARCHS, BATCHNORM_MODES, DATA_STEPS
from jfb_core.gradients import Backward, BackwardStats, JFB, make_backward
from jfb_core.operators import LinearOperator, shifted_normal_solve
from jfb_core.solvers import DEFAULT_FORWARD_SOLVER, SolverResult, forward_solver
from jfb_core.errors import UserError


class MaxMin(nn.Module):
    """Sort channel pairs: ``(max(a, b), min(a, b))``. 1-Lipschitz and norm-preserving
    (a permutation at every point), so unlike ReLU it passes signed signals, and the
    identity, through a chain of norm-1 layers (Anil et al.'s GroupSort with groups of 2)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, b = x.chunk(2, dim=1)
        return torch.cat([torch.maximum(a, b), torch.minimum(a, b)], dim=1)


class SpectralConv2d(nn.Module):
    """A 'same' convolution with zero padding whose *operator* norm is kept at most ``bound``.

    The norm is estimated by power iteration on the convolution itself,
    ``v <- conv^T(conv(v)) / ||.||`` on an input of the size the layer sees, not on the
    weight reshaped to a ``(c_out, c_in k^2)`` matrix: that matrix's norm can be up to
    ``k`` times smaller than the operator norm (3x for 3x3 kernels), so normalising it
    does not bound the layer. As in Miyato et al. (2018), the unit vector persists and
    training advances it by one power step per optimisation step (:meth:`power_step`,
    called by the owner so that the map stays fixed during a fixed-point solve); the
    weight used is ``W / max(1, sigma / bound)`` with ``sigma`` differentiable in ``W``
    in training mode; :meth:`certify` runs the iteration to convergence. The first
    input (and any larger one) triggers :meth:`certify` at its size, because the
    norm of a zero-padded convolution grows with the image.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, bound: float = 1.0,
                 bias: bool = True) -> None:
        super().__init__()
        if kernel_size % 2 == 0:
            raise UserError("kernel_size must be odd")
        if not bound > 0:
            raise UserError(f"bound must be positive, got {bound}")
        self.in_channels, self.out_channels, self.kernel_size = in_channels, out_channels, kernel_size
        self.bound = float(bound)
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels, kernel_size, kernel_size))
        nn.init.kaiming_normal_(self.weight, nonlinearity="relu")
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None
        self.register_buffer("u", torch.zeros(0))  # power-iteration vector, (1, C_in, H, W)
        self.register_buffer("sigma", torch.zeros(()))  # last operator-norm estimate
        # certified mode (set by :meth:`calibrate`): per-frequency power-iteration vectors of the
        # kernel's spectrum on a torus of ``grid``, which training uses instead of ``u`` (empty: off)
        self.register_buffer("fvec", torch.zeros(0, dtype=torch.complex64))
        self.register_buffer("grid", torch.zeros(2, dtype=torch.long))
        self.register_buffer("certified", torch.zeros(2, dtype=torch.long))  # the size ``sigma`` is certified at
        self._peak_cache: tuple | None = None  # (weight version, peak frequencies) of :meth:`_peaks`

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):  # type: ignore[override]
        # the power-iteration vector takes the size of the first input: adopt the saved
        # one's shape so that a checkpoint loads into a freshly built layer
        saved = state_dict.get(prefix + "u")
        if saved is None:  # a slim checkpoint without it: estimated afresh at the first input
            state_dict[prefix + "u"] = torch.zeros(0)
            saved = state_dict[prefix + "u"]
        # (a published checkpoint may store it in float16: take the weight's dtype)
        self.u = torch.empty_like(saved, dtype=self.weight.dtype, device=self.u.device)
        if prefix + "fvec" not in state_dict:  # saved before certified training existed: power iteration
            state_dict[prefix + "fvec"] = torch.zeros(0, dtype=torch.complex64)
            state_dict[prefix + "grid"] = torch.zeros(2, dtype=torch.long)
        if prefix + "certified" not in state_dict:  # unknown: certified afresh at the first input
            state_dict[prefix + "certified"] = torch.zeros(2, dtype=torch.long)
        self.fvec = torch.empty_like(state_dict[prefix + "fvec"], device=self.fvec.device)
        self._peak_cache = None
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def _conv(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, w, padding=self.kernel_size // 2)

    def _conv_t(self, y: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        return F.conv_transpose2d(y, w, padding=self.kernel_size // 2)

    @torch.no_grad()
    def _power(self, size: tuple[int, int], iters: int) -> None:
        w = self.weight.detach()
        fresh = self.u.dim() != 4 or tuple(self.u.shape[-2:]) != tuple(size) or self.u.dtype != w.dtype
        if fresh or not bool(self.u.any()):  # (a zero vector comes from a slim checkpoint without them)
            g = torch.Generator(device="cpu").manual_seed(1234)
            u = torch.randn(1, self.in_channels, *size, generator=g, dtype=w.dtype).to(w.device)
            self.u = u / u.norm()
        u = self.u
        for _ in range(iters):
            u = self._conv_t(self._conv(u, w), w)
            u = u / u.norm().clamp_min(1e-30)
        self.u = u

    @torch.no_grad()
    def power_step(self) -> None:
        """One power iteration at the current size (a no-op before the first input, and in the
        certified mode of :meth:`calibrate`, which tracks the norm in the Fourier domain)."""
        if self.u.dim() == 4 and not self.fvec.numel():
            self._power(tuple(self.u.shape[-2:]), 1)

    def operator_norm(self) -> torch.Tensor:
        """``||conv(u)||`` for the current unit vector ``u``: differentiable in the weight."""
        return self._conv(self.u, self.weight).norm()

    @torch.no_grad()
    def certify(self, size: tuple[int, int], iters: int = 500, tol: float = 1e-7) -> float:
        """Run the power iteration on a ``size`` input until it settles; store and return sigma."""
        prev, sig = 0.0, 0.0
        for _ in range(max(1, iters // 10)):  # at least one block of 10 steps
            self._power(size, 10)
            sig = float(self.operator_norm())
            if abs(sig - prev) <= tol * sig:
                break
            prev = sig
        self.sigma = torch.tensor(sig, dtype=self.weight.dtype, device=self.weight.device)
        return sig

    def current_sigma(self) -> torch.Tensor:
        """The norm estimate in use: in training, ``||conv(u)||`` (differentiable in the weight,
        and stored), or after :meth:`calibrate` the Fourier norm :meth:`tracked_norm`; in
        evaluation, the stored ``sigma``."""
        if self.training:
            sigma = self.tracked_norm() if self.fvec.numel() else self.operator_norm()
            self.sigma = sigma.detach()
            return sigma
        return self.sigma

    def _spectrum(self, weight: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
        """The kernel's spectrum ``sum_pq W_pq exp(-2 pi i (r p / N_1 + c q / N_2))`` at the
        frequencies ``(rows, cols)`` of the ``grid`` torus: ``(n, c_out, c_in)``, differentiable."""
        taps = torch.arange(self.kernel_size, device=weight.device, dtype=torch.float64)
        phase = (rows.double()[:, None, None] / float(self.grid[0])) * taps[None, :, None] \
            + (cols.double()[:, None, None] / float(self.grid[1])) * taps[None, None, :]
        e = torch.exp(-2j * math.pi * phase).to(self.fvec.dtype)
        return torch.einsum("oipq,npq->noi", weight.to(e.dtype), e)

    @torch.no_grad()
    def _peaks(self, top: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The ``top`` frequencies of the ``grid`` torus with the largest norm estimates, after
        one power step on every frequency's ``c_out x c_in`` matrix (warm-started vectors
        ``fvec``): once per value of the weight (the optimiser changes it in place, which
        bumps its version), not at every evaluation of the layer within one training step.
        The step runs in real arithmetic: for ``K = P + iQ``, ``K v`` and ``K^H w`` are four real
        batched products (a complex batched product ran here as one small copy per matrix)."""
        key = (self.weight._version, self.weight.data_ptr(), top)
        if self._peak_cache is not None and self._peak_cache[0] == key:
            return self._peak_cache[1]
        spec = torch.fft.rfft2(self.weight.detach(), s=tuple(self.grid.tolist())).to(self.fvec.dtype)
        spec = spec.permute(2, 3, 0, 1).flatten(0, 1)  # (frequencies, c_out, c_in)
        p, q = spec.real.contiguous(), spec.imag.contiguous()
        v = self.fvec.flatten(0, 1)
        vr, vi = v.real.contiguous(), v.imag.contiguous()
        mv = lambda m, x: torch.bmm(m, x.unsqueeze(-1)).squeeze(-1)  # noqa: E731
        wr, wi = mv(p, vr) - mv(q, vi), mv(p, vi) + mv(q, vr)  # K v
        pt, qt = p.transpose(1, 2), q.transpose(1, 2)
        ur, ui = mv(pt, wr) + mv(qt, wi), mv(pt, wi) - mv(qt, wr)  # K^H K v
        scale = (ur.square().sum(-1) + ui.square().sum(-1)).sqrt().clamp_min(1e-30).unsqueeze(-1)
        ur, ui = ur / scale, ui / scale
        self.fvec = torch.complex(ur, ui).reshape(self.fvec.shape)
        kr, ki = mv(p, ur) - mv(q, ui), mv(p, ui) + mv(q, ur)
        norms = (kr.square().sum(-1) + ki.square().sum(-1)).sqrt()
        idx = torch.topk(norms, min(top, norms.numel())).indices
        width = self.fvec.shape[1]
        self._peak_cache = (key, (idx // width, idx % width))
        return self._peak_cache[1]

    def tracked_norm(self, top: int = 4) -> torch.Tensor:
        """The largest spectral norm of the kernel on the ``grid`` torus, as training uses it.

        Every frequency is watched (:meth:`_peaks`), so no direction can grow unseen; the
        ``top`` largest are then computed exactly and differentiably (largest singular value
        of the spectrum, whose gradient is that of the norm at its peak)."""
        rows, cols = self._peaks(top)
        return torch.linalg.svdvals(self._spectrum(self.weight, rows, cols))[:, 0].max()

    @torch.no_grad()
    def calibrate(self, size: tuple[int, int], track: tuple[int, int] | None = None, margin: float = 0.0) -> float:
        """Certify the stored ``sigma`` at ``size`` (valid for any smaller image) and switch
        training to the Fourier norm :meth:`tracked_norm` on ``track``-sized inputs (default ``size``).

        The stored ``sigma`` becomes at least ``(1 + margin)`` times :func:`conv_norm_upper` at
        ``size`` (every frequency, float64). Returns the drift: that bound over the norm that
        training was using (1 when training had the peak exactly; above 1 by as much as its
        normalisation had fallen below the certified bound)."""
        k = self.kernel_size
        upper = conv_norm_upper(self.weight, size)
        grid = tuple(t + k - 1 for t in (track or size))
        if self.fvec.numel() and tuple(self.grid.tolist()) == grid:
            used = float(self.tracked_norm())
        else:  # start tracking: the exact singular vectors on the torus
            used = float(self.operator_norm()) if self.u.dim() == 4 and bool(self.u.any()) else upper
            self.grid = torch.tensor(grid, dtype=torch.long, device=self.grid.device)
            dtype = torch.complex128 if self.weight.dtype == torch.float64 else torch.complex64
            spec = torch.fft.rfft2(self.weight.detach(), s=grid).to(dtype).permute(2, 3, 0, 1)
            self.fvec = torch.linalg.svd(spec)[2][..., 0, :].conj()
            self._peak_cache = None
        self.sigma = _round_up(torch.maximum(self.tracked_norm(), torch.tensor(upper)) * (1.0 + margin),
                               (1.0 + margin) * upper)
        self.certified = torch.tensor(size, dtype=torch.long, device=self.certified.device)
        return upper / used

    def fit_to(self, size: tuple[int, ...]) -> None:
        """Before a forward pass on ``size`` images: the norm of a zero-padded convolution grows
        with the image, so the estimate is always made on the largest input seen (in certified
        mode: the stored norm is certified again at that size, tracking stays where it was; a
        certified layer without its tracking vectors, as published, is raised to the Fourier bound)."""
        if self.certified.any() and (self.fvec.numel() or not self.training):
            if any(s > t for s, t in zip(size, self.certified.tolist())):
                if self.fvec.numel():
                    self.calibrate(tuple(size), track=tuple(int(g) - self.kernel_size + 1 for g in self.grid))
                else:
                    self.sigma = _round_up(self.sigma, conv_norm_upper(self.weight, tuple(size)))
                    self.certified = torch.tensor(size, dtype=torch.long, device=self.certified.device)
        elif self.u.dim() != 4 or any(s > t for s, t in zip(size, self.u.shape[-2:])):
            self.certify(tuple(size))

    def normalised_weight(self) -> torch.Tensor:
        """The weight actually used: ``W / max(1, sigma / bound)``."""
        return self.weight / torch.clamp(self.current_sigma() / self.bound, min=1.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.fit_to(tuple(x.shape[-2:]))
        out = self._conv(x, self.normalised_weight())
        if self.bias is not None:
            out = out + self.bias.view(1, -1, 1, 1)
        return out


class _Averaged:
    """The averaged form shared by :class:`DnCNN` and :class:`CPLNet` (``skip=True``):
    ``f(x) = c + lipschitz (alpha (x - c) + (1 - alpha) g(x - c))``."""

    alpha_raw: nn.Parameter | None
    lipschitz: float
    centre: float

    @property
    def alpha(self) -> torch.Tensor:
        """The weight of the identity in the averaged form (``skip=True``): ``sigmoid(alpha_raw)``."""
        if self.alpha_raw is None:
            raise AttributeError("alpha exists only with skip=True")
        return torch.sigmoid(self.alpha_raw)

    def _averaged(self, y: torch.Tensor, gy: torch.Tensor) -> torch.Tensor:
        # f(x) = c + eps (alpha (x - c) + (1 - alpha) g(x - c)): an average of the identity
        # and a 1-Lipschitz g, scaled by eps, about the mid-grey c; Lip(f) <= eps
        a = self.alpha
        return self.centre + self.lipschitz * (a * y + (1 - a) * gy)


class DnCNN(_Averaged, nn.Module):
    """The paper's network: ``depth`` 3x3 convolutions, ``channels`` wide, ReLU in between.

    Layers: conv ``in -> channels``, ReLU; ``depth - 2`` times conv ``channels -> channels``
    (+ batch normalisation in the paper's variant), ReLU; conv ``channels -> in``.
    Every convolution is a :class:`SpectralConv2d` with bound ``lipschitz ** (1 / depth)``,
    so the whole network is ``lipschitz``-Lipschitz (ReLU is 1-Lipschitz) when
    ``batchnorm="none"`` (the default). ``batchnorm="paper"`` adds ``BatchNorm2d`` as the
    paper did; its output then depends on the rest of the batch and its Lipschitz
    constant is no longer bounded, which breaks Theorem 3.1 (chapter 4 shows it).

    ``skip=True`` (chapter 6) is the averaged form
    ``f(x) = c + lipschitz * (alpha (x - c) + (1 - alpha) g(x - c))``: the layers above,
    each bounded by 1, make a 1-Lipschitz ``g``; ``alpha = sigmoid(alpha_raw)`` in
    ``(0, 1)`` is trainable (0.5 at the start) and ``c`` (``centre``, mid-grey 0.5 as
    the paper's normalisation) is the point the factor ``lipschitz`` shrinks towards.
    Still ``Lip(f) <= lipschitz``, but the identity is now one parameter away instead of
    having to be learned through every layer, and the shrinkage pulls towards grey,
    not black.
    """

    def __init__(self, depth: int = 17, channels: int = 64, in_channels: int = 3, lipschitz: float = 0.9,
                 batchnorm: str = "none", skip: bool = False, centre: float = 0.5, activation: str = "relu") -> None:
        super().__init__()
        if depth < 2:
            raise UserError(f"depth must be >= 2, got {depth}")
        if batchnorm not in BATCHNORM_MODES:
            raise UserError(f"batchnorm must be one of {BATCHNORM_MODES}, got {batchnorm!r}")
        if activation not in ACTIVATIONS:
            raise UserError(f"activation must be one of {ACTIVATIONS}, got {activation!r}")
        if activation == "maxmin" and channels % 2:
            raise UserError(f"the maxmin activation pairs channels: width must be even, got {channels}")
        if skip and batchnorm != "none":
            raise UserError("skip=True needs batchnorm='none' (its Lipschitz bound is the point)")
        self.depth, self.channels, self.lipschitz, self.batchnorm = depth, channels, float(lipschitz), batchnorm
        self.skip, self.centre, self.activation = bool(skip), float(centre), activation
        self.arch = "dncnn"
        act = MaxMin if activation == "maxmin" else nn.ReLU
        # with the skip, the layers make a 1-Lipschitz g and lipschitz scales the average of x and g(x)
        per_layer = 1.0 if self.skip else self.lipschitz ** (1.0 / depth)
        self.alpha_raw = nn.Parameter(torch.zeros(())) if self.skip else None
        layers: list[nn.Module] = [SpectralConv2d(in_channels, channels, 3, per_layer), act()]
        for _ in range(depth - 2):
            layers.append(SpectralConv2d(channels, channels, 3, per_layer, bias=batchnorm == "none"))
            if batchnorm == "paper":
                layers.append(nn.BatchNorm2d(channels))
            layers.append(act())
        layers.append(SpectralConv2d(channels, in_channels, 3, per_layer))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.skip:
            return self.net(x)
        y = x - self.centre
        return self._averaged(y, self.net(y))

    def power_step(self) -> None:
        """Advance every layer's norm estimate by one power step (once per training step)."""
        for layer in self.spectral_layers():
            layer.power_step()

    def spectral_layers(self) -> list[SpectralConv2d]:
        return [m for m in self.net if isinstance(m, SpectralConv2d)]

    @torch.no_grad()
    def certify(self, size: tuple[int, int], iters: int = 500) -> float:
        """Converge every layer's norm estimate at ``size``; return the product bound on Lip(f)."""
        bound = 1.0
        for layer in self.spectral_layers():
            sig = layer.certify(size, iters)
            bound *= min(sig, layer.bound)
        if self.skip:
            a = float(self.alpha)
            bound = self.lipschitz * (a + (1 - a) * bound)
        return bound


class ConvexPotentialLayer(nn.Module):
    """``s -> s - (2 / ||W||^2) W^T relu(W s + b)``: a 1-Lipschitz residual layer.

    Meunier et al.'s convex potential layer (2022). The correction is the gradient of the
    convex potential ``phi(s) = sum relu(W s + b)^2 / 2`` and ``2 / ||W||^2`` bounds the step
    by twice the inverse of its curvature, so the Jacobian ``I - (2 / ||W||^2) W^T D W``
    (``D`` diagonal with entries in ``[0, 1]``) has its eigenvalues in ``[-1, 1]``. The layer
    is the identity when ``relu`` is off, so a stack of them starts near the identity and
    a correction of any size is one layer's work; a chain of norm-bounded convolutions
    (:class:`DnCNN`) must build the identity through every layer instead.

    ``W`` is a ``channels -> hidden`` convolution; its operator norm comes from the same
    persistent power iteration as :class:`SpectralConv2d` (one step per training step,
    differentiable in ``W``; :meth:`certify` converges it).
    """

    def __init__(self, channels: int, hidden: int, kernel_size: int = 3) -> None:
        super().__init__()
        self.conv = SpectralConv2d(channels, hidden, kernel_size, bound=math.inf)
        nn.init.normal_(self.conv.weight, std=0.05)

    def forward(self, s: torch.Tensor) -> torch.Tensor:
        c = self.conv
        c.fit_to(tuple(s.shape[-2:]))
        sigma = c.current_sigma()
        h = torch.relu(c._conv(s, c.weight) + c.bias.view(1, -1, 1, 1))
        return s - (2.0 / sigma**2) * c._conv_t(h, c.weight)


class CPLNet(_Averaged, nn.Module):
    """A 1-Lipschitz network of ``depth`` :class:`ConvexPotentialLayer` s, ``channels`` wide.

    The image (``in_channels``) is embedded in ``channels`` channels by zero padding (an
    isometry), passes the layers, and its first ``in_channels`` channels are read out (a
    projection, norm at most 1): so ``g`` is 1-Lipschitz. ``f`` is built from ``g`` exactly
    as :class:`DnCNN` does: ``skip=True`` is the averaged form
    ``c + lipschitz (alpha (x - c) + (1 - alpha) g(x - c))``, else ``c + lipschitz g(x - c)``;
    ``Lip(f) <= lipschitz`` either way. Chapter 6 measures why it matters: trained as a
    denoiser for 400 steps, the averaged :class:`DnCNN` barely beats doing nothing, this
    network gains several dB.
    """

    def __init__(self, depth: int = 6, channels: int = 32, in_channels: int = 3, lipschitz: float = 0.99,
                 skip: bool = True, centre: float = 0.5, activation: str = "relu") -> None:
        super().__init__()
        if depth < 1:
            raise UserError(f"depth must be >= 1, got {depth}")
        if channels < in_channels:
            raise UserError(f"width ({channels}) must be at least the image channels ({in_channels})")
        if activation != "relu":
            raise UserError("the convex potential layers need a monotone activation: use activation='relu'")
        self.arch = "cpl"
        self.depth, self.channels, self.in_channels = depth, channels, in_channels
        self.lipschitz, self.skip, self.centre, self.activation = float(lipschitz), bool(skip), float(centre), activation
        self.layers = nn.ModuleList([ConvexPotentialLayer(channels, channels) for _ in range(depth)])
        self.alpha_raw = nn.Parameter(torch.zeros(())) if self.skip else None
        # run the layers on channels-last tensors: the same map (to float rounding), and on a CPU
        # about 1.8x faster at 128 px (TrainOptions.channels_last sets it)
        self.channels_last = False

    def g(self, y: torch.Tensor) -> torch.Tensor:
        s = F.pad(y, (0, 0, 0, 0, 0, self.channels - self.in_channels))
        if self.channels_last:
            s = s.contiguous(memory_format=torch.channels_last)
        for layer in self.layers:
            s = layer(s)
        return s[:, : self.in_channels].contiguous() if self.channels_last else s[:, : self.in_channels]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x - self.centre
        if not self.skip:
            return self.centre + self.lipschitz * self.g(y)
        return self._averaged(y, self.g(y))

    def power_step(self) -> None:
        for layer in self.layers:
            layer.conv.power_step()

    def spectral_layers(self) -> list[SpectralConv2d]:
        return [layer.conv for layer in self.layers]

    @torch.no_grad()
    def certify(self, size: tuple[int, int], iters: int = 500) -> float:
        """Converge every layer's norm estimate at ``size`` (each layer is then 1-Lipschitz); the bound on Lip(f)."""
        for layer in self.layers:
            layer.conv.certify(size, iters)
        return self.lipschitz




def make_network(arch: str, depth: int, channels: int, in_channels: int = 3, lipschitz: float = 0.9,
                 skip: bool = False, activation: str = "relu") -> nn.Module:
    """The network ``f`` of a preset: ``"dncnn"`` (:class:`DnCNN`) or ``"cpl"`` (:class:`CPLNet`)."""
    if arch == "dncnn":
        return DnCNN(depth, channels, in_channels=in_channels, lipschitz=lipschitz, skip=skip, activation=activation)
    if arch == "cpl":
        return CPLNet(depth, channels, in_channels=in_channels, lipschitz=lipschitz, skip=skip, activation=activation)
    raise UserError(f"arch must be one of {ARCHS}, got {arch!r}")


@dataclass
class SolveStats:
    """Solver statistics of one forward solve of :class:`DEGRAD` (per sample where a list)."""

    iterations: list[int] = field(default_factory=list)
    residual: list[float] = field(default_factory=list)
    converged_fraction: float = 0.0
    nfe: int = 0
    fallbacks: int = 0

    @classmethod
    def from_result(cls, r: SolverResult) -> "SolveStats":
        return cls(iterations=r.iterations.tolist(), residual=r.residual.tolist(),
                   converged_fraction=r.converged_fraction, nfe=r.nfe, fallbacks=r.fallbacks)


@dataclass
class ForwardStats:
    """What one call of :meth:`DEGRAD.run` did: the forward solve (``None`` when unrolled)
    and the backward pass (filled in when ``backward()`` runs through the output)."""

    solve: SolveStats | None
    backward: BackwardStats


class DEGRAD(nn.Module):
    """The DE-GRAD map and the implicit network ``N(d) = z_star`` (eq. 3.4-3.6).

    ``T(z, d) = z - eta * (A^T (A z - d) + S(z))`` with ``S(z) = z - f(z)`` and ``f`` a
    :class:`DnCNN`. ``eta`` is trainable and kept in ``(0, eta_max)`` with
    ``eta_max = 1 / (1 + L)`` (Theorem 3.1's bound; ``L <= 1`` for a normalised blur with
    zero or circular padding) by ``eta = eta_max * sigmoid(raw)``. With ``rho < 1`` the
    regulariser is ``S(z) = rho (z - f(z))`` with ``rho = sigmoid(raw)`` trainable
    and initialised to ``rho``; ``rho = 1`` (the default) is ``S = I - f`` exactly,
    with no extra parameter.

    ``run(d)`` starts at ``A^T d``, finds the fixed point with Anderson acceleration
    under ``torch.no_grad()`` (no graph over the iterations), then attaches the
    gradient with one application of ``T`` at the fixed point: the output is
    ``T(z_star, d)``, returned with its :class:`ForwardStats`; ``forward(d)`` (that is,
    ``model(d)``) returns the output alone. The backward pass is the strategy
    ``backward`` (:func:`jfb_core.gradients.make_backward`, which owns every backward
    default): JFB (eq. 4.1, the default), IFT (the exact implicit gradient, its adjoint
    equation solved to a tolerance), Neumann (extra terms of eq. 4.2) or unrolled (no
    solve: recorded plain steps from ``A^T d``); :meth:`set_backward` replaces it.
    ``data_step="proximal"`` replaces the explicit data step by the exact one of
    :meth:`T` (``eta = 1 / rho``; ``eta_raw`` is then a buffer, not a parameter).
    """

    def __init__(self, A: LinearOperator, f: DnCNN, eta: float = 0.4, m: int = 5, tol: float = 1e-3,
                 max_iter: int = 50, lam: float = 1e-4, backward: Backward | None = None, rho: float = 1.0,
                 data_step: str = "gradient", inner_tol: float = 1e-5, inner_max_iter: int = 300,
                 solver: str = DEFAULT_FORWARD_SOLVER) -> None:
        super().__init__()
        forward_solver(solver)  # checked here, looked up at each solve
        self.solver = solver
        self.backward: Backward = JFB() if backward is None else backward
        if not isinstance(self.backward, Backward):
            raise UserError(f"backward must be a strategy from jfb_core.gradients.make_backward, got {backward!r}")
        if A.padding not in ("zeros", "circular"):
            raise UserError("DE-GRAD needs a blur with zero or circular padding (so that L <= 1)")
        self.A, self.f = A, f
        self.eta_max = 1.0 / (1.0 + 1.0)
        if not 0 < eta < self.eta_max:
            raise UserError(f"eta must be in (0, {self.eta_max}) for Theorem 3.1, got {eta}")
        if data_step not in DATA_STEPS:
            raise UserError(f"data_step must be one of {DATA_STEPS}, got {data_step!r}")
        self.data_step, self.inner_tol, self.inner_max_iter = data_step, inner_tol, inner_max_iter
        p = eta / self.eta_max
        raw = torch.tensor(math.log(p / (1 - p)))
        if data_step == "gradient":
            self.eta_raw = nn.Parameter(raw)
        else:  # the proximal step uses eta = 1 / rho; kept as a buffer so state dicts match
            self.register_buffer("eta_raw", raw)
        if not 0 < rho <= 1:
            raise UserError(f"rho must be in (0, 1], got {rho}")
        self.rho_raw = nn.Parameter(torch.tensor(math.log(rho / (1 - rho)))) if rho < 1 else None
        self.m, self.tol, self.max_iter, self.lam = m, tol, max_iter, lam

    @property
    def grad_mode(self) -> str:
        """The name of the backward strategy (one of ``GRAD_MODES``)."""
        return self.backward.name

    def set_backward(self, mode: str, **options) -> "DEGRAD":
        """Replace the backward strategy: ``make_backward(mode, **options)``; returns the model."""
        self.backward = make_backward(mode, **options)
        return self

    @property
    def eta(self) -> torch.Tensor:
        """The step: ``eta_max * sigmoid(eta_raw)``; with the proximal data step it is ``1 / rho``."""
        if self.data_step == "proximal":
            return 1.0 / self.rho
        return self.eta_max * torch.sigmoid(self.eta_raw)

    @property
    def rho(self) -> torch.Tensor:
        """The regularisation weight: ``sigmoid(rho_raw)``, or exactly 1 without ``rho_raw``."""
        if self.rho_raw is None:
            return torch.ones((), device=self.eta_raw.device, dtype=self.eta_raw.dtype)
        return torch.sigmoid(self.rho_raw)

    def S(self, z: torch.Tensor) -> torch.Tensor:
        """The learned regulariser ``S(z) = rho (z - f(z))`` (``z - f(z)`` when ``rho = 1``)."""
        r = z - self.f(z)
        return r if self.rho_raw is None else self.rho * r

    def T(self, z: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
        """One DE-GRAD step (eq. 3.5), or with ``data_step="proximal"`` one forward-backward step.

        The proximal step takes the gradient step on ``S`` and an exact (implicit) step
        on the data term with ``eta = 1 / rho``:
        ``T(z) = (I + eta A^T A)^{-1} (z - eta S(z) + eta A^T d) = (A^T A + rho I)^{-1} (A^T d + rho f(z))``.
        Its fixed points are the same zeros of ``A^T (A z - d) + S(z)`` as DE-GRAD's, and it
        is ``Lip(f) / (1 + mu / rho)``-contractive whatever the conditioning of ``A``
        (chapter 6)."""
        if self.data_step == "gradient":
            return z - self.eta * (self.A.adjoint(self.A(z) - d) + self.S(z))
        rhs = self.A.adjoint(d) + self.rho * self.f(z)
        return self.A.shifted_normal_solve(rhs, self.rho, x0=z, tol=self.inner_tol, max_iter=self.inner_max_iter)

    def solve(self, d: torch.Tensor, z0: torch.Tensor | None = None) -> SolverResult:
        """The fixed point of ``T(., d)`` from ``z0`` (default ``A^T d``) by the forward solver
        ``solver`` (Anderson acceleration unless told otherwise), without autograd."""
        z0 = self.A.adjoint(d) if z0 is None else z0
        with torch.no_grad():
            return forward_solver(self.solver)(lambda z: self.T(z, d), z0, m=self.m, lam=self.lam, tol=self.tol,
                                               max_iter=self.max_iter)

    def run(self, d: torch.Tensor) -> tuple[torch.Tensor, ForwardStats]:
        """The network's output for ``d`` and what computing it did (:class:`ForwardStats`)."""
        if self.training and hasattr(self.f, "power_step"):
            self.f.power_step()  # once per step, so T is the same map throughout the solve
        out, result, backward = self.backward.run(lambda z: self.T(z, d), self.A.adjoint(d),
                                                  lambda z0: self.solve(d, z0))
        return out, ForwardStats(None if result is None else SolveStats.from_result(result), backward)

    def forward(self, d: torch.Tensor, return_stats: bool = False):
        """``run(d)``'s output, or with ``return_stats=True`` the pair (through a wrapper such
        as ``DistributedDataParallel``, which calls ``forward``)."""
        out, stats = self.run(d)
        return (out, stats) if return_stats else out

    def attach_gradient(self, z_star: torch.Tensor, d: torch.Tensor) -> tuple[torch.Tensor, BackwardStats]:
        """``T(z_star, d)`` recorded once with this model's backward (not ``"unrolled"``), and
        the statistics its backward pass fills in.

        The second half of :meth:`run`, exposed so that benchmarks can time the
        solve and the gradient separately while running exactly the same code."""
        return self.backward.attach(lambda z: self.T(z, d), z_star)


def build_model(preset, device: str = "cpu", *, backward: Backward | None = None, channels_last: bool = False,
                tol: float | None = None, max_iter: int | None = None, solver: str = DEFAULT_FORWARD_SOLVER) -> DEGRAD:
    """The one factory of DE-GRAD: the network, blur, step and regulariser of a
    :class:`jfb_core.config.Preset`, with the backward strategy ``backward`` (default JFB;
    see :func:`jfb_core.gradients.make_backward`).

    Training, checkpoint loading, the benchmarks and the chapters all build their
    models here, so a preset field (architecture, skip, activation, rho, data step)
    cannot be honoured in one place and ignored in another. ``tol`` and ``max_iter``
    override the preset's forward solve (the benchmarks fix the iteration count); ``solver``
    names it (:func:`jfb_core.solvers.forward_solver`)."""
    f = make_network(preset.arch, preset.depth, preset.width, in_channels=preset.channels,
                     lipschitz=preset.lipschitz, skip=preset.skip, activation=preset.activation)
    model = DEGRAD(preset.blur_operator(), f, eta=preset.eta, m=preset.anderson_m,
                   tol=preset.tol if tol is None else tol, max_iter=preset.max_iter if max_iter is None else max_iter,
                   rho=preset.rho, data_step=preset.data_step, backward=backward, solver=solver)
    if hasattr(f, "channels_last"):
        f.channels_last = channels_last
    return model.to(device)


def conv_norm_upper(weight: torch.Tensor, size: tuple[int, int]) -> float:
    """An upper bound on the operator norm of the zero-padded 'same' convolution with
    ``weight`` on ``size`` images, from the Fourier transform of the kernel.

    Zero-pad the image onto an ``(H + k - 1) x (W + k - 1)`` torus, convolve circularly,
    crop: the padding and the crop have norm at most 1 and the middle is the 'same'
    convolution exactly, so its norm is at most the circular one's, which is the largest
    singular value of the ``c_out x c_in`` matrix ``K^(omega)`` over the torus's frequencies.
    The power iteration of :meth:`SpectralConv2d.certify` approaches the norm from below;
    this bounds it from above, so the two bracket it."""
    k = weight.shape[-1]
    return float(_spectral_norms(weight, (size[0] + k - 1, size[1] + k - 1)).max())


def _spectral_norms(weight: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """``||K^(omega)||_2`` (float64) at every frequency of the ``grid`` torus, ``(H', W'/2 + 1)``:
    a real kernel's spectrum at ``-omega`` is the conjugate of that at ``omega`` (the same
    singular values), so half the frequencies suffice."""
    spectrum = torch.fft.rfft2(weight.detach().double().cpu(), s=grid)  # (c_out, c_in, H', W'/2 + 1)
    return torch.linalg.svdvals(spectrum.permute(2, 3, 0, 1))[..., 0]


@torch.no_grad()
def lipschitz_certificate(f: nn.Module, size: tuple[int, int], power_iters: int = 300) -> dict:
    """The Lipschitz constant of ``f`` as it computes in evaluation, certified at ``size``.

    In evaluation a spectral layer divides by its *stored* norm estimate ``sigma``: the
    running power iteration of training, which approaches the norm from below and lags
    behind the moving weights, so it can be too small and the layer then exceeds its bound.
    This reads each stored ``sigma``, brackets the layer's true operator norm (a converged
    float64 power iteration below, :func:`conv_norm_upper` above) and bounds ``Lip(f)`` with
    the upper values: a convex potential layer ``s - (2 / sigma^2) W^T relu(W s + b)`` is
    ``max(1, 2 (||W|| / sigma)^2 - 1)``-Lipschitz, a bounded convolution
    ``||W|| / max(1, sigma / bound)``; products through the layers and the averaged form as
    the network composes them. ``f`` itself is left untouched; ``power_iters`` caps the
    power iteration (warm-started from the stored vector) that gives the lower values."""
    import copy

    layers = f.spectral_layers()
    stored = [float(layer.sigma) for layer in layers]
    probe = copy.deepcopy(f).double()
    lower = [layer.certify(size, iters=power_iters, tol=1e-9) for layer in probe.spectral_layers()]
    upper = [conv_norm_upper(layer.weight, size) for layer in layers]
    if getattr(f, "batchnorm", "none") != "none":
        bound_g = math.inf  # batch normalisation: no bound (chapter 4)
    elif f.arch == "cpl":
        bound_g = math.prod(max(1.0, 2 * (u / s) ** 2 - 1) for s, u in zip(stored, upper))
    else:
        bound_g = math.prod(u / max(1.0, s / layer.bound) for layer, s, u in zip(layers, stored, upper))
    if f.skip:
        a = float(f.alpha)
        bound = f.lipschitz * (a + (1 - a) * bound_g)
    else:  # a plain DnCNN's per-layer bounds already include the factor; CPLNet scales g by it
        bound = bound_g if f.arch != "cpl" else f.lipschitz * bound_g
    return {"size": list(size), "lipschitz_target": f.lipschitz, "lipschitz_bound": bound,
            "sigma_stored": stored, "sigma_lower": lower, "sigma_upper": upper,
            "stored_over_upper_min": min(s / u for s, u in zip(stored, upper))}


def _round_up(value: torch.Tensor, at_least: float) -> torch.Tensor:
    """``value`` (a scalar tensor), or the next representable number above ``at_least`` when
    ``value`` is below it (a float32 rounding must not undercut a certified bound)."""
    value = torch.maximum(value.detach(), torch.tensor(at_least, dtype=value.dtype, device=value.device))
    while float(value) < at_least:
        value = torch.nextafter(value, torch.tensor(math.inf, dtype=value.dtype, device=value.device))
    return value


@torch.no_grad()
def certify_stored_norms(f: nn.Module, size: tuple[int, int]) -> None:
    """Raise every layer's stored ``sigma`` to at least :func:`conv_norm_upper` at ``size``, so
    that ``f`` in evaluation meets its Lipschitz target for images up to that size. A network
    trained with calibrated norms (:func:`calibrate_norms`) already stores such values and is
    left as it was trained; an older one is normalised slightly more strongly than in training."""
    for layer in f.spectral_layers():
        layer.sigma = _round_up(layer.sigma, conv_norm_upper(layer.weight, size))


@torch.no_grad()
def calibrate_norms(f: nn.Module, size: tuple[int, int], track: tuple[int, int] | None = None,
                    margin: float = 0.0) -> float:
    """:meth:`SpectralConv2d.calibrate` for every spectral layer of ``f``; the largest drift."""
    return max(layer.calibrate(size, track, margin) for layer in f.spectral_layers())


def lipschitz_ratio(fn, x: torch.Tensor, n_pairs: int = 16, scale: float = 1e-1, seed: int = 0) -> float:
    """Largest ``||fn(x + a) - fn(x + b)|| / ||a - b||`` over random perturbation pairs around ``x``.

    A *lower* bound on the Lipschitz constant of ``fn`` near ``x`` (per sample, max over the batch)."""
    g = torch.Generator(device="cpu").manual_seed(seed)
    best = 0.0
    with torch.no_grad():
        for _ in range(n_pairs):
            a = scale * torch.randn(x.shape, generator=g).to(x)
            b = scale * torch.randn(x.shape, generator=g).to(x)
            num = (fn(x + a) - fn(x + b)).flatten(1).norm(dim=1)
            den = (a - b).flatten(1).norm(dim=1)
            best = max(best, float((num / den).max()))
    return best


def lipschitz_power(fn, x: torch.Tensor, iters: int = 30, seed: int = 0) -> float:
    """Spectral norm of the Jacobian of ``fn`` at ``x`` by power iteration on ``J^T J``
    (Jacobian-vector and vector-Jacobian products; ``fn`` must act per sample).

    Returns the largest value over the batch: a local Lipschitz constant at ``x``."""
    import warnings

    g = torch.Generator(device="cpu").manual_seed(seed)
    v = torch.randn(x.shape, generator=g).to(x)
    v = v / v.flatten(1).norm(dim=1).view(-1, *([1] * (x.dim() - 1)))
    sigma = torch.zeros(x.shape[0])
    with warnings.catch_warnings():  # torch.func may warn about its own internals
        warnings.simplefilter("ignore", FutureWarning)
        _, vjp = torch.func.vjp(fn, x)
        for _ in range(iters):
            _, jv = torch.func.jvp(fn, (x,), (v,))
            (jtjv,) = vjp(jv)
            sigma = jv.flatten(1).norm(dim=1)
            v = jtjv / jtjv.flatten(1).norm(dim=1).clamp_min(1e-30).view(-1, *([1] * (x.dim() - 1)))
    return float(sigma.detach().max())


__all__ = ["ACTIVATIONS", "ARCHS", "BATCHNORM_MODES", "CPLNet", "ConvexPotentialLayer", "DATA_STEPS", "DEGRAD", "DnCNN",
           "build_model", "calibrate_norms", "certify_stored_norms", "conv_norm_upper", "lipschitz_certificate",
           "ForwardStats", "MaxMin", "SolveStats", "make_network",
           "SpectralConv2d", "lipschitz_power", "lipschitz_ratio", "shifted_normal_solve"]
