"""Each backward mode computes what it claims (float64, tiny problems)."""

import pytest
import torch

from jfb_core.gradients import BackwardStats, attach
from jfb_core.models import DEGRAD, DnCNN
from jfb_core.operators import blur_from_setting


def _model(mode="ift", seed=0, **kw):
    torch.manual_seed(seed)
    f = DnCNN(depth=3, channels=4, lipschitz=0.9).double()
    m = DEGRAD(blur_from_setting("5x5_s1"), f, eta=0.45, tol=1e-13, max_iter=500, grad_mode=mode,
               backward_tol=1e-13, backward_max_iter=2000, **kw).double().eval()
    return m


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


@pytest.mark.parametrize("solver", ["fixed_point", "cg_normal"])
def test_ift_equals_the_dense_adjoint_solve(solver):
    model = _model("ift", backward_solver=solver)
    x, d = _data(size=4)
    g_ift = _param_grad(model, d, x)
    assert model.last_backward.mode == "ift" and max(model.last_backward.residual) <= 1e-10
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
        stats = BackwardStats()
        out = attach(T, z_star, mode=mode, stats=stats)
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
