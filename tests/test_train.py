"""Training: the loop learns, checkpoints resume exactly, bad input fails clearly, DDP runs."""

import json
from pathlib import Path
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

import jfb_core.data
import jfb_core.train
from jfb_core.config import get_preset
from jfb_core.data import load_cache
from jfb_core.train import ConfigMismatch, TrainingDiverged, TrainOptions, load_checkpoint, train

TINY = dict(image_size=16, depth=3, width=4, n_train=16, n_test=8, batch_size=4, pretrain_epochs=1, lr=1e-3,
            max_iter=20)


def _preset(**kw):
    return get_preset("fast", **{**TINY, **kw})


def _params(model):
    return torch.cat([p.detach().flatten() for p in model.parameters()])


def test_training_lowers_the_loss_and_writes_log_and_checkpoint(tmp_path):
    result = train(_preset(epochs=3, n_train=32), TrainOptions(n_eval=8), tmp_path)
    log = json.loads((tmp_path / "log.json").read_text())["log"]
    assert [r["epoch"] for r in log] == [1, 2, 3] == [r["epoch"] for r in result.log]
    assert log[-1]["train_loss"] < log[0]["train_loss"]
    assert all(r["train_iterations"] > 0 and r["train_seconds"] > 0 for r in log)
    model, ckpt = load_checkpoint(tmp_path / "checkpoint.pt")
    assert ckpt["epoch"] == 3 and model.grad_mode == "jfb" and ckpt["denoiser"] is not None


def test_resume_continues_exactly_where_it_stopped(tmp_path):
    torch.set_num_threads(1)
    full, part = tmp_path / "full", tmp_path / "part"
    train(_preset(epochs=2), TrainOptions(n_eval=4), full)
    train(_preset(epochs=1), TrainOptions(n_eval=4), part)
    res = train(_preset(epochs=2), TrainOptions(n_eval=4), part, resume=True)
    assert [r["epoch"] for r in res.log] == [1, 2]
    a, _ = load_checkpoint(full / "checkpoint.pt")
    b, _ = load_checkpoint(part / "checkpoint.pt")
    torch.testing.assert_close(_params(a), _params(b), rtol=0, atol=0)


def test_mid_epoch_checkpoint_resumes_exactly(tmp_path):
    """Interrupted after step 3 of an epoch, a run checkpointed every 2 steps resumes at step 2 and
    ends with the parameters, log and step count of the uninterrupted run."""
    torch.set_num_threads(1)
    full, cut = tmp_path / "full", tmp_path / "cut"
    preset = _preset(epochs=2)
    ref = train(preset, TrainOptions(n_eval=4), full)

    def interrupt(info):
        if info.get("phase") == "train" and info["epoch"] == 2 and info["batch"] == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(preset, TrainOptions(n_eval=4, checkpoint_every=2), cut, progress=interrupt)
    saved = torch.load(cut / "checkpoint.pt", weights_only=True)
    n_batches = ref.log[0]["steps"]
    assert saved["epoch"] == 1 and saved["partial"]["batch"] == 2 and saved["steps"] == n_batches + 2
    written = json.loads((cut / "log.json").read_text())  # the log on disk follows the checkpoint
    assert written["partial_epoch"] == {"epoch": 2, "batch": 2, "steps": n_batches + 2} and len(written["log"]) == 1
    seen = []
    res = train(preset, TrainOptions(n_eval=4, checkpoint_every=2), cut, resume=True, progress=seen.append)
    assert seen[0] == {"phase": "resume", "epoch": 1, "steps": n_batches + 2, "batch": 2}
    assert [r["batch"] for r in seen if r.get("phase") == "train"][0] == 3  # the next batch, not the first
    a, _ = load_checkpoint(full / "checkpoint.pt")
    b, ckpt = load_checkpoint(cut / "checkpoint.pt")
    torch.testing.assert_close(_params(a), _params(b), rtol=0, atol=0)
    assert "partial" not in ckpt and ckpt["steps"] == ref.log[-1]["steps"]
    for key in ("steps", "train_loss", "test_psnr", "train_iterations"):
        assert res.log[-1][key] == pytest.approx(ref.log[-1][key], rel=1e-6)
    with pytest.raises(ValueError, match="checkpoint_every"):
        TrainOptions(checkpoint_every=-1)


