"""Convex potential layers (chapter 6): the 1-Lipschitz network that lets DE-GRAD learn.

A layer ``s - (2 / ||W||^2) W^T relu(W s + b)`` has a symmetric Jacobian with eigenvalues in
``[-1, 1]`` when ``||W||`` is the true operator norm, and is expansive when the norm is
underestimated; a network of them keeps ``Lip(f) <= lipschitz`` and trains inside DE-GRAD."""

import json

import pytest
import torch

from jfb_core.config import get_preset
from jfb_core.models import DEGRAD, ConvexPotentialLayer, CPLNet, lipschitz_power, make_network
from jfb_core.operators import blur_from_setting
from jfb_core.train import TrainOptions, load_checkpoint, train

F64 = torch.float64


def _jacobian(fn, x):
    n = x.numel()
    return torch.autograd.functional.jacobian(lambda v: fn(v.reshape(x.shape)).reshape(-1), x.reshape(-1)).reshape(n, n)


def _layer(seed=0, channels=4, hidden=6):
    torch.manual_seed(seed)
    layer = ConvexPotentialLayer(channels, hidden).double()
    with torch.no_grad():
        layer.conv.weight.normal_(0, 0.5)
        layer.conv.bias.normal_(0, 0.5)
    return layer.eval()


def test_convex_potential_layer_has_a_symmetric_jacobian_with_eigenvalues_in_minus_one_one():
    layer = _layer()
    x = torch.randn(1, 4, 6, 6, dtype=F64)
    layer.conv.certify((6, 6), iters=2000, tol=1e-12)
    J = _jacobian(layer, x)
    torch.testing.assert_close(J, J.T)  # the gradient step of a convex potential
    eig = torch.linalg.eigvalsh(J)
    assert eig.min() >= -1 - 1e-9 and eig.max() <= 1 + 1e-9
    assert eig.min() < 0.5  # the correction is not negligible, so the bound is doing work
    # with the norm underestimated, the step is too long and the layer expands
    layer.conv.sigma = layer.conv.sigma * 0.6
    assert torch.linalg.eigvalsh(_jacobian(layer, x)).min() < -1.05


def test_convex_potential_layer_is_the_identity_where_its_relu_is_off():
    layer = _layer()
    with torch.no_grad():
        layer.conv.bias.fill_(-1e3)
    x = torch.randn(2, 4, 8, 8, dtype=F64)
    torch.testing.assert_close(layer(x), x, rtol=0, atol=0)


@pytest.mark.parametrize("skip", [True, False])
def test_cpl_network_stays_below_its_lipschitz_target(skip):
    torch.manual_seed(1)
    f = CPLNet(depth=3, channels=6, lipschitz=0.9, skip=skip).double()
    with torch.no_grad():
        for p in f.parameters():
            p.add_(0.3 * torch.randn_like(p))
    f.eval()
    x = torch.rand(1, 3, 6, 6, dtype=F64)
    assert f.certify((6, 6)) == 0.9
    norm = torch.linalg.matrix_norm(_jacobian(f, x), ord=2)
    assert 0.2 < norm <= 0.9 + 1e-9
    assert lipschitz_power(f, torch.rand(2, 3, 16, 16, dtype=F64)) <= 0.9 + 1e-9
    if skip:  # alpha -> 1: f(x) = c + 0.9 (x - c), the identity one parameter away
        with torch.no_grad():
            f.alpha_raw.fill_(40.0)
        torch.testing.assert_close(f(x), 0.5 + 0.9 * (x - 0.5))


def test_network_choices_are_checked():
    with pytest.raises(ValueError, match="arch"):
        make_network("unet", 3, 8)
    with pytest.raises(ValueError, match="monotone"):
        make_network("cpl", 3, 8, activation="maxmin")
    with pytest.raises(ValueError, match="width"):
        CPLNet(3, 2)
    with pytest.raises(ValueError, match="arch"):
        get_preset("fast", arch="cnn")
    with pytest.raises(ValueError, match="relu"):
        get_preset("fast", arch="cpl", activation="maxmin")


def test_degrad_with_a_cpl_network_contracts_trains_reloads_and_serves_pnp(tmp_path):
    torch.manual_seed(2)
    f = CPLNet(depth=3, channels=6, lipschitz=0.95).double()
    model = DEGRAD(blur_from_setting("9x9_var5"), f, rho=0.1, data_step="proximal", tol=1e-10, max_iter=2000,
                   inner_tol=1e-12, inner_max_iter=3000).double().eval()
    d = torch.rand(1, 3, 12, 12, dtype=F64)
    z = model.solve(d).z
    with torch.no_grad():
        torch.testing.assert_close(model.T(z, d), z, rtol=1e-8, atol=1e-9)
    assert lipschitz_power(lambda v: model.T(v, d), z) < 0.95

    from jfb_core.cli import main

    preset = get_preset("fast", image_size=16, depth=3, width=6, n_train=16, n_test=8, batch_size=4,
                        pretrain_epochs=1, max_iter=20, arch="cpl", skip=True, data_step="proximal", rho=0.1,
                        lipschitz=0.95, epochs=1)
    run = tmp_path / "run"
    res = train(preset, TrainOptions(n_eval=4), run)
    loaded, ckpt = load_checkpoint(run / "checkpoint.pt")
    assert isinstance(loaded.f, CPLNet) and ckpt["config"]["arch"] == "cpl"
    assert loaded.f.certify((16, 16)) == 0.95
    out = tmp_path / "ev.json"
    assert main(["evaluate", "--preset", "fast", "--size", "16", "--methods", "pnp,net", "--limit", "4",
                 "--n-val", "4", "--checkpoint", f"net={run / 'checkpoint.pt'}", "--out", str(out)]) == 0
    ev = json.loads(out.read_text())["methods"]
    assert ev["net"]["psnr_mean"] == pytest.approx(res.log[-1]["test_psnr"], abs=1.0)
    assert ev["pnp"]["psnr_mean"] > 0
