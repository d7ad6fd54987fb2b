import math

import pytest
import torch

from jfb_core.solvers import anderson, fixed_point, relative_residual, solve

SOLVERS = [fixed_point, anderson]


def _linear_problem(n=40, batch=4, rho=0.9, cond_spread=True, seed=0):
    """Batched contraction f(z) = M z + b_i (float64) with its exact fixed points."""
    g = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(n, n, generator=g, dtype=torch.float64))
    ev = torch.linspace(-0.5 * rho if cond_spread else rho, rho, n, dtype=torch.float64)
    M = q @ torch.diag(ev) @ q.T
    b = torch.randn(batch, n, generator=g, dtype=torch.float64)
    z_star = torch.linalg.solve(torch.eye(n, dtype=torch.float64) - M, b.T).T
    return (lambda z: z @ M.T + b), z_star, M, b


@pytest.mark.parametrize("solver", SOLVERS, ids=lambda s: s.__name__)
def test_reaches_the_exact_fixed_point_to_tolerance(solver):
    f, z_star, M, _ = _linear_problem(rho=0.8)
    tol = 1e-10
    r = solver(f, torch.zeros_like(z_star), tol=tol, max_iter=500)
    assert r.converged.all()
    assert (relative_residual(f(r.z), r.z) <= tol).all()
    # ||z - z*|| <= ||f(z) - z|| / (1 - rho) for a contraction with constant rho
    bound = tol * f(r.z).norm(dim=1) / (1 - 0.8)
    assert ((r.z - z_star).norm(dim=1) <= bound * (1 + 1e-6)).all()


def test_anderson_needs_3x_fewer_evaluations_on_an_ill_conditioned_contraction():
    # eigenvalues spread over [0, 0.99]: plain iteration contracts by 0.99 per step
    g = torch.Generator().manual_seed(2)
    q, _ = torch.linalg.qr(torch.randn(60, 60, generator=g, dtype=torch.float64))
    M = q @ torch.diag(torch.linspace(0.0, 0.99, 60, dtype=torch.float64)) @ q.T
    b = torch.randn(3, 60, generator=g, dtype=torch.float64)
    f = lambda z: z @ M.T + b  # noqa: E731
    z0 = torch.zeros(3, 60, dtype=torch.float64)
    plain = fixed_point(f, z0, tol=1e-6, max_iter=10_000)
    acc = anderson(f, z0, m=5, tol=1e-6, max_iter=10_000)
    assert plain.converged.all() and acc.converged.all()
    assert 3 * acc.nfe <= plain.nfe, (acc.nfe, plain.nfe)


@pytest.mark.parametrize("solver", SOLVERS, ids=lambda s: s.__name__)
def test_a_sample_does_not_depend_on_its_batch(solver):
    f_all, _, M, b = _linear_problem(batch=5, rho=0.9)
    z0 = torch.randn(5, M.shape[0], dtype=torch.float64)
    full = solver(f_all, z0, tol=1e-6, max_iter=300)
    for i in (0, 3):
        f_one = lambda z, i=i: z @ M.T + b[i:i + 1]  # noqa: E731
        alone = solver(f_one, z0[i:i + 1], tol=1e-6, max_iter=300)
        torch.testing.assert_close(alone.z[0], full.z[i], rtol=0, atol=1e-12)
        assert int(alone.iterations[0]) == int(full.iterations[i])


def _rotation_on_the_circle(z):
    """No fixed point: rotate by 90 degrees and normalise (residual >= 1 everywhere)."""
    rot = torch.stack([-z[:, 1], z[:, 0]], dim=1)
    return rot / rot.norm(dim=1, keepdim=True).clamp_min(1e-12)


@pytest.mark.parametrize("solver", SOLVERS, ids=lambda s: s.__name__)
def test_non_contractive_samples_fail_cleanly(solver):
    contraction = lambda z: 0.5 * z + 1.0  # noqa: E731

    def f(z):  # sample 0 contracts, sample 1 has no fixed point
        return torch.cat([contraction(z[:1]), _rotation_on_the_circle(z[1:])])

    z0 = torch.tensor([[0.3, -0.2], [1.0, 0.0]], dtype=torch.float64)
    r = solver(f, z0, tol=1e-8, max_iter=60)
    assert r.converged.tolist() == [True, False]
    assert torch.isfinite(r.z).all() and torch.isfinite(r.residual).all()
    torch.testing.assert_close(r.z[0], torch.tensor([2.0, 2.0], dtype=torch.float64), rtol=0, atol=1e-7)


def test_anderson_falls_back_when_the_least_squares_system_is_singular():
    shift = torch.tensor([[1.0, 2.0]], dtype=torch.float64)
    # a translation: every residual column is the same vector, so with lam = 0 the
    # bordered system is singular from the second step on
    r = anderson(lambda z: z + shift, torch.zeros(1, 2, dtype=torch.float64), m=3, lam=0.0,
                 tol=1e-12, max_iter=6)
    assert r.fallbacks > 0
    assert torch.isfinite(r.z).all() and not bool(r.converged.any())


