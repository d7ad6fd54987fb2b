"""Each backward mode computes what it claims (float64, tiny problems)."""

import pytest
import torch

from jfb_core.errors import UserError
from jfb_core.gradients import (IFT, JFB, BackwardStats, Neumann, Unrolled, adjoint_solve_fixed_point, attach,
                                make_backward)
from jfb_core.models import DEGRAD, DnCNN
from jfb_core.operators import blur_from_setting


def _model(mode="ift", seed=0, eta=0.45, **options):
    torch.manual_seed(seed)
    f = DnCNN(depth=3, channels=4, lipschitz=0.9).double()
    backward = make_backward(mode, **{"tol": 1e-13, "max_iter": 2000, **options})
    return DEGRAD(blur_from_setting("5x5_s1"), f, eta=eta, tol=1e-13, max_iter=500, backward=backward).double().eval()


def _data(seed=0, size=6):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(2, 3, size, size, generator=g, dtype=torch.float64)
    d = torch.rand(2, 3, size, size, generator=g, dtype=torch.float64)
    return x, d


def _param_grad(model, d, x):
    model.zero_grad(set_to_none=True)
    ((model(d) - x) ** 2).sum().backward()
    return torch.cat([p.grad.flatten() for p in model.parameters()])


def _copy(model, mode, **kw):
    other = _model(mode, **kw)
    other.load_state_dict(model.state_dict())
    return other


def test_ift_passes_gradcheck_with_respect_to_the_measurement():
    model = _model("ift")
    _, d = _data(size=5)
    model(d)  # certify the layer norms once, outside gradcheck
    assert torch.autograd.gradcheck(lambda dd: model(dd), (d.clone().requires_grad_(True),),
                                    eps=1e-6, atol=1e-6, rtol=1e-5)


def test_ift_equals_backprop_through_many_unrolled_iterations():
    model = _model("ift")
    x, d = _data()
    model(d)
    unrolled = _copy(model, "unrolled", unroll_k=400)
    g_ift, g_unr = _param_grad(model, d, x), _param_grad(unrolled, d, x)
    assert float((g_ift - g_unr).norm() / g_unr.norm()) <= 1e-6


@pytest.mark.parametrize("solver", ["fixed_point", "anderson", "cg_normal"])
def test_ift_equals_the_dense_adjoint_solve(solver):
    model = _model("ift", solver=solver)
    x, d = _data(size=4)
    model.zero_grad(set_to_none=True)
    out, stats = model.run(d)
    assert stats.backward.residual == []  # filled in by the backward pass, not before
    ((out - x) ** 2).sum().backward()
    g_ift = torch.cat([p.grad.flatten() for p in model.parameters()])
    assert stats.backward.mode == "ift" and len(stats.backward.residual) == len(d)
    assert max(stats.backward.residual) <= 1e-10 and stats.backward.iterations > 1
    # dense: J = dT/dz at z*, w = (I - J)^{-T} grad, then dl/dtheta = w^T dT/dtheta
    with torch.no_grad():
        z_star = model.solve(d).z
    n = z_star.numel()
    J = torch.autograd.functional.jacobian(lambda z: model.T(z.view_as(z_star), d).flatten(), z_star.flatten())
    out = model.T(z_star, d)
    g = 2 * (out.detach() - x).flatten()
    w = torch.linalg.solve((torch.eye(n, dtype=torch.float64) - J).T, g)
    grads = torch.autograd.grad(model.T(z_star, d), list(model.parameters()), w.view_as(z_star))
    g_dense = torch.cat([t.flatten() for t in grads])
    assert float((g_ift - g_dense).norm() / g_dense.norm()) <= 1e-8


def test_neumann_approaches_ift_as_k_grows():
    model = _model("ift")
    x, d = _data()
    g_ift = _param_grad(model, d, x)
    errors = []
    for k in (0, 1, 2, 4, 8, 16):
        g_k = _param_grad(_copy(model, "neumann", neumann_k=k), d, x)
        errors.append(float((g_k - g_ift).norm() / g_ift.norm()))
    assert all(b < a for a, b in zip(errors, errors[1:]))
    assert errors[-1] < 1e-3
    g_jfb = _param_grad(_copy(model, "jfb"), d, x)
    g_n0 = _param_grad(_copy(model, "neumann", neumann_k=0), d, x)
    torch.testing.assert_close(g_jfb, g_n0, rtol=1e-12, atol=1e-14)  # Neumann-0 is JFB


def test_jfb_equals_ift_when_T_does_not_depend_on_z():
    theta = torch.randn(3, 4, dtype=torch.float64, requires_grad=True)
    T = lambda z: torch.tanh(theta) + 0 * z  # noqa: E731  dT/dz = 0
    z_star = torch.tanh(theta).detach()
    grads = {}
    for mode in ("jfb", "ift"):
        out, stats = attach(T, z_star, mode=mode)
        assert isinstance(stats, BackwardStats) and stats.mode == mode
        (grads[mode],) = torch.autograd.grad((out**3).sum(), theta)
    torch.testing.assert_close(grads["jfb"], grads["ift"], rtol=1e-12, atol=1e-14)


