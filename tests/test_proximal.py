"""The proximal data step and the averaged network of chapter 6.

``T(z) = (A^T A + rho I)^{-1} (A^T d + rho f(z))`` must have DE-GRAD's fixed points, be
``Lip(f) rho / (mu + rho)``-contractive, and differentiate correctly (the solve has its
own backward); ``DnCNN(skip=True)`` must stay ``lipschitz``-Lipschitz."""

import pytest
import torch

from jfb_core.models import DEGRAD, DnCNN, lipschitz_power, lipschitz_ratio
from jfb_core.operators import shifted_normal_solve
from jfb_core.operators import blur_from_setting

F64 = torch.float64


def _dense_normal(A, shape):
    """The matrix of ``A^T A`` on images of ``shape`` (one sample), column by column."""
    n = int(torch.tensor(shape).prod())
    eye = torch.eye(n, dtype=F64).reshape(n, *shape)
    return A.normal(eye).reshape(n, n).T


def _model(data_step="proximal", rho=0.2, seed=0, skip=True, lipschitz=0.9, blur="5x5_s1"):
    torch.manual_seed(seed)
    f = DnCNN(depth=3, channels=8, lipschitz=lipschitz, skip=skip).double()
    with torch.no_grad():  # move alpha and the biases off their initial values
        for p in f.parameters():
            if p.dim() <= 1:
                p.add_(0.3 * torch.randn_like(p))
    return DEGRAD(blur_from_setting(blur), f, eta=0.4, tol=1e-11, max_iter=3000, rho=rho,
                  data_step=data_step, inner_tol=1e-12, inner_max_iter=3000).double()


def test_shifted_solve_matches_a_dense_solve():
    A = blur_from_setting("9x9_var5")
    shape = (3, 10, 10)
    M = _dense_normal(A, shape) + 0.05 * torch.eye(300, dtype=F64)
    r = torch.randn(2, *shape, dtype=F64)
    y = shifted_normal_solve(A, r, torch.tensor(0.05, dtype=F64), tol=1e-13, max_iter=2000)
    expected = torch.linalg.solve(M, r.reshape(2, -1).T).T.reshape(2, *shape)
    torch.testing.assert_close(y, expected, rtol=1e-9, atol=1e-10)
    # a warm start changes nothing but the work
    y0 = shifted_normal_solve(A, r, torch.tensor(0.05, dtype=F64), x0=expected + 0.1, tol=1e-13, max_iter=2000)
    torch.testing.assert_close(y0, expected, rtol=1e-9, atol=1e-10)


def test_shifted_solve_gradients_pass_gradcheck():
    A = blur_from_setting("5x5_s1")
    r = torch.randn(2, 3, 8, 8, dtype=F64, requires_grad=True)
    rho = torch.tensor(0.3, dtype=F64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda r, rho: shifted_normal_solve(A, r, rho, tol=1e-13, max_iter=2000),
                                    (r, rho))


def test_shifted_solve_refuses_a_non_positive_shift():
    A = blur_from_setting("5x5_s1")
    with pytest.raises(ValueError, match="positive"):
        shifted_normal_solve(A, torch.zeros(1, 3, 8, 8), torch.tensor(0.0))


def test_averaged_network_stays_below_its_lipschitz_target():
    torch.manual_seed(3)
    f = DnCNN(depth=4, channels=8, lipschitz=0.9, skip=True).double()
    x = torch.rand(2, 3, 16, 16, dtype=F64)
    f.eval()
    assert 0 < float(f.alpha.detach()) < 1
    assert f.certify((16, 16)) <= 0.9 + 1e-9
    assert lipschitz_power(f, x) <= 0.9 + 1e-9
    # the identity is one parameter away: alpha -> 1 gives f(x) = c + 0.9 (x - c)
    with torch.no_grad():
        f.alpha_raw.fill_(40.0)
    torch.testing.assert_close(f(x), 0.5 + 0.9 * (x - 0.5))


def test_averaged_network_refuses_batchnorm_and_plain_network_has_no_alpha():
    with pytest.raises(ValueError, match="batchnorm"):
        DnCNN(depth=3, channels=8, skip=True, batchnorm="paper")
    with pytest.raises(AttributeError):
        DnCNN(depth=3, channels=8).alpha


@pytest.mark.parametrize("skip", [False, True])
def test_proximal_and_gradient_steps_share_their_fixed_point(skip):
    prox = _model("proximal", rho=0.5, skip=skip).eval()
    grad = _model("gradient", rho=0.5, skip=skip).eval()
    grad.load_state_dict(prox.state_dict())
    d = torch.rand(2, 3, 12, 12, dtype=F64)
    r_p = prox.solve(d)
    z_p, z_g = r_p.z, grad.solve(d).z
    assert r_p.converged_fraction == 1.0
    torch.testing.assert_close(z_p, z_g, rtol=1e-7, atol=1e-8)
    # and it solves the equilibrium equation A^T (A z - d) + rho (z - f(z)) = 0
    with torch.no_grad():
        residual = prox.A.adjoint(prox.A(z_p) - d) + prox.S(z_p)
    assert float(residual.abs().max()) < 1e-8


