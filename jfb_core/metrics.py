"""Image quality on a stated data range: PSNR and SSIM.

Images are in [0, 1], so ``data_range = 1``. Both metrics are computed per image
(per element of the batch) and averaged over the batch unless ``reduction="none"``.

A note on the paper's numbers: its public code worked on images in [-1, 1] and
reported ``-10 log10(MSE)``, i.e. PSNR with a peak of 1 on a range of 2. That is
``20 log10(2) = 6.02`` dB *lower* than the PSNR of the same reconstruction on
[0, 1] (see :func:`psnr_from_minus_one_one_convention`).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from jfb_core.errors import UserError

PSNR_OFFSET_MINUS_ONE_ONE_DB = 20.0 * math.log10(2.0)


def _check_pair(x_hat: torch.Tensor, x: torch.Tensor) -> None:
    if x_hat.shape != x.shape:
        raise UserError(f"shapes differ: {tuple(x_hat.shape)} vs {tuple(x.shape)}")
    if x.dim() != 4:
        raise UserError(f"expected (B, C, H, W) images, got shape {tuple(x.shape)}")


def _reduce(v: torch.Tensor, reduction: str) -> torch.Tensor:
    if reduction == "mean":
        return v.mean()
    if reduction == "none":
        return v
    raise UserError(f"reduction must be 'mean' or 'none', got {reduction!r}")


def psnr(x_hat: torch.Tensor, x: torch.Tensor, data_range: float = 1.0,
         reduction: str = "mean") -> torch.Tensor:
    """Peak signal-to-noise ratio ``10 log10(data_range^2 / MSE)`` in dB, per image.

    Computed in float64. An exact reconstruction gives ``inf``.
    """
    _check_pair(x_hat, x)
    mse = ((x_hat.double() - x.double()) ** 2).flatten(1).mean(1)
    return _reduce(10.0 * torch.log10(data_range**2 / mse), reduction)


def psnr_from_minus_one_one_convention(value_db: float) -> float:
    """Convert a ``-10 log10(MSE)`` value computed on [-1, 1] images (the paper's code)
    to the PSNR on [0, 1] with ``data_range = 1`` used here: add 6.02 dB."""
    return value_db + PSNR_OFFSET_MINUS_ONE_ONE_DB


def _gaussian_window(sigma: float, truncate: float, dtype: torch.dtype) -> torch.Tensor:
    r = int(truncate * sigma + 0.5)
    t = torch.arange(-r, r + 1, dtype=torch.float64)
    w = torch.exp(-(t**2) / (2 * sigma**2))
    return (w / w.sum()).to(dtype)


def ssim(x_hat: torch.Tensor, x: torch.Tensor, data_range: float = 1.0, reduction: str = "mean",
         gaussian: bool = True, sigma: float = 1.5, win_size: int = 7) -> torch.Tensor:
    """Structural similarity (Wang et al. 2004), per image, averaged over channels.

    ``gaussian=True`` (default): an 11x11 Gaussian window with ``sigma = 1.5`` and
    population covariances, as in Wang et al. and as
    ``skimage.metrics.structural_similarity(..., gaussian_weights=True,
    use_sample_covariance=False)``. ``gaussian=False``: a ``win_size`` uniform window
    with sample covariances, scikit-image's default. The SSIM map is averaged over
    the pixels whose window lies inside the image, as scikit-image does.
    Computed in float64.
    """
    _check_pair(x_hat, x)
    a, b = x_hat.double(), x.double()
    c = a.shape[1]
    if gaussian:
        w1 = _gaussian_window(sigma, 3.5, torch.float64).to(a.device)
        cov_norm = 1.0
    else:
        if win_size % 2 == 0 or win_size < 3:
            raise UserError("win_size must be odd and >= 3")
        w1 = torch.full((win_size,), 1.0 / win_size, dtype=torch.float64, device=a.device)
        n = win_size**2
        cov_norm = n / (n - 1.0)
    k = w1.numel()
    if min(a.shape[-2:]) < k:
        raise UserError(f"images must be at least {k}x{k} for this SSIM window")
    wh = w1.view(1, 1, k, 1).repeat(c, 1, 1, 1)
    ww = w1.view(1, 1, 1, k).repeat(c, 1, 1, 1)

    def filt(t: torch.Tensor) -> torch.Tensor:  # 'valid' filtering = scikit-image's cropped map
        return F.conv2d(F.conv2d(t, wh, groups=c), ww, groups=c)

    mu_a, mu_b = filt(a), filt(b)
    var_a = cov_norm * (filt(a * a) - mu_a**2)
    var_b = cov_norm * (filt(b * b) - mu_b**2)
    cov = cov_norm * (filt(a * b) - mu_a * mu_b)
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    s = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2))
    return _reduce(s.flatten(1).mean(1), reduction)


__all__ = ["PSNR_OFFSET_MINUS_ONE_ONE_DB", "psnr", "psnr_from_minus_one_one_convention", "ssim"]