def test_jfb_is_a_descent_direction_on_random_contractive_degrad():
    cosines = []
    for seed in range(5):
        model = _model("ift", seed=seed)
        x, d = _data(seed)
        g_ift = _param_grad(model, d, x)
        g_jfb = _param_grad(_copy(model, "jfb", seed=seed), d, x)
        cosines.append(float(g_jfb @ g_ift / (g_jfb.norm() * g_ift.norm())))
    assert min(cosines) > 0, cosines


def test_bad_modes_are_rejected():
    with pytest.raises(ValueError):
        _model("exact")
    with pytest.raises(ValueError):
        attach(lambda z: z, torch.zeros(1, 2), mode="unrolled")


@pytest.mark.parametrize("method", ["fixed_point", "anderson"])
def test_the_adjoint_solve_meets_its_residual_per_sample_on_a_known_linear_map(method):
    # J^T is a per-sample matrix with norm 0.9 and 0.3: (I - J)^T w = g has a dense answer,
    # and each sample must meet ||(I - J)^T w - g|| <= tol ||g||, reported as it is
    g_ = torch.Generator().manual_seed(3)
    n = 12
    mats = []
    for norm in (0.9, 0.3):
        q, _ = torch.linalg.qr(torch.randn(n, n, generator=g_, dtype=torch.float64))
        mats.append(norm * q)
    M = torch.stack(mats)  # (2, n, n), M[i] plays J^T for sample i
    vjp = lambda v: torch.einsum("bij,bj->bi", M, v)  # noqa: E731
    g = torch.randn(2, n, generator=g_, dtype=torch.float64)
    w, products, res = adjoint_solve_fixed_point(vjp, g, tol=1e-10, max_iter=1000, method=method)
    exact = torch.linalg.solve(torch.eye(n, dtype=torch.float64) - M, g)
    measured = (w - vjp(w) - g).norm(dim=1) / g.norm(dim=1)
    torch.testing.assert_close(res, measured, rtol=1e-6, atol=1e-15)
    assert float(res.max()) <= 1e-10 and products > 1
    assert float(((w - exact).norm(dim=1) / exact.norm(dim=1)).max()) <= 1e-8


def test_anderson_adjoint_needs_fewer_products_than_plain_iteration_for_the_same_gradient():
    model = _model("ift", solver="fixed_point", eta=0.05)  # a slow contraction: 1 - eta (...)
    x, d = _data()
    stats, grads = {}, {}
    for solver in ("fixed_point", "anderson"):
        model.set_backward("ift", tol=1e-12, max_iter=5000, solver=solver)
        model.zero_grad(set_to_none=True)
        out, run = model.run(d)
        ((out - x) ** 2).sum().backward()
        grads[solver] = torch.cat([p.grad.flatten() for p in model.parameters()])
        stats[solver] = run.backward
    assert max(stats["anderson"].residual) <= 1e-12 and max(stats["fixed_point"].residual) <= 1e-12
    assert stats["anderson"].iterations < stats["fixed_point"].iterations / 2
    torch.testing.assert_close(grads["anderson"], grads["fixed_point"], rtol=1e-8, atol=1e-12)


def test_the_backward_strategy_is_chosen_once_and_checks_its_options():
    assert isinstance(make_backward("jfb"), JFB) and make_backward("neumann", neumann_k=3) == Neumann(k=3)
    assert make_backward("ift", tol=1e-3, max_iter=7, solver="anderson") == IFT(1e-3, 7, "anderson")
    assert make_backward("unrolled", unroll_k=4) == Unrolled(k=4)
    # one default per option, owned by its strategy, and training uses the same ones
    from jfb_core.train import TrainOptions

    options = TrainOptions()
    assert make_backward("ift") == IFT() == IFT(options.backward_tol, options.backward_max_iter, options.backward_solver)
    assert make_backward("unrolled") == Unrolled(options.unroll_k) and make_backward("neumann") == Neumann(options.neumann_k)
    with pytest.raises(UserError, match="strategy"):
        DEGRAD(blur_from_setting("5x5_s1"), DnCNN(depth=2, channels=2), backward="ift")
    model = _model("jfb")
    assert model.grad_mode == "jfb" and model.set_backward("unrolled", unroll_k=3) is model
    assert model.grad_mode == "unrolled" and model.backward == Unrolled(k=3)
    for bad in (dict(mode="exact"), dict(mode="neumann", neumann_k=-1), dict(mode="unrolled", unroll_k=0),
                dict(mode="ift", solver="gmres"), dict(mode="ift", tol=0.0), dict(mode="ift", max_iter=0),
                dict(mode="jfb", solver="gmres"), dict(mode="jfb", unroll_k=0)):  # checked whatever the mode
        with pytest.raises(UserError):
            make_backward(**bad)
    with pytest.raises(UserError):
        _model("jfb", solver="typo")


def test_unrolled_backpropagates_through_its_recorded_steps_from_the_start():
    model = _model("unrolled", unroll_k=3)
    _, d = _data()
    out, run = model.run(d)
    z = model.A.adjoint(d)
    for _ in range(3):
        z = model.T(z, d)
    assert run.solve is None and run.backward.mode == "unrolled" and run.backward.iterations == 3
    torch.testing.assert_close(out, z, rtol=0, atol=0)
    with pytest.raises(UserError):
        model.attach_gradient(out.detach(), d)