def test_returns_the_lowest_residual_iterate():
    factors = iter([2.0, 1.01, 3.0, 4.0, 5.0, 6.0])  # residuals 0.5, 0.0099, 0.67, 0.75, ...
    seen = []

    def f(z):
        seen.append(z.clone())
        return z * next(factors)

    r = fixed_point(f, torch.ones(1, 3, dtype=torch.float64), tol=1e-6, max_iter=5)
    assert torch.equal(r.z, seen[1]) and not r.converged.any()
    assert math.isclose(float(r.residual[0]), 0.01 / 1.01, rel_tol=1e-12)
    assert r.history.shape == (r.nfe, 1) == (6, 1)


@pytest.mark.parametrize("solver", SOLVERS, ids=lambda s: s.__name__)
def test_any_shape_and_no_autograd_graph(solver):
    w = torch.tensor(0.5, requires_grad=True)
    x = torch.randn(2, 3, 4, 5)
    r = solver(lambda z: w * z + x, torch.zeros(2, 3, 4, 5), tol=1e-5)
    assert r.z.shape == (2, 3, 4, 5) and not r.z.requires_grad and r.z.grad_fn is None
    torch.testing.assert_close(r.z, 2 * x, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("solver", SOLVERS, ids=lambda s: s.__name__)
def test_unknown_keyword_arguments_raise(solver):
    with pytest.raises(TypeError, match="tolerance"):
        solver(lambda z: z, torch.zeros(1, 2), tolerance=1e-3)


def test_dispatch_and_bad_arguments():
    f = lambda z: 0.5 * z  # noqa: E731
    assert solve(f, torch.ones(1, 2), method="fixed_point").converged.all()
    with pytest.raises(ValueError):
        solve(f, torch.ones(1, 2), method="newton")
    with pytest.raises(ValueError):
        anderson(f, torch.ones(1, 2), m=0)
    with pytest.raises(ValueError):
        fixed_point(f, torch.ones(1, 2), tol=0)


@pytest.mark.parametrize("solver", SOLVERS, ids=lambda s: s.__name__)
def test_a_given_scale_replaces_the_residual_denominator(solver):
    # with scale = ||b|| the stopping rule is ||f(z) - z|| <= tol ||b||, checked per sample
    f, z_star, _, b = _linear_problem(rho=0.8)
    scale = b.norm(dim=1)
    r = solver(f, torch.zeros_like(z_star), tol=1e-9, max_iter=500, scale=scale)
    torch.testing.assert_close(r.residual, (f(r.z) - r.z).norm(dim=1) / scale, rtol=1e-10, atol=0)
    assert r.converged.all() and float(r.residual.max()) <= 1e-9
    torch.testing.assert_close(relative_residual(f(r.z), r.z, scale), r.residual, rtol=0, atol=0)
    # a scale 1e6 times larger stops far earlier: the rule really uses it
    loose = solver(f, torch.zeros_like(z_star), tol=1e-9, max_iter=500, scale=1e6 * scale)
    assert loose.nfe < r.nfe


def _anderson_reference(f, x0, m, lam, beta, steps):
    """Algorithm 3.1 with damping, one sample, written out: the points it evaluates f at."""
    xs, fs = [x0], [f(x0)]
    for _ in range(steps):
        X, F = torch.stack(xs[-(m + 1):], 1), torch.stack(fs[-(m + 1):], 1)  # (n, m_k + 1)
        G = F - X
        H = G.T @ G
        H = H + lam * H.diagonal().max() * torch.eye(H.shape[0], dtype=H.dtype)
        w = torch.linalg.solve(H, torch.ones(H.shape[0], dtype=H.dtype))
        alpha = w / w.sum()  # argmin alpha^T H alpha subject to sum(alpha) = 1
        x = beta * (F @ alpha) + (1 - beta) * (X @ alpha)
        xs.append(x)
        fs.append(f(x))
    return torch.stack(xs)


@pytest.mark.parametrize("beta", [1.0, 0.5, 0.2])
def test_anderson_with_damping_follows_the_written_out_algorithm(beta):
    """Every point the library evaluates equals the reference's, for damping beta < 1 as well
    (a solver that ignored beta would follow the beta = 1 path)."""
    _, _, M, b = _linear_problem(n=30, batch=2, rho=0.9, seed=3)

    def f(z):  # a nonlinear contraction
        return z @ M.T + b + 0.05 * torch.tanh(z)

    seen = []

    def recording(z):
        seen.append(z.clone())
        return f(z)

    steps, m, lam = 9, 3, 1e-4
    anderson(recording, torch.zeros_like(b), m=m, lam=lam, beta=beta, tol=1e-300, max_iter=steps)
    points = torch.stack(seen, 1)  # (batch, steps + 1, n)
    for i in range(b.shape[0]):
        ref = _anderson_reference(lambda z: z @ M.T + b[i] + 0.05 * torch.tanh(z),
                                  torch.zeros_like(b[i]), m, lam, beta, steps)
        assert torch.allclose(points[i], ref, rtol=1e-9, atol=1e-10)
    if beta < 1:  # and the damped path is a different one
        undamped = _anderson_reference(lambda z: z @ M.T + b[0] + 0.05 * torch.tanh(z), torch.zeros_like(b[0]),
                                       m, lam, 1.0, steps)
        assert (points[0] - undamped).abs().max() > 1e-3
