"""Certified training (``train --certify``): the stored norm of every spectral layer is at least
its true operator norm where it is applied, training normalises with the norm it will be scored
with, and runs that use it resume exactly and load as before."""

import json

import pytest
import torch
import torch.nn.functional as F

from jfb_core.models import (_spectral_norms, calibrate_norms, conv_norm_upper, lipschitz_certificate, make_network,
                             SpectralConv2d)
from jfb_core.train import TrainOptions, load_checkpoint, train
from test_train import _params, _preset


def _layer(c_in=3, c_out=4, seed=0):
    torch.manual_seed(seed)
    return SpectralConv2d(c_in, c_out, 3, bound=1.0, bias=False).double()


def _dense_norm(layer, size):
    """The exact operator norm of the zero-padded 'same' convolution (a dense Jacobian)."""
    c_in = layer.weight.shape[1]
    jac = torch.autograd.functional.jacobian(lambda x: F.conv2d(x, layer.weight.detach(), padding=1),
                                             torch.zeros(1, c_in, *size, dtype=torch.float64))
    return float(torch.linalg.matrix_norm(jac.reshape(-1, c_in * size[0] * size[1]), ord=2))


def test_calibrate_stores_a_norm_at_least_the_true_one_and_the_layer_meets_its_bound():
    layer = _layer()
    drift = layer.calibrate((12, 12), track=(8, 8))
    true = _dense_norm(layer, (12, 12))
    upper = conv_norm_upper(layer.weight, (12, 12))
    assert true <= upper * (1 + 1e-12) and drift == pytest.approx(1.0)  # nothing was tracked before
    # at least the bound at 12 and the norm training divides by (the 10x10 torus of the 8x8 crops)
    used = float(_spectral_norms(layer.weight, (10, 10)).max())
    assert max(upper, used) <= float(layer.sigma) <= max(upper, used) * (1 + 1e-6)
    layer.eval()
    w = layer.normalised_weight()
    jac = torch.autograd.functional.jacobian(lambda x: F.conv2d(x, w.detach(), padding=1),
                                             torch.zeros(1, 3, 12, 12, dtype=torch.float64))
    assert float(torch.linalg.matrix_norm(jac.reshape(-1, 3 * 144), ord=2)) <= 1 + 1e-9
    assert layer.certified.tolist() == [12, 12] and layer.grid.tolist() == [10, 10]


def test_tracked_norm_is_the_peak_over_the_torus_with_the_gradient_of_that_peak():
    layer = _layer(seed=1)
    layer.calibrate((8, 8))
    grid = tuple(layer.grid.tolist())
    peak = lambda w: float(_spectral_norms(w, grid).max())  # noqa: E731
    value = layer.tracked_norm()
    assert float(value.detach()) == pytest.approx(peak(layer.weight), rel=1e-10)
    (grad,) = torch.autograd.grad(value, layer.weight)
    g = torch.Generator().manual_seed(0)
    for _ in range(3):  # directional derivatives against central differences
        d = torch.randn(layer.weight.shape, generator=g, dtype=torch.float64)
        h = 1e-6
        with torch.no_grad():
            fd = (peak(layer.weight + h * d) - peak(layer.weight - h * d)) / (2 * h)
        assert float((grad * d).sum()) == pytest.approx(fd, rel=1e-5, abs=1e-8)