def test_resume_refuses_another_configuration(tmp_path):
    train(_preset(epochs=1), TrainOptions(n_eval=4), tmp_path)
    with pytest.raises(ConfigMismatch, match="width"):
        train(_preset(epochs=2, width=6), TrainOptions(n_eval=4), tmp_path, resume=True)
    with pytest.raises(ConfigMismatch, match="grad_mode"):
        train(_preset(epochs=2), TrainOptions(grad_mode="ift", n_eval=4), tmp_path, resume=True)


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch):
    train(_preset(epochs=1), TrainOptions(n_eval=4), tmp_path)
    good = torch.load(tmp_path / "checkpoint.pt", weights_only=True)["model"]
    real = jfb_core.train.measure  # patched where train uses it
    monkeypatch.setattr(jfb_core.train, "measure", lambda *a, **k: real(*a, **k) * float("nan"))
    with pytest.raises(TrainingDiverged, match=r"last good state \(epoch 1, step"):
        train(_preset(epochs=2), TrainOptions(n_eval=4), tmp_path, resume=True)
    kept = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    assert kept["epoch"] == 1
    for k, v in good.items():
        torch.testing.assert_close(kept["model"][k], v, rtol=0, atol=0)


@pytest.mark.parametrize("mode", ["ift", "neumann", "unrolled"])
def test_every_backward_mode_trains(tmp_path, mode):
    res = train(_preset(epochs=1, pretrain_epochs=0), TrainOptions(grad_mode=mode, n_eval=4, unroll_k=5), tmp_path)
    assert np.isfinite(res.log[0]["train_loss"])
    if mode == "ift":
        assert res.log[0]["backward_iterations"] > 0


def _fake_celeba(root, numbers, corrupt=()):
    folder = root / "img_align_celeba"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for n in numbers:
        Image.fromarray(rng.integers(0, 256, (218, 178, 3), dtype=np.uint8)).save(folder / f"{n:06d}.jpg")
    for n in corrupt:
        (folder / f"{n:06d}.jpg").write_bytes(b"not a jpeg")


def test_prepare_caches_splits_and_counts_unreadable_files(tmp_path):
    _fake_celeba(tmp_path / "celeba", [1, 2, 3, 8001, 8002], corrupt=[4])
    out = tmp_path / "cache.pt"
    summary = jfb_core.data.prepare_celeba(tmp_path / "celeba", out, size=16)
    assert summary["counts"] == {"train": 3, "test": 2}
    assert len(summary["skipped"]) == 1 and "000004.jpg" in summary["skipped"][0]
    cache = load_cache(out)
    assert cache["images"].dtype == torch.uint8 and cache["images"].shape == (5, 3, 16, 16)
    assert cache["ids"][cache["splits"]["test"]].tolist() == [8001, 8002]
    direct = jfb_core.data.load_image(tmp_path / "celeba/img_align_celeba/000002.jpg", 16)
    assert float((cache["images"][1].float() / 255 - direct).abs().max()) <= 0.5 / 255 + 1e-6
    # training reads it; a cache of another size is refused with a clear message
    res = train(_preset(epochs=1, pretrain_epochs=0, n_train=3, n_test=1, dataset="celeba"),
                TrainOptions(n_eval=5, data_cache=str(out)), tmp_path / "run")
    # n_eval is limited by the cache's test split (2 images), not by the preset's n_test (1)
    assert len(res.log) == 1 and res.log[0]["n_eval_images"] == 2
    with pytest.raises(ConfigMismatch, match="16x16"):
        train(_preset(image_size=8, dataset="celeba"), TrainOptions(data_cache=str(out)), tmp_path / "run2")


