import math

import pytest
import torch

from jfb_core.operators import (BLURS, GaussianBlur, LinearOperator, PADDINGS, add_noise, blur_from_setting,
                                conjugate_gradient, gaussian_kernel2d, inverse_iteration,
                                power_iteration)

SIZES = [1, 3, 5, 7, 9]


def _dense(A: GaussianBlur, h: int, w: int, adjoint: bool = False) -> torch.Tensor:
    """The matrix of A (or of A.adjoint) on one channel, column by column."""
    n = h * w
    basis = torch.eye(n, dtype=torch.float64).view(n, 1, h, w)
    out = (A.adjoint if adjoint else A)(basis)
    return out.view(n, n).T


@pytest.mark.parametrize("padding", PADDINGS)
@pytest.mark.parametrize("k", SIZES)
def test_adjoint_identity_float64(padding, k):
    A = GaussianBlur(k, sigma=0.5 + k / 3, channels=3, padding=padding)
    g = torch.Generator().manual_seed(k)
    x = torch.randn(2, 3, 13, 11, generator=g, dtype=torch.float64)
    y = torch.randn(2, 3, 13, 11, generator=g, dtype=torch.float64)
    lhs = (A(x) * y).sum()
    rhs = (x * A.adjoint(y)).sum()
    assert abs(lhs - rhs) <= 1e-12 * abs(lhs)


def _ip(a, b):
    return float((a * b).sum())


@pytest.mark.parametrize("padding", PADDINGS)
@pytest.mark.parametrize("name", sorted(BLURS))
def test_every_operator_meets_the_linear_operator_protocol(name, padding):
    """For every named blur and boundary condition: a LinearOperator whose adjoint is exact,
    whose normal operator is symmetric with its spectrum inside the stated bounds, and whose
    proximal solve inverts A^T A + rho I (and is symmetric, as that inverse is)."""
    A = blur_from_setting(name, padding=padding)
    assert isinstance(A, LinearOperator) and A.padding == padding
    g = torch.Generator().manual_seed(len(name) + len(padding))
    x, y = (torch.randn(2, 3, 12, 10, generator=g, dtype=torch.float64) for _ in range(2))
    assert abs(_ip(A(x), y) - _ip(x, A.adjoint(y))) <= 1e-12 * abs(_ip(A(x), y))
    assert abs(_ip(A.normal(x), y) - _ip(x, A.normal(y))) <= 1e-12 * abs(_ip(A.normal(x), y))
    spec = A.eigenvalue_bounds(12, 10)
    rayleigh = (A.normal(x) * x).flatten(1).sum(1) / (x * x).flatten(1).sum(1)
    assert bool((rayleigh >= spec.mu * (1 - 1e-9)).all() and (rayleigh <= spec.L * (1 + 1e-9)).all())
    rho = 0.3
    sx = A.shifted_normal_solve(x, rho, tol=1e-13, max_iter=2000)
    torch.testing.assert_close(A.normal(sx) + rho * sx, x, rtol=0, atol=1e-10)
    sy = A.shifted_normal_solve(y, rho, tol=1e-13, max_iter=2000)
    assert abs(_ip(sx, y) - _ip(x, sy)) <= 1e-9 * abs(_ip(sx, y))


@pytest.mark.parametrize("padding", PADDINGS)
def test_adjoint_is_transpose_of_dense_matrix(padding):
    A = GaussianBlur(5, 1.3, channels=1, padding=padding)
    M, Mt = _dense(A, 8, 7), _dense(A, 8, 7, adjoint=True)
    torch.testing.assert_close(Mt, M.T, rtol=0, atol=1e-14)


@pytest.mark.parametrize("padding", PADDINGS)
def test_autograd_adjoint_equals_explicit(padding):
    A = GaussianBlur(7, 2.0, channels=3, padding=padding)
    x = torch.randn(2, 3, 10, 12, dtype=torch.float64, requires_grad=True)
    y = torch.randn(2, 3, 10, 12, dtype=torch.float64)
    (vjp,) = torch.autograd.grad(A(x), x, grad_outputs=y)
    torch.testing.assert_close(vjp, A.adjoint(y), rtol=1e-12, atol=1e-14)


def test_blur_equals_2d_convolution_with_the_kernel():
    A = GaussianBlur(5, 1.0, channels=1, padding="zeros")
    x = torch.randn(1, 1, 9, 9, dtype=torch.float64)
    k = gaussian_kernel2d(5, 1.0).view(1, 1, 5, 5)
    ref = torch.nn.functional.conv2d(x, k, padding=2)
    torch.testing.assert_close(A(x), ref, rtol=0, atol=1e-14)
    assert math.isclose(float(k.sum()), 1.0, rel_tol=1e-14)


@pytest.mark.parametrize("k", [3, 5, 9])
def test_circular_blur_equals_fft(k):
    A = GaussianBlur(k, 1.7, channels=2, padding="circular")
    x = torch.randn(3, 2, 16, 12, dtype=torch.float64)
    h = A.transfer_function(16, 12)
    ref = torch.fft.ifft2(h * torch.fft.fft2(x)).real
    torch.testing.assert_close(A(x), ref, rtol=0, atol=1e-13)


