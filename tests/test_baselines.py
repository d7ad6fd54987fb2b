import pytest
import torch

from jfb_core.baselines import (direct_inverse, tikhonov, tune_weight, tv_gradient_descent,
                                tv_objective)
from jfb_core.data import bundled_photo, measure
from jfb_core.metrics import psnr
from jfb_core.operators import GaussianBlur
from jfb_core.regularizers import divergence, image_gradient, tv, tv_grad


def test_divergence_is_minus_adjoint_of_gradient():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 3, 9, 7, generator=g, dtype=torch.float64)
    px, py = (torch.randn(2, 3, 9, 7, generator=g, dtype=torch.float64) for _ in range(2))
    dx, dy = image_gradient(x)
    lhs = (dx * px + dy * py).sum()
    rhs = -(x * divergence(px, py)).sum()
    assert abs(lhs - rhs) <= 1e-12 * abs(lhs)


@pytest.mark.parametrize("delta", [1e-1, 1e-2])
def test_tv_gradient_matches_finite_differences(delta):
    g = torch.Generator().manual_seed(2)
    x = torch.rand(1, 2, 6, 5, generator=g, dtype=torch.float64)
    v = torch.randn(x.shape, generator=g, dtype=torch.float64)
    h = 1e-6
    fd = (tv(x + h * v, delta) - tv(x - h * v, delta)) / (2 * h)
    an = (tv_grad(x, delta) * v).sum()
    assert abs(float(fd) - float(an)) <= 1e-6 * max(1.0, abs(float(an)))
    # and agrees with autograd
    xa = x.clone().requires_grad_(True)
    (auto,) = torch.autograd.grad(tv(xa, delta).sum(), xa)
    torch.testing.assert_close(auto, tv_grad(x, delta), rtol=1e-10, atol=1e-12)


def test_tv_is_zero_on_constants_and_positive_otherwise():
    assert float(tv(torch.full((1, 3, 8, 8), 0.3, dtype=torch.float64)).abs().max()) < 1e-12
    assert float(tv(torch.rand(1, 3, 8, 8, dtype=torch.float64)).min()) > 0


def _problem(padding="zeros", size=32, dtype=torch.float64):
    A = GaussianBlur(5, 1.0, channels=3, padding=padding)
    x = bundled_photo("astronaut", size).to(dtype)
    x = torch.cat([x, bundled_photo("grace_hopper", size).to(dtype)])
    d = measure(A, x, 0.01, seed=0)
    return A, x, d


def test_tv_gradient_descent_decreases_objective_monotonically():
    A, x, d = _problem()
    r = tv_gradient_descent(A, d, lam=3e-3, max_iter=150, tol=0, track=True)
    assert r.objective.shape == (151, 2)
    diffs = r.objective[1:] - r.objective[:-1]
    assert (diffs <= 1e-12 * r.objective[:-1].abs()).all(), "an iterate increased the objective"
    assert (r.objective[-1] < 0.5 * r.objective[0]).all()


def test_tv_gradient_descent_result_is_a_stationary_point():
    A, x, d = _problem(size=16)
    r = tv_gradient_descent(A, d, lam=1e-2, delta=0.1, max_iter=5000, tol=1e-12)
    grad = A.adjoint(A(r.x) - d) + 1e-2 * tv_grad(r.x, 0.1)
    assert float(grad.norm()) < 1e-6 * float(A.adjoint(d).norm())


def test_tv_beats_blurred_input_and_direct_inverse():
    A, x, d = _problem(size=48)
    r = tv_gradient_descent(A, d, lam=2e-3, max_iter=300, momentum=True)
    assert float(psnr(r.x, x)) > float(psnr(d, x)) + 1.0
    assert float(psnr(r.x, x)) > float(psnr(direct_inverse(A, d, max_iter=200), x)) + 5.0


def test_early_stopping_is_per_image():
    A, x, d = _problem(size=16)
    r = tv_gradient_descent(A, d, lam=1e-2, max_iter=400, tol=1e-4)
    assert r.converged.all() and (r.iterations < 400).all()
    alone = tv_gradient_descent(A, d[:1], lam=1e-2, max_iter=400, tol=1e-4)
    torch.testing.assert_close(alone.x, r.x[:1], rtol=0, atol=1e-12)
    assert int(alone.iterations[0]) == int(r.iterations[0])


@pytest.mark.parametrize("padding", ["zeros", "circular"])
def test_direct_inverse_recovers_noise_free_images(padding):
    A, x, _ = _problem(padding=padding, size=16)
    x_rec = direct_inverse(A, A(x), max_iter=5000, tol=1e-13)
    assert float(psnr(x_rec, x)) > 45


def test_direct_inverse_of_noisy_data_is_worse_than_the_measurement():
    A, x, d = _problem(padding="circular", size=32)
    assert float(psnr(direct_inverse(A, d), x)) < float(psnr(d, x)) - 10


@pytest.mark.parametrize("padding", ["zeros", "circular"])
def test_tikhonov_solves_its_normal_equations(padding):
    A, x, d = _problem(padding=padding, size=16)
    lam = 0.05
    xt = tikhonov(A, d, lam, tol=1e-12, max_iter=2000)
    resid = A.normal(xt) + lam * xt - A.adjoint(d)
    assert float(resid.norm()) < 1e-8 * float(A.adjoint(d).norm())


def test_tune_weight_picks_the_best_validation_score():
    A, x, d = _problem(size=16)
    calls = []

    def rec(w):
        calls.append(w)
        return tikhonov(A, d, w)

    lines = []
    t = tune_weight(rec, x, [1e-3, 1e-2, 1e-1, 1.0], progress=lines.append)
    assert calls == [1e-3, 1e-2, 1e-1, 1.0]
    assert t.psnr[t.weights.index(t.best)] == max(t.psnr)
    assert len(lines) == 4 and lines[0].startswith("1/4: 0.001 -> ")
    with pytest.raises(ValueError):
        tune_weight(rec, x, [])
    # settings given as tuples come back as JSON-ready lists, the best among them
    t2 = tune_weight(lambda w: tikhonov(A, d, w[0] * w[1]), x, [(1e-3, 1.0), (1e-2, 1.0), (1e-2, 10.0)])
    assert t2.weights == [[1e-3, 1.0], [1e-2, 1.0], [1e-2, 10.0]] and t2.best in t2.weights
    assert t2.psnr[t2.weights.index(t2.best)] == max(t2.psnr)


def test_format_weight_prints_each_kind_of_tuned_setting():
    from jfb_core.evaluate import format_weight

    assert format_weight(None) == ""
    assert format_weight(0.002) == "2.0e-03" and format_weight(0.002, "{:.0e}") == "2e-03"
    assert format_weight([1.9, 0.2]) == "1.9/0.2" == format_weight((1.9, 0.2))