def test_missing_or_empty_data_is_a_clear_error(tmp_path, capsys):
    from jfb_core.cli import main

    assert main(["prepare", "--data", str(tmp_path / "nowhere"), "--out", str(tmp_path / "c.pt")]) == 2
    assert "does not exist" in capsys.readouterr().err
    (tmp_path / "empty" / "img_align_celeba").mkdir(parents=True)
    assert main(["prepare", "--data", str(tmp_path / "empty"), "--out", str(tmp_path / "c.pt")]) == 2
    assert "no CelebA images" in capsys.readouterr().err
    assert main(["train", "--data-cache", str(tmp_path / "missing.pt")]) == 2
    assert "prepare" in capsys.readouterr().err


def test_ddp_under_torchrun_on_two_cpu_processes(tmp_path):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "jfb_core", "train", "--preset", "fast", "--size", "16", "--depth", "3", "--width", "4",
           "--n-train", "16", "--batch-size", "4", "--epochs", "1", "--pretrain-epochs", "0", "--n-eval", "4",
           "--threads", "1", "--out", str(tmp_path)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    log = json.loads((tmp_path / "log.json").read_text())["log"]
    assert log[0]["world_size"] == 2 and log[0]["steps"] == 2  # 4 batches shared by 2 ranks


def test_pnp_reaches_the_fixed_point_of_a_contractive_denoiser():
    from jfb_core.baselines import pnp_pgd
    from jfb_core.operators import blur_from_setting

    A = blur_from_setting("5x5_s1")
    g = torch.Generator().manual_seed(0)
    d = torch.rand(2, 3, 12, 12, generator=g, dtype=torch.float64)
    D = lambda z: 0.5 * z + 0.1  # noqa: E731  a 0.5-Lipschitz "denoiser"
    x = pnp_pgd(A, d, D, step=1.0, max_iter=500, tol=1e-14)
    residual = D(x - A.adjoint(A(x) - d)) - x
    assert float(residual.abs().max()) < 1e-10


def test_relaxed_pnp_reaches_its_own_fixed_point_and_reports_early_stops():
    from jfb_core.baselines import pnp_pgd
    from jfb_core.operators import blur_from_setting

    A = blur_from_setting("5x5_s1")
    g = torch.Generator().manual_seed(1)
    d = torch.rand(2, 3, 12, 12, generator=g, dtype=torch.float64)
    D = lambda z: 0.5 * z + 0.1  # noqa: E731
    a, step = 0.3, 1.9
    stats: dict = {}
    x = pnp_pgd(A, d, D, step=step, strength=a, max_iter=2000, tol=1e-13, stats=stats)
    z = x - step * A.adjoint(A(x) - d)
    residual = z + a * (D(z) - z) - x  # the fixed point of the relaxed map, not of the plain one
    assert float(residual.abs().max()) < 1e-10
    assert stats["converged"] == 2 and 1 < stats["iterations"] < 2000
    plain = pnp_pgd(A, d, D, step=step, max_iter=2000, tol=1e-13)
    assert float((plain - x).abs().max()) > 1e-3  # the relaxation changes the answer
    early: dict = {}
    pnp_pgd(A, d, D, step=step, strength=a, max_iter=3, tol=1e-13, stats=early)
    assert early == {"iterations": 3, "converged": 0}
    for bad in (0.0, 1.5):
        with pytest.raises(ValueError, match="strength"):
            pnp_pgd(A, d, D, strength=bad)