def test_during_training_the_normaliser_never_falls_below_the_true_peak():
    """Adam steps that grow the layer: after each, the norm training divides by is the kernel's
    largest spectral norm on its torus (to 1e-3), and a recalibration finds almost no drift.
    The uncertified power iteration (one step per training step) ends about 10% below that peak here."""
    layer = _layer(c_in=4, c_out=4, seed=2)
    layer.calibrate((16, 16), track=(8, 8))
    layer.train()
    opt = torch.optim.Adam(layer.parameters(), lr=3e-2)
    x = torch.randn(4, 4, 8, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    for step in range(15):
        loss = -(F.conv2d(x, layer.weight, padding=1) ** 2).mean() + (layer(x) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        used = float(layer.current_sigma().detach())
        assert used >= float(_spectral_norms(layer.weight, tuple(layer.grid.tolist())).max()) * (1 - 1e-3), step
    drift = layer.calibrate((16, 16), track=(8, 8))
    assert 1 - 1e-9 <= drift <= 1.01
    assert float(layer.sigma) >= conv_norm_upper(layer.weight, (16, 16))


def test_a_larger_input_in_evaluation_is_certified_again_at_its_size():
    layer = _layer(seed=3)
    layer.calibrate((8, 8))
    layer.eval()
    layer(torch.rand(1, 3, 20, 20, dtype=torch.float64))
    assert layer.certified.tolist() == [20, 20] and layer.grid.tolist() == [10, 10]  # tracking unchanged
    assert float(layer.sigma) >= conv_norm_upper(layer.weight, (20, 20))


def test_a_layer_saved_before_certified_training_loads_in_power_iteration_mode():
    old = _layer(seed=4)
    x = torch.rand(2, 3, 10, 10, dtype=torch.float64)
    old(x)  # sets u and sigma by the power iteration
    state = {k: v for k, v in old.state_dict().items() if k not in ("fvec", "grid", "certified")}
    new = _layer(seed=5)
    new.load_state_dict(state)
    old.eval(), new.eval()
    assert new.fvec.numel() == 0 and torch.equal(new(x), old(x))


def test_a_certified_network_meets_its_lipschitz_target_as_stored():
    torch.manual_seed(0)
    f = make_network("cpl", depth=3, channels=6, lipschitz=0.9, skip=True).double()
    f(torch.rand(1, 3, 12, 12, dtype=torch.float64))
    calibrate_norms(f, (12, 12), track=(8, 8))
    cert = lipschitz_certificate(f.eval(), (12, 12), power_iters=50)
    assert cert["lipschitz_bound"] <= cert["lipschitz_target"] * (1 + 1e-9)
    assert all(s >= u for s, u in zip(cert["sigma_stored"], cert["sigma_upper"]))


@pytest.mark.parametrize("crop", [None, 8])
def test_certified_training_with_crops_resumes_exactly_and_saves_certified_norms(tmp_path, crop):
    torch.set_num_threads(1)
    preset = _preset(epochs=2, arch="cpl")
    options = TrainOptions(n_eval=4, certify=True, crop=crop)
    full, part = tmp_path / "full", tmp_path / "part"
    train(preset, options, full)
    train(preset.replace(epochs=1), options, part)
    train(preset, options, part, resume=True)
    a, _ = load_checkpoint(full / "checkpoint.pt")
    b, _ = load_checkpoint(part / "checkpoint.pt")
    torch.testing.assert_close(_params(a), _params(b), rtol=0, atol=0)
    size = (preset.image_size, preset.image_size)
    for layer in b.f.spectral_layers():  # what is saved is certified at the image size
        assert layer.fvec.numel() and float(layer.sigma) >= conv_norm_upper(layer.weight, size)
    log = json.loads((part / "log.json").read_text())
    assert log["calibrations"] and all(c["drift"] >= 1 - 1e-6 for c in log["calibrations"])


def test_a_slim_certified_checkpoint_scores_the_same_and_stays_certified_on_larger_images(tmp_path):
    from jfb_core.train import slim_checkpoint

    torch.set_num_threads(1)
    preset = _preset(epochs=1, arch="cpl")
    train(preset, TrainOptions(n_eval=4, certify=True, crop=8), tmp_path / "run")
    slim = slim_checkpoint(tmp_path / "run" / "checkpoint.pt", tmp_path / "slim.pt", keep_power_vectors=False)
    full, _ = load_checkpoint(tmp_path / "run" / "checkpoint.pt")
    thin, _ = load_checkpoint(slim)
    assert all(layer.fvec.numel() == 0 and layer.certified.tolist() == [16, 16] for layer in thin.f.spectral_layers())
    stored = torch.load(slim, weights_only=True)["model"]  # what the file holds, not only its shape
    assert all(v.untyped_storage().nbytes() == 0 for k, v in stored.items() if k.endswith("fvec"))
    x = torch.rand(2, 3, 16, 16)
    full.eval(), thin.eval()
    with torch.no_grad():
        torch.testing.assert_close(thin.f(x), full.f(x), rtol=0, atol=0)
        thin.f(torch.rand(1, 3, 24, 24))  # larger than certified: raised to the bound there
    for layer in thin.f.spectral_layers():
        assert layer.certified.tolist() == [24, 24] and float(layer.sigma) >= conv_norm_upper(layer.weight, (24, 24))


def test_a_portable_certified_checkpoint_resumes_as_the_uninterrupted_run_and_says_so(tmp_path):
    from jfb_core.train import slim_checkpoint

    torch.set_num_threads(1)
    preset = _preset(epochs=2, arch="cpl")
    options = TrainOptions(n_eval=4, certify=True, crop=8)
    full, part, moved = tmp_path / "full", tmp_path / "part", tmp_path / "moved"
    train(preset, options, full)
    train(preset.replace(epochs=1), options, part)
    moved.mkdir()
    slim_checkpoint(part / "checkpoint.pt", moved / "checkpoint.pt", keep_power_vectors=False, keep_optimizer=True)
    stored = torch.load(moved / "checkpoint.pt", weights_only=True)
    assert stored["optimizer"]["state"] and stored["portable"] is True
    assert all(v.untyped_storage().nbytes() == 0 for k, v in stored["model"].items() if k.endswith("fvec"))
    start, _ = load_checkpoint(part / "checkpoint.pt")
    train(preset, options, moved, resume=True)
    a, _ = load_checkpoint(full / "checkpoint.pt")
    b, _ = load_checkpoint(moved / "checkpoint.pt")
    assert float((_params(a) - _params(start)).norm()) > 0  # the second epoch trained
    # certified: the checkpoint's last calibration derived the tracking vectors that resumption derives again
    torch.testing.assert_close(_params(a), _params(b), rtol=0, atol=0)
    log = json.loads((moved / "log.json").read_text())
    assert log["resumes"] and log["resumes"][-1]["portable"] is True and log["log"][-1]["epoch"] == 2
