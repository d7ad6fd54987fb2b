import math

import numpy as np
import pytest
import torch
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from jfb_core.data import bundled_photo
from jfb_core.metrics import psnr, psnr_from_minus_one_one_convention, ssim


def _pairs():
    g = torch.Generator().manual_seed(0)
    rand = torch.rand(3, 3, 40, 48, generator=g, dtype=torch.float64)
    noisy = (rand + 0.1 * torch.randn(rand.shape, generator=g, dtype=torch.float64)).clamp(0, 1)
    yield "random", noisy, rand
    real = bundled_photo("astronaut", 64).double()
    blurred = torch.nn.functional.avg_pool2d(real, 3, stride=1, padding=1, count_include_pad=False)
    yield "real", blurred, real


def _np(t):
    return t.permute(1, 2, 0).numpy()


@pytest.mark.parametrize("name,x_hat,x", list(_pairs()), ids=lambda v: v if isinstance(v, str) else "")
def test_psnr_matches_skimage(name, x_hat, x):
    ours = psnr(x_hat, x, reduction="none")
    for i in range(x.shape[0]):
        ref = peak_signal_noise_ratio(_np(x[i]), _np(x_hat[i]), data_range=1.0)
        assert abs(float(ours[i]) - ref) < 1e-4


@pytest.mark.parametrize("data_range,low", [(2.0, -1.0), (255.0, 0.0)], ids=["range2", "range255"])
@pytest.mark.parametrize("name,x_hat,x", list(_pairs()), ids=lambda v: v if isinstance(v, str) else "")
def test_psnr_and_ssim_match_skimage_at_other_data_ranges(name, x_hat, x, data_range, low):
    """Images on [-1, 1] (range 2, the paper's code) and on [0, 255]: at range 1 a PSNR that
    used ``data_range`` for ``data_range**2`` would agree, so only other ranges test it."""
    xs, hs = low + data_range * x, low + data_range * x_hat
    p = psnr(hs, xs, data_range=data_range, reduction="none")
    q = ssim(hs, xs, data_range=data_range, reduction="none")
    for i in range(x.shape[0]):
        ref_p = peak_signal_noise_ratio(_np(xs[i]), _np(hs[i]), data_range=data_range)
        ref_q = structural_similarity(_np(hs[i]), _np(xs[i]), data_range=data_range, channel_axis=2,
                                      gaussian_weights=True, sigma=1.5, use_sample_covariance=False)
        assert abs(float(p[i]) - ref_p) < 1e-4
        assert abs(float(q[i]) - ref_q) < 1e-3
    # scaling both images and the range together changes nothing
    assert torch.allclose(p, psnr(x_hat, x, reduction="none"), atol=1e-9)


@pytest.mark.parametrize("name,x_hat,x", list(_pairs()), ids=lambda v: v if isinstance(v, str) else "")
def test_ssim_matches_skimage(name, x_hat, x):
    g = ssim(x_hat, x, reduction="none")
    u = ssim(x_hat, x, reduction="none", gaussian=False)
    for i in range(x.shape[0]):
        ref_g = structural_similarity(_np(x_hat[i]), _np(x[i]), data_range=1.0, channel_axis=2,
                                      gaussian_weights=True, sigma=1.5, use_sample_covariance=False)
        ref_u = structural_similarity(_np(x_hat[i]), _np(x[i]), data_range=1.0, channel_axis=2)
        assert abs(float(g[i]) - ref_g) < 1e-3
        assert abs(float(u[i]) - ref_u) < 1e-3


def test_ssim_of_identical_images_is_one_and_float32_agrees():
    x = bundled_photo("grace_hopper", 48)
    assert math.isclose(float(ssim(x, x)), 1.0, rel_tol=1e-9)
    y = (x + 0.05).clamp(0, 1)
    assert abs(float(ssim(y, x)) - float(ssim(y.double(), x.double()))) < 1e-6


def test_minus_one_one_convention_is_6_02_db_lower():
    x = bundled_photo("astronaut", 32).double()
    x_hat = (x + 0.03 * torch.randn_like(x)).clamp(0, 1)
    ours = float(psnr(x_hat, x))
    # the paper's code: images mapped to [-1, 1], reported -10 log10(MSE)
    mse_pm1 = float(((2 * x_hat - 1) - (2 * x - 1)).pow(2).mean())
    theirs = -10 * math.log10(mse_pm1)
    assert math.isclose(psnr_from_minus_one_one_convention(theirs), ours, rel_tol=1e-9)
    assert math.isclose(ours - theirs, 20 * math.log10(2), rel_tol=1e-9)


def test_bad_input_rejected():
    with pytest.raises(ValueError, match="shapes differ"):
        psnr(torch.rand(1, 3, 8, 8), torch.rand(1, 3, 8, 9))
    with pytest.raises(ValueError, match="reduction"):
        psnr(torch.rand(1, 3, 8, 8), torch.rand(1, 3, 8, 8), reduction="sum")