def test_evaluate_scores_checkpoints_and_pnp_and_writes_a_grid(tmp_path, capsys):
    from jfb_core.cli import main

    run = tmp_path / "run"
    train(_preset(epochs=1), TrainOptions(n_eval=4), run)
    out = tmp_path / "ev.json"
    argv = ["evaluate", "--preset", "fast", "--size", "16", "--methods", "direct,pnp,jfb_net", "--limit", "4",
            "--n-val", "4", "--checkpoint", f"jfb_net={run / 'checkpoint.pt'}", "--grid", "2", "--out", str(out)]
    assert main(argv) == 0
    res = json.loads(out.read_text())
    assert set(res["methods"]) == {"direct", "pnp", "jfb_net"}
    assert res["methods"]["pnp"]["weight"] in (0.5, 1.0, 1.5, 1.9) and len(res["methods"]["jfb_net"]["per_image"]["psnr"]) == 4
    assert res["learned"]["jfb_net"]["grad_mode"] == "jfb"
    assert res["learned"]["jfb_net"]["solve_tol"] == 1e-3  # the trained tolerance, recorded
    assert (tmp_path / "ev_grid.png").stat().st_size > 5_000
    # a checkpoint made for another blur is refused by name
    assert main([*argv[:-2], "--blur", "9x9_var5", "--out", str(tmp_path / "x.json")]) == 2
    assert "blur" in capsys.readouterr().err
    # a relaxed denoiser: (step, strength) pairs tuned together, the solver's statistics recorded
    out2 = tmp_path / "ev2.json"
    assert main([*argv[:-2], "--methods", "pnp", "--pnp-strength", "0.5,1", "--out", str(out2)]) == 0
    res2 = json.loads(out2.read_text())
    pairs = res2["methods"]["pnp"]["tuning"]["weights"]
    assert len(pairs) == 8 and {a for _, a in pairs} == {0.5, 1.0} and res2["methods"]["pnp"]["weight"] in pairs
    solver = res2["learned"]["pnp"]["pnp_solver"]
    assert [t["setting"] for t in solver["tuning"]] == pairs  # one validation run per setting
    assert solver["images"] == 4 and 0 <= solver["converged_fraction"] <= 1  # the test run alone
    assert 1 <= solver["iterations_mean"] <= solver["max_iter"] == 50
    assert main([*argv[:-2], "--methods", "pnp", "--pnp-strength", "0", "--out", str(out2)]) == 2
    assert "--pnp-strength" in capsys.readouterr().err
    # one fixed setting at two tolerances: each is the one asked for, recorded, and the tighter one
    # takes more iterations
    fixed = {}
    for tol in ("1e-4", "1e-6"):
        assert main([*argv[:-2], "--methods", "pnp", "--pnp-step", "1", "--pnp-strength", "0.5", "--pnp-tol", tol,
                     "--pnp-max-iter", "400", "--float64", "--out", str(out2)]) == 0
        res3 = json.loads(out2.read_text())
        assert res3["learned"]["pnp"]["dtype"] == "float64"
        fixed[tol] = res3["learned"]["pnp"]["pnp_solver"]
        assert res3["methods"]["pnp"]["tuning"]["weights"] == [[1.0, 0.5]]
        assert (fixed[tol]["tol"], fixed[tol]["max_iter"]) == (float(tol), 400)
    assert fixed["1e-6"]["iterations_mean"] > fixed["1e-4"]["iterations_mean"]
    assert main([*argv[:-2], "--methods", "pnp", "--pnp-step", "2.5", "--out", str(out2)]) == 2
    assert "--pnp-step" in capsys.readouterr().err


def test_a_weighted_regulariser_trains_resumes_and_is_checked_on_resume(tmp_path):
    train(_preset(epochs=1, rho=0.1), TrainOptions(n_eval=4), tmp_path)
    model, ckpt = load_checkpoint(tmp_path / "checkpoint.pt")
    rho = float(model.rho.detach())
    assert model.rho_raw is not None and 0 < rho < 1 and ckpt["log"][-1]["rho"] == rho
    with pytest.raises(ConfigMismatch, match="rho"):
        train(_preset(epochs=2, rho=0.2), TrainOptions(n_eval=4), tmp_path, resume=True)