@pytest.mark.parametrize("padding", PADDINGS)
def test_spectrum_matches_dense_eigendecomposition(padding):
    A = GaussianBlur(5, 1.0, channels=1, padding=padding)
    h, w = 9, 8
    M = _dense(A, h, w)
    ev = torch.linalg.eigvalsh(M.T @ M)
    spec = A.eigenvalue_bounds(h, w)
    assert math.isclose(spec.L, float(ev.max()), rel_tol=1e-10)
    assert math.isclose(spec.mu, float(ev.min()), rel_tol=1e-6)
    torch.testing.assert_close(A.eigenvalues(h, w), ev, rtol=0, atol=1e-12)


def test_matrix_free_power_and_inverse_iteration_match_dense():
    A = GaussianBlur(3, 0.8, channels=1, padding="zeros")
    M = _dense(A, 6, 7)
    ev = torch.linalg.eigvalsh(M.T @ M)
    L = power_iteration(A.normal, (1, 1, 6, 7), iters=2000, tol=1e-14)
    mu = inverse_iteration(A.normal, (1, 1, 6, 7))
    assert math.isclose(L, float(ev.max()), rel_tol=1e-8)
    assert math.isclose(mu, float(ev.min()), rel_tol=1e-6)


def test_normalised_blur_has_L_at_most_one_and_tiny_mu():
    # A normalised non-negative kernel never amplifies: L <= 1 (zeros, circular).
    for padding in ("zeros", "circular"):
        spec = blur_from_setting("9x9_var5", padding=padding).eigenvalue_bounds(32, 32)
        assert spec.L <= 1 + 1e-12
        assert spec.mu < 1e-6 and spec.condition > 1e6


def test_cg_solves_each_sample_independently():
    A = GaussianBlur(5, 1.0, channels=1, padding="zeros")
    op = lambda v: A.normal(v) + 0.1 * v  # noqa: E731
    b = torch.randn(3, 1, 8, 8, dtype=torch.float64)
    x, iters = conjugate_gradient(op, b, tol=1e-12, max_iter=500)
    torch.testing.assert_close(op(x), b, rtol=0, atol=1e-10)
    x1, _ = conjugate_gradient(op, b[1:2], tol=1e-12, max_iter=500)
    torch.testing.assert_close(x[1:2], x1, rtol=0, atol=1e-12)
    assert iters.shape == (3,)


def test_float32_and_devices():
    A = GaussianBlur(5, 1.0)
    x = torch.rand(2, 3, 16, 16)
    assert A(x).dtype == torch.float32 and A.adjoint(x).dtype == torch.float32
    if torch.cuda.is_available():  # exercised on a GPU machine
        xc = x.cuda()
        torch.testing.assert_close(A(xc).cpu(), A(x), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("bad", [dict(kernel_size=4, sigma=1.0), dict(kernel_size=5, sigma=0.0),
                                 dict(kernel_size=5, sigma=1.0, padding="mirror")])
def test_bad_parameters_rejected(bad):
    with pytest.raises(ValueError):
        GaussianBlur(**bad)


def test_wrong_shape_rejected():
    with pytest.raises(ValueError, match="expected a"):
        GaussianBlur(5, 1.0, channels=3)(torch.rand(2, 1, 8, 8))


def test_noise_is_seeded_and_has_the_right_std():
    y = torch.zeros(4, 3, 64, 64)
    a, b = add_noise(y, 0.01, seed=3), add_noise(y, 0.01, seed=3)
    assert torch.equal(a, b)
    assert not torch.equal(a, add_noise(y, 0.01, seed=4))
    assert abs(float(a.std()) - 0.01) < 5e-4
    with pytest.raises(ValueError):
        add_noise(y, -1.0)


def test_blur_is_a_module_whose_kernel_is_a_buffer_outside_state_dicts():
    A = GaussianBlur(5, 1.0, channels=3)
    assert isinstance(A, torch.nn.Module)
    assert dict(A.named_buffers())["kernel1d"].dtype == torch.float64
    assert A.state_dict() == {}  # not persistent: a DE-GRAD checkpoint holds the network only
    x = torch.rand(2, 3, 12, 12)
    before = A(x)
    A.to(torch.float32)  # moving or casting the module leaves the operator unchanged
    assert A.kernel1d.dtype == torch.float32 and A.kernel.dtype == torch.float64
    assert torch.equal(A(x), before)
    assert torch.allclose(A.kernel, torch.outer(A.kernel1d.double(), A.kernel1d.double()), atol=1e-7)


def test_shifted_normal_solve_is_a_method_of_the_operator():
    A = GaussianBlur(5, 1.0, channels=1)
    r = torch.rand(1, 1, 10, 10, dtype=torch.float64)
    y = A.shifted_normal_solve(r, 0.1, tol=1e-12, max_iter=500)
    assert torch.allclose(A.normal(y) + 0.1 * y, r, atol=1e-9)
