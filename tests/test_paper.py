"""The one-command paper run and the compact data cache it travels with, on the CPU at tiny sizes."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from jfb_core.cli import main
from jfb_core.data import cache_hash, load_cache, prepare_celeba
from jfb_core.train import load_checkpoint


@pytest.fixture
def celeba(tmp_path):
    folder = tmp_path / "celeba" / "img_align_celeba"
    folder.mkdir(parents=True)
    yy, xx = np.mgrid[0:218, 0:178]
    for n in list(range(1, 25)) + list(range(8001, 8009)):  # smooth images: as compressible as faces
        img = np.stack([128 + 100 * np.sin((xx + 7 * n) / 23.0), 128 + 90 * np.cos((yy - 3 * n) / 31.0),
                        128 + 60 * np.sin((xx + yy + n) / 17.0)], axis=-1)
        Image.fromarray(img.astype(np.uint8)).save(folder / f"{n:06d}.jpg", quality=95)
    return tmp_path / "celeba"


def test_a_compact_cache_decodes_to_what_its_hash_and_summary_say(tmp_path, celeba):
    raw = prepare_celeba(celeba, tmp_path / "raw.pt", size=32)
    compact = prepare_celeba(celeba, tmp_path / "webp.pt", size=32, encode="webp", quality=90)
    assert compact["bytes"] < raw["bytes"] / 3  # compressed images, not raw bytes
    a, b = load_cache(tmp_path / "raw.pt"), load_cache(tmp_path / "webp.pt")
    assert b["images"].shape == a["images"].shape and b["images"].dtype == torch.uint8
    assert b["hash"] == compact["hash"] == cache_hash(b) != a["hash"]  # the hash is of the decoded images
    err = (b["images"].float() - a["images"].float()) / 255
    assert 30 < float(-10 * torch.log10((err ** 2).mean())) < 60  # lossy, but close (about 40 dB at quality 90)
    assert b["ids"].tolist() == a["ids"].tolist() and b["splits"]["test"].tolist() == a["splits"]["test"].tolist()


def test_paper_run_trains_both_modes_scores_them_beside_tv_and_resumes(tmp_path, celeba, capsys):
    cache = tmp_path / "c.pt"
    assert main(["prepare", "--data", str(celeba), "--size", "16", "--encode", "webp", "--out", str(cache)]) == 0
    out = tmp_path / "run"
    argv = ["paper-run", "--preset", "fast", "--size", "16", "--depth", "2", "--width", "4", "--n-train", "16",
            "--batch-size", "4", "--max-iter", "20", "--pretrain-epochs", "1", "--epochs", "2", "--eval-every", "2",
            "--n-eval", "4", "--data-cache", str(cache), "--out", str(out), "--budget", "60", "--n-val", "4",
            "--tv-grid", "1e-3,4e-3"]
    assert main(argv) == 0
    data = json.loads((out / "paper_run.json").read_text())
    assert set(data["methods"]) == {"tv", "degrad_jfb", "degrad_ift"}
    assert data["test_images_scored"] == data["test_images_in_split"] == 8
    assert data["provenance"]["config"]["budget_s"] == 60 and data["provenance"]["config"]["data_cache"] == str(cache)
    for mode in ("jfb", "ift"):
        log = json.loads((out / mode / "log.json").read_text())
        assert log["config"]["grad_mode"] == mode and len(log["log"]) == 2 and log["curve"]
        assert log["config"]["max_seconds"] == pytest.approx({"jfb": 24.0, "ift": 18.0}[mode])
        model, ckpt = load_checkpoint(out / mode / "checkpoint_slim.pt")
        assert "optimizer" not in ckpt and ckpt["config"]["grad_mode"] == mode
    for png in ("loss_curves.png", "psnr_vs_time.png"):
        assert (out / png).stat().st_size > 5_000
    # the same command again continues the finished runs instead of starting over
    assert main(argv) == 0
    again = json.loads((out / "paper_run.json").read_text())
    assert again["runs"]["jfb"]["stopped"] == "already complete"
    assert again["methods"]["degrad_jfb"]["psnr_mean"] == pytest.approx(data["methods"]["degrad_jfb"]["psnr_mean"])


def test_a_time_budget_stops_training_cleanly(tmp_path):
    from jfb_core.config import get_preset
    from jfb_core.train import TrainOptions, train

    preset = get_preset("fast", image_size=16, depth=2, width=4, n_train=64, batch_size=4, max_iter=20,
                        pretrain_epochs=0, epochs=50)
    res = train(preset, TrainOptions(n_eval=4, max_seconds=1.0), tmp_path)
    assert res.stopped == "time budget" and len(res.log) < 50
    assert 1.0 <= res.log[-1]["train_seconds"] < 30  # it stopped at the first step past the budget
    _, ckpt = load_checkpoint(tmp_path / "checkpoint.pt")
    assert ckpt["steps"] == res.log[-1]["steps"]
    with pytest.raises(ValueError, match="max_seconds"):
        TrainOptions(max_seconds=0)