def test_a_checkpoint_from_before_rho_existed_means_rho_one(tmp_path):
    train(_preset(epochs=1), TrainOptions(n_eval=4), tmp_path)
    path = tmp_path / "checkpoint.pt"
    ckpt = torch.load(path, weights_only=True)
    del ckpt["config"]["rho"]  # as written by the course before the weight was introduced
    torch.save(ckpt, path)
    model, _ = load_checkpoint(path)
    assert model.rho_raw is None
    assert train(_preset(epochs=2), TrainOptions(n_eval=4), tmp_path, resume=True).log[-1]["epoch"] == 2
    with pytest.raises(ConfigMismatch, match="rho"):
        train(_preset(epochs=3, rho=0.5), TrainOptions(n_eval=4), tmp_path, resume=True)


def test_proximal_averaged_model_trains_resumes_and_old_checkpoints_read_as_gradient(tmp_path):
    from jfb_core.cli import main

    run = tmp_path / "prox"
    argv = ["train", "--preset", "fast", "--epochs", "1", "--n-train", str(TINY["n_train"]), "--size",
            str(TINY["image_size"]), "--depth", str(TINY["depth"]), "--width", str(TINY["width"]),
            "--pretrain-epochs", "1", "--rho", "0.1", "--data-step", "proximal", "--skip", "--activation", "maxmin", "--n-eval", "4",
            "--out", str(run)]
    assert main(argv) == 0
    model, ckpt = load_checkpoint(run / "checkpoint.pt")
    assert model.data_step == "proximal" and model.f.skip and ckpt["config"]["data_step"] == "proximal"
    assert model.f.activation == "maxmin"
    assert ckpt["log"][-1]["test_converged_fraction"] > 0
    with pytest.raises(ConfigMismatch, match="data_step"):
        train(_preset(epochs=2, rho=0.1, skip=True), TrainOptions(n_eval=4), run, resume=True)
    # a checkpoint written before the two options existed is a gradient step with a plain network
    old = tmp_path / "old"
    train(_preset(epochs=1), TrainOptions(n_eval=4), old)
    ckpt = torch.load(old / "checkpoint.pt", weights_only=True)
    del ckpt["config"]["data_step"], ckpt["config"]["skip"], ckpt["config"]["activation"], ckpt["config"]["arch"]
    torch.save(ckpt, old / "checkpoint.pt")
    model, _ = load_checkpoint(old / "checkpoint.pt")
    assert model.data_step == "gradient" and not model.f.skip and model.f.activation == "relu"
    assert model.f.arch == "dncnn"
    with pytest.raises(ValueError, match="data_step"):
        _preset(data_step="newton")


def test_evaluate_can_solve_checkpoints_further_than_training_did(tmp_path):
    from jfb_core.cli import main

    run = tmp_path / "run"
    train(_preset(epochs=1), TrainOptions(n_eval=4), run)
    out = tmp_path / "tight.json"
    assert main(["evaluate", "--preset", "fast", "--size", "16", "--methods", "net", "--limit", "4", "--n-val", "4",
                 "--checkpoint", f"net={run / 'checkpoint.pt'}", "--solve-tol", "1e-6", "--solve-max-iter", "400",
                 "--as-trained", "--out", str(out)]) == 0
    learned = json.loads(out.read_text())["learned"]["net"]
    assert learned["solve_tol"] == 1e-6 and learned["solve_max_iter"] == 400
    solver = learned["solver"]  # what the solves actually reached on the 4 test images
    assert solver["images"] == 4 and 0 <= solver["converged_fraction"] <= 1
    assert solver["iterations_mean"] > 1 and solver["residual_max"] >= 0
    assert (solver["converged_fraction"] == 1) == (solver["residual_max"] <= 1e-6)
    cert = learned["lipschitz"]
    assert not cert["norms_certified_for_scoring"] and "as_scored" not in cert
    assert cert["as_trained"]["size"] == [16, 16] and cert["as_trained"]["lipschitz_bound"] > 0

    # by default: scored with certified norms, so the bound meets the target; outputs move a little
    out2 = tmp_path / "certified.json"
    assert main(["evaluate", "--preset", "fast", "--size", "16", "--methods", "net", "--limit", "4", "--n-val", "4",
                 "--checkpoint", f"net={run / 'checkpoint.pt'}", "--out", str(out2)]) == 0
    res2 = json.loads(out2.read_text())
    cert2 = res2["learned"]["net"]["lipschitz"]
    assert cert2["norms_certified_for_scoring"]
    assert cert2["as_scored"]["lipschitz_bound"] <= cert2["as_scored"]["lipschitz_target"] * (1 + 1e-9)
    assert min(cert2["as_scored"]["sigma_stored"][i] / u for i, u in enumerate(cert2["as_scored"]["sigma_upper"])) \
        == pytest.approx(1.0)