def _fd_power(T, z, iters=25, h=1e-5):
    """||J_T(z)|| by power iteration on J^T J: J v by central differences, J^T w by autograd."""
    v = torch.randn_like(z)
    v = v / v.norm()
    sigma = 0.0
    for _ in range(iters):
        with torch.no_grad():
            jv = (T(z + h * v) - T(z - h * v)) / (2 * h)
        zz = z.clone().requires_grad_(True)
        (jtjv,) = torch.autograd.grad(T(zz), zz, jv)
        sigma = float(jv.norm())
        v = jtjv / jtjv.norm()
    return sigma


@pytest.mark.parametrize("rho", [0.05, 0.5])
def test_proximal_step_is_a_contraction_with_factor_eps_rho_over_mu_plus_rho(rho):
    model = _model("proximal", rho=rho, seed=1, blur="9x9_var5").eval()
    d = torch.rand(1, 3, 12, 12, dtype=F64)
    z = torch.rand(1, 3, 12, 12, dtype=F64)
    mu = model.A.eigenvalue_bounds(12, 12).mu
    bound = 0.9 * rho / (mu + rho)
    T = lambda v: model.T(v, d)  # noqa: E731
    assert lipschitz_ratio(T, z, scale=0.5) < bound
    assert _fd_power(T, z) < bound
    assert lipschitz_power(T, z) < bound
    # the solve's forward-mode derivative (used by lipschitz_power) agrees with central differences
    v = torch.randn_like(z)
    _, jv = torch.func.jvp(T, (z,), (v,))
    with torch.no_grad():
        fd = (T(z + 1e-5 * v) - T(z - 1e-5 * v)) / 2e-5
    torch.testing.assert_close(jv, fd, rtol=1e-6, atol=1e-8)


def test_proximal_model_trains_every_parameter_and_eta_is_one_over_rho():
    model = _model("proximal", rho=0.2).train()
    d = torch.rand(2, 3, 12, 12, dtype=F64)
    model(d).square().sum().backward()
    for name, p in model.named_parameters():
        assert p.grad is not None, name  # DistributedDataParallel needs no unused parameters
    assert "eta_raw" in dict(model.named_buffers())
    assert abs(float(model.eta.detach()) - 1 / float(model.rho.detach())) < 1e-12 and abs(float(model.rho.detach()) - 0.2) < 1e-6


def test_ift_gradient_of_the_proximal_fixed_point_matches_finite_differences():
    # loss(z_star(rho)): the implicit gradient through the solve's own backward, against
    # central differences of two tight solves
    model = _model("proximal", rho=0.3, seed=2)
    model.set_backward("ift", tol=1e-12, max_iter=2000)
    model.eval()
    d = torch.rand(1, 3, 10, 10, dtype=F64)
    target = torch.rand(1, 3, 10, 10, dtype=F64)
    loss = ((model(d) - target) ** 2).sum()
    loss.backward()
    analytic = float(model.rho_raw.grad)
    h = 1e-5
    values = []
    for s in (h, -h):
        with torch.no_grad():
            model.rho_raw.add_(s)
            values.append(float(((model.solve(d).z - target) ** 2).sum()))
            model.rho_raw.sub_(s)
    numeric = (values[0] - values[1]) / (2 * h)
    assert abs(analytic - numeric) <= 1e-5 * max(1.0, abs(numeric))


def test_data_step_is_checked():
    with pytest.raises(ValueError, match="data_step"):
        _model("newton")


def test_maxmin_is_norm_preserving_and_keeps_the_bound():
    from jfb_core.models import MaxMin

    x = torch.randn(2, 6, 5, 5, dtype=F64)
    y = MaxMin()(x)
    torch.testing.assert_close(y.flatten(1).norm(dim=1), x.flatten(1).norm(dim=1))
    a, b = x.chunk(2, dim=1)
    assert bool((y[:, :3] >= y[:, 3:]).all()) and torch.equal(y[:, :3], torch.maximum(a, b))
    torch.manual_seed(4)
    f = DnCNN(depth=3, channels=8, lipschitz=0.99, skip=True, activation="maxmin").double().eval()
    z = torch.rand(2, 3, 12, 12, dtype=F64)
    assert f.certify((12, 12)) <= 0.99 + 1e-9 and lipschitz_power(f, z) <= 0.99
    with pytest.raises(ValueError, match="even"):
        DnCNN(depth=3, channels=7, activation="maxmin")
    with pytest.raises(ValueError, match="activation"):
        DnCNN(depth=3, channels=8, activation="tanh")
