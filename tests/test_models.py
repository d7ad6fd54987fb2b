import pytest
import torch

from jfb_core.models import DEGRAD, DnCNN, SpectralConv2d, lipschitz_power, lipschitz_ratio
from jfb_core.operators import blur_from_setting


def _dense_conv_matrix(layer: SpectralConv2d, h: int, w: int) -> torch.Tensor:
    """Matrix of the layer's (normalised, bias-free) convolution on an h x w input."""
    n = layer.in_channels * h * w
    basis = torch.eye(n, dtype=torch.float64).view(n, layer.in_channels, h, w)
    weight = layer.normalised_weight().detach().double()
    out = torch.nn.functional.conv2d(basis, weight, padding=layer.kernel_size // 2)
    return out.reshape(n, -1).T


def test_spectral_normalisation_bounds_the_operator_norm():
    torch.manual_seed(0)
    layer = SpectralConv2d(2, 3, 3, bound=0.7).double().eval()
    layer(torch.randn(1, 2, 8, 8, dtype=torch.float64))  # first input: certify at 8x8
    s8 = torch.linalg.svdvals(_dense_conv_matrix(layer, 8, 8)).max()
    s5 = torch.linalg.svdvals(_dense_conv_matrix(layer, 5, 5)).max()
    assert float(s8) <= 0.7 * (1 + 1e-4) and float(s8) >= 0.7 * (1 - 1e-3)
    assert float(s5) <= 0.7 * (1 + 1e-4)  # smaller inputs: smaller norm (zero padding)


def test_reshaped_weight_norm_underestimates_but_the_operator_norm_does_not():
    layer = SpectralConv2d(1, 1, 3, bound=1.0).double()
    with torch.no_grad():
        layer.weight.fill_(1.0)  # a 3x3 box sum: gain 9 on a constant image
    reshaped = float(layer.weight.detach().reshape(1, -1).norm())  # = 3
    sigma = layer.certify((32, 32))
    assert abs(reshaped - 3.0) < 1e-12 and sigma > 8.5  # up to 3x larger than the reshaped norm
    layer.eval()
    dense = torch.linalg.svdvals(_dense_conv_matrix(layer, 12, 12)).max()
    assert float(dense) <= 1.0 + 1e-6


def test_power_iteration_estimate_matches_dense_svd():
    torch.manual_seed(1)
    layer = SpectralConv2d(2, 2, 3, bound=100.0).double()  # bound never active
    sigma = layer.certify((6, 6), iters=2000)
    layer.eval()
    dense = torch.linalg.svdvals(_dense_conv_matrix(layer, 6, 6)).max()
    assert abs(sigma - float(dense)) <= 1e-4 * float(dense)


def _degrad(seed=0, batchnorm="none", eta=0.4, rho=1.0):
    torch.manual_seed(seed)
    f = DnCNN(depth=4, channels=8, lipschitz=0.9, batchnorm=batchnorm).double()
    return DEGRAD(blur_from_setting("5x5_s1"), f, eta=eta, tol=1e-6, max_iter=200, rho=rho)


def test_whole_network_is_lipschitz_below_its_target():
    model = _degrad()
    x = torch.rand(2, 3, 16, 16, dtype=torch.float64)
    model.f.eval()
    model.f(x)
    assert model.f.certify((16, 16)) <= 0.9 + 1e-9
    assert lipschitz_power(model.f, x) <= 0.9


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_default_T_is_a_contraction(seed):
    model = _degrad(seed).eval()
    d = torch.rand(2, 3, 16, 16, dtype=torch.float64)
    z = torch.rand(2, 3, 16, 16, dtype=torch.float64)
    eta = float(model.eta.detach())
    gamma = 1 - eta * (1 + 0) + eta * 0.9  # Theorem 3.1 with mu >= 0
    T = lambda v: model.T(v, d)  # noqa: E731
    assert lipschitz_ratio(T, z, scale=0.5) < gamma < 1
    assert lipschitz_power(T, z) < gamma


def test_forward_reaches_the_fixed_point_and_keeps_one_application_of_T():
    model = _degrad().train()
    d = torch.rand(3, 3, 16, 16, dtype=torch.float64)
    out, run = model.run(d)
    stats = run.solve
    assert stats.converged_fraction == 1.0 and max(stats.residual) <= model.tol
    # the output is T(z*) and z* satisfies ||T(z*) - z*|| <= tol ||T(z*)||
    with torch.no_grad():
        z_star = model.solve(d).z
        t = model.T(z_star, d)
    assert float(((t - z_star).flatten(1).norm(dim=1) / t.flatten(1).norm(dim=1)).max()) <= model.tol
    torch.testing.assert_close(out.detach(), t, rtol=0, atol=1e-12)

    # one pass through the network, plus (in training mode) one convolution per layer for
    # its differentiable norm estimate: never one pass per solver iteration
    assert stats.nfe > 3 and _convolutions_in_graph(out) == 2 * model.f.depth
    model.eval()
    assert _convolutions_in_graph(model(d)) == model.f.depth


def _convolutions_in_graph(out: torch.Tensor) -> int:
    convs, seen, stack = 0, set(), [out.grad_fn]
    while stack:
        node = stack.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        convs += "Convolution" in type(node).__name__
        stack.extend(nxt for nxt, _ in node.next_functions)
    return convs


def test_eta_is_trainable_and_kept_in_the_theorem_range():
    model = _degrad(eta=0.45)
    assert abs(float(model.eta.detach()) - 0.45) < 1e-6
    (model.eta * 2).backward()
    assert model.eta_raw.grad is not None
    with pytest.raises(ValueError):
        _degrad(eta=0.6)


def test_paper_batchnorm_makes_T_depend_on_the_batch():
    safe, paper = _degrad(batchnorm="none").train(), _degrad(batchnorm="paper").train()
    d = torch.rand(2, 3, 12, 12, dtype=torch.float64)
    z = torch.rand(2, 3, 12, 12, dtype=torch.float64)
    z_other = z.clone()
    z_other[1] = torch.rand(3, 12, 12, dtype=torch.float64)
    with torch.no_grad():
        for model, dependent in ((safe, False), (paper, True)):
            a, b = model.T(z, d)[0], model.T(z_other, d)[0]
            assert (not torch.allclose(a, b, atol=1e-12)) == dependent


def test_a_state_dict_loads_into_a_fresh_model_and_gives_the_same_output():
    model = _degrad().eval()
    d = torch.rand(2, 3, 12, 12, dtype=torch.float64)
    out = model(d)
    fresh = _degrad(seed=5).eval()
    fresh.load_state_dict(model.state_dict())
    torch.testing.assert_close(fresh(d), out, rtol=0, atol=1e-12)


def test_certify_with_a_small_budget_still_returns_an_estimate():
    layer = SpectralConv2d(1, 2, 3, bound=10.0)
    assert layer.certify((8, 8), iters=3) > 0  # fewer than one block of 10 steps


@pytest.mark.parametrize("rho", [0.05, 0.3])
def test_weighted_regulariser_keeps_T_a_contraction_with_the_predicted_factor(rho):
    model = _degrad(1, rho=rho).eval()
    d = torch.rand(2, 3, 16, 16, dtype=torch.float64)
    z = torch.rand(2, 3, 16, 16, dtype=torch.float64)
    eta = float(model.eta.detach())
    gamma = 1 - eta * rho * (1 - 0.9)  # Theorem 3.1 with eps' = 1 - rho (1 - eps), mu >= 0
    T = lambda v: model.T(v, d)  # noqa: E731
    assert lipschitz_power(T, z) < gamma < 1
    # S = rho (I - f), exactly
    with torch.no_grad():
        torch.testing.assert_close(model.S(z), model.rho * (z - model.f(z)), rtol=1e-12, atol=1e-12)
    assert abs(float(model.rho.detach()) - rho) < 1e-6


def test_weighted_regulariser_is_strongly_monotone_with_floor_rho_times_one_minus_eps():
    # <S(a) - S(b), a - b> >= rho (1 - eps) ||a - b||^2: the Tikhonov-like floor
    model = _degrad(2, rho=0.2).eval()
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for _ in range(5):
            a, b = torch.rand(2, 3, 3, 12, 12, dtype=torch.float64, generator=g)
            lhs = float(((model.S(a) - model.S(b)) * (a - b)).sum())
            assert lhs >= 0.2 * (1 - 0.9) * float(((a - b) ** 2).sum()) * (1 - 1e-9)


def test_rho_is_trainable_in_zero_one_and_absent_at_one():
    model = _degrad(rho=0.1)
    assert abs(float(model.rho.detach()) - 0.1) < 1e-6
    (model.rho * 3).backward()
    assert model.rho_raw.grad is not None
    plain = _degrad(rho=1.0)
    assert plain.rho_raw is None and float(plain.rho) == 1.0
    assert "rho_raw" not in plain.state_dict()
    for bad in (0.0, 1.5):
        with pytest.raises(ValueError):
            _degrad(rho=bad)


def test_fourier_bound_and_power_iteration_bracket_the_dense_operator_norm():
    from jfb_core.models import conv_norm_upper

    torch.manual_seed(3)
    layer = SpectralConv2d(3, 4, 3, bound=100.0).double()
    size = (6, 7)
    x = torch.zeros(1, 3, *size, dtype=torch.float64)
    dense = torch.autograd.functional.jacobian(lambda v: layer._conv(v, layer.weight), x).reshape(4 * 42, 3 * 42)
    norm = float(torch.linalg.matrix_norm(dense, ord=2))
    upper = conv_norm_upper(layer.weight, size)
    lower = layer.certify(size, iters=3000, tol=1e-12)
    assert lower <= norm * (1 + 1e-9) and norm <= upper * (1 + 1e-12)
    assert lower == pytest.approx(norm, rel=1e-4)  # power iteration converges slowly when the gap is small
    assert upper < 1.5 * norm  # an upper bound, and not a loose one


@pytest.mark.parametrize("arch", ["cpl", "dncnn"])
def test_lipschitz_certificate_bounds_the_network_and_certifying_restores_the_target(arch):
    from jfb_core.models import certify_stored_norms, lipschitz_certificate, make_network

    torch.manual_seed(0)
    f = make_network(arch, 3, 8, lipschitz=0.9, skip=True).double()
    size = (10, 10)
    f(torch.rand(1, 3, *size, dtype=torch.float64))  # the first input certifies the stored norms
    for layer in f.spectral_layers():  # then the weights move and the stored estimates lag behind
        layer.weight.data *= 1.3
    f.eval()
    before = [float(layer.sigma) for layer in f.spectral_layers()]
    cert = lipschitz_certificate(f, size)
    assert all(lo <= up * (1 + 1e-9) for lo, up in zip(cert["sigma_lower"], cert["sigma_upper"]))
    assert cert["stored_over_upper_min"] < 0.8 and cert["lipschitz_bound"] > 0.9
    x = torch.rand(4, 3, *size, dtype=torch.float64)
    assert lipschitz_ratio(f, x, n_pairs=32) <= cert["lipschitz_bound"] * (1 + 1e-9)
    assert [float(layer.sigma) for layer in f.spectral_layers()] == before  # the certificate changes nothing
    certify_stored_norms(f, size)
    after = lipschitz_certificate(f, size)
    assert after["lipschitz_bound"] <= 0.9 * (1 + 1e-9)
    assert lipschitz_ratio(f, x, n_pairs=32) <= 0.9 * (1 + 1e-9)


def test_the_forward_solver_is_chosen_by_name_and_both_reach_the_same_fixed_point():
    torch.manual_seed(0)
    model = _degrad().eval()
    d = torch.rand(2, 3, 16, 16, dtype=torch.float64)
    model.tol, model.max_iter = 1e-10, 500
    z_aa = model.solve(d)
    plain = DEGRAD(model.A, model.f, eta=model.eta.item(), tol=1e-10, max_iter=500, solver="fixed_point").double()
    z_fp = plain.solve(d)
    assert z_aa.converged.all() and z_fp.converged.all()
    torch.testing.assert_close(z_aa.z, z_fp.z, rtol=0, atol=1e-8)
    assert z_fp.nfe > z_aa.nfe  # plain iteration needs more evaluations of T than Anderson
    with pytest.raises(ValueError, match="forward_solver"):
        DEGRAD(model.A, model.f, solver="newton")