def test_evaluate_in_float64_tightens_the_proximal_inner_solve(tmp_path):
    """A tight solve of a proximal checkpoint must not stop on the warm-started inner CG (residual 0)."""
    from jfb_core.cli import main

    run = tmp_path / "run"
    train(_preset(epochs=1, data_step="proximal", rho=0.05), TrainOptions(n_eval=4), run)
    out = tmp_path / "tight64.json"
    assert main(["evaluate", "--preset", "fast", "--size", "16", "--methods", "net", "--limit", "4", "--n-val", "4",
                 "--checkpoint", f"net={run / 'checkpoint.pt'}", "--solve-tol", "1e-9", "--solve-max-iter", "400",
                 "--float64", "--out", str(out)]) == 0
    learned = json.loads(out.read_text())["learned"]["net"]
    assert learned["dtype"] == "float64" and learned["inner_tol"] == pytest.approx(1e-11)
    solver = learned["solver"]
    assert solver["converged_fraction"] == 1 and 0 < solver["residual_max"] <= 1e-9

    # the same checkpoint solved to 1e-9 with its trained inner tolerance, independently, in float64
    model, ckpt = load_checkpoint(run / "checkpoint.pt")
    model.double()
    model.tol, model.max_iter, model.inner_tol = 1e-9, 400, 1e-13
    x = torch.rand(2, 3, 16, 16, dtype=torch.float64)
    d = model.A(x)
    z = model.solve(d).z
    with torch.no_grad():
        r = (model.T(z, d) - z).flatten(1).norm(dim=1) / z.flatten(1).norm(dim=1)
    assert r.max() <= 1e-8


def test_slim_checkpoint_is_smaller_and_scores_the_same(tmp_path):
    from jfb_core.train import slim_checkpoint

    run = tmp_path / "run"
    train(_preset(epochs=1, image_size=32), TrainOptions(n_eval=4), run)
    slim = slim_checkpoint(run / "checkpoint.pt", tmp_path / "slim.pt")
    full_size, slim_size = (run / "checkpoint.pt").stat().st_size, slim.stat().st_size
    assert slim_size < 0.6 * full_size
    saved = torch.load(slim, weights_only=True)
    assert "optimizer" not in saved and all(v.dtype == torch.float16 for k, v in saved["model"].items()
                                            if k.endswith(".u"))
    a, _ = load_checkpoint(run / "checkpoint.pt")
    b, _ = load_checkpoint(slim)
    assert all(m.u.dtype == torch.float32 for m in b.f.spectral_layers())
    d = torch.rand(2, 3, 32, 32)
    torch.testing.assert_close(b.eval()(d), a.eval()(d), rtol=0, atol=0)

    # without the power vectors: a single stored number each, the same outputs, and the
    # norm estimate restarts from a random (non-zero) vector when the layer trains again
    bare = slim_checkpoint(run / "checkpoint.pt", tmp_path / "bare.pt", keep_power_vectors=False)
    assert bare.stat().st_size < slim_size
    c, _ = load_checkpoint(bare)
    torch.testing.assert_close(c.eval()(d), a.eval()(d), rtol=0, atol=0)
    layer = c.f.spectral_layers()[0]
    assert not layer.u.any()
    assert layer.certify((32, 32)) == pytest.approx(a.f.spectral_layers()[0].certify((32, 32)), rel=1e-4)
    assert layer.u.norm() == pytest.approx(1.0)


COMMITTED = sorted((Path(__file__).resolve().parents[1] / "results" / "train").glob("*/checkpoint.pt"))


@pytest.mark.parametrize("path", COMMITTED, ids=[p.parent.name for p in COMMITTED])
def test_every_committed_checkpoint_loads_safely_and_reconstructs(path):
    """Each committed checkpoint loads with weights_only=True, matches its log's configuration,
    and its network improves on the measurement of a bundled face at its own blur and size."""
    from jfb_core.data import bundled_images, measure
    from jfb_core.metrics import psnr

    assert len(COMMITTED) >= 4
    torch.load(path, weights_only=True)  # plain data only: no object needs unpickling
    model, ckpt = load_checkpoint(path)
    log = json.loads((path.parent / "log.json").read_text())
    keys = ("image_size", "blur", "arch", "depth", "width", "grad_mode", "data_step")
    assert {k: ckpt["config"].get(k) for k in keys} == {k: log["config"].get(k) for k in keys}
    x = bundled_images("test", ckpt["config"]["image_size"], n=2, seed=0)
    d = measure(model.A, x, ckpt["config"]["noise_std"], seed=1, indices=[0, 1])
    with torch.no_grad():
        out, stats = model.run(d)
    assert stats.solve.converged_fraction == 1.0
    gain = float(psnr(out, x, data_range=1.0).mean()) - float(psnr(d, x, data_range=1.0).mean())
    if path.parent.name == "celeba64_5x5_s1_ablation_plain":
        # the ablation's first row, the plain certified network (S = I - f, gradient step): its
        # bounded layers cannot pass the image through: its fixed point has less contrast than the
        # image and is worse than the measurement itself (chapter 6); were it better, that would be wrong
        assert gain < 0
    else:  # (the rho = 1 run is chapter 6's counter-example: it gains least, about half a dB here)
        assert gain > 0.25


def test_the_reconstruction_grid_writes_each_psnr_in_its_panel_and_copies_images_exactly(tmp_path, monkeypatch):
    import matplotlib.axes
    import matplotlib.pyplot as plt

    from jfb_core.evaluate import grid_panel, plot_grid
    from jfb_core.metrics import psnr

    truth = torch.rand(2, 3, 8, 8)
    noisy = (truth + 0.1 * torch.randn(2, 3, 8, 8)).clamp(0, 1)
    texts = []
    real = matplotlib.axes.Axes.text
    monkeypatch.setattr(matplotlib.axes.Axes, "text", lambda ax, x, y, t, **k: (texts.append(t), real(ax, x, y, t, **k))[1])
    lay = plot_grid({"truth": truth, "noisy": noisy}, {"truth": "ground truth", "noisy": "noisy"}, str(tmp_path / "g.png"))
    assert [t for t in texts if t.endswith(" dB")] == [f"{float(psnr(noisy[j:j + 1], truth[j:j + 1])):.2f} dB"
                                                      for j in range(2)]
    assert {"ground truth", "noisy"} <= set(texts)
    img = plt.imread(tmp_path / "g.png")[..., :3]
    assert img.shape[:2] == (lay["height"], lay["width"]) and lay["scale"] == 32
    ys, xs = grid_panel(lay, 0, 1)  # the second ground truth, magnified by pixel repetition
    expected = truth[1].permute(1, 2, 0).numpy().repeat(32, axis=0).repeat(32, axis=1)
    assert abs(img[ys, xs][:16, :16] - expected[:16, :16]).max() < 1 / 255 + 1e-6  # exact up to 8-bit storage
    assert json.loads((tmp_path / "g.json").read_text())["tile"] == lay["tile"]
