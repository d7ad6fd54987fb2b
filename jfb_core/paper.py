"""The paper-scale experiment in one call, within a time budget (``python -m jfb_core paper-run``).

Made for one short GPU lease: given a data cache (a compact one from ``prepare
--encode webp`` travels well), an output folder and a budget in seconds, it

1. trains DE-GRAD with JFB, then with IFT, each for its share of the budget
   (``TrainOptions.max_seconds``; both runs checkpoint often and resume exactly
   when the command is run again with the same folder);
2. scores both, and a TV gradient descent tuned on validation images, on the test
   split of the same cache with the same noise (the images a run saw are the
   decoded ones, so TV is re-scored on them rather than quoted);
3. writes ``paper_run.json`` (every number with its provenance), the two logs, slim
   checkpoints, ``loss_curves.png`` (the paper's Fig. 1) and ``psnr_vs_time.png``.

The scoring stops early, with the number of test images it reached recorded, when
the budget runs out; nothing written before is lost.
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path
from typing import Any, Callable

import torch

from jfb_core.config import Preset
from jfb_core.data import cache_split, load_cache
from jfb_core.errors import UserError
from jfb_core.evaluate import ClassicalSettings, Split, evaluate_classical
from jfb_core.provenance import provenance, write_json
from jfb_core.train import TrainOptions, load_checkpoint, slim_checkpoint, train

#: the shares of the budget: JFB training, IFT training; the rest scores both and TV
SHARES = {"jfb": 0.4, "ift": 0.3}


def paper_run(preset: Preset, options: TrainOptions, data_cache: str, out_dir: str | Path, budget_s: float,
              device: str = "cpu", n_val: int = 100, n_test: int | None = None, tv_grid: tuple[float, ...] | None = None,
              progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Train JFB then IFT within ``budget_s`` seconds in all, score both beside TV; returns the result dict."""
    if not budget_s > 0:
        raise UserError(f"the budget must be positive, got {budget_s}")
    say = progress or (lambda msg: None)
    t0 = time.monotonic()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    runs = {}
    for mode, share in SHARES.items():
        opts = dataclasses.replace(options, grad_mode=mode, data_cache=str(data_cache), max_seconds=share * budget_s)
        say(f"training {mode} for at most {opts.max_seconds:.0f} s")
        res = train(preset, opts, out_dir / mode, device=device, resume=True,
                    progress=lambda p, mode=mode: p.get("phase") == "epoch" and say(
                        f"{mode} epoch {p['epoch']}: test PSNR {p['test_psnr']:.2f} dB, {p['train_seconds']:.0f} s"))
        slim_checkpoint(out_dir / mode / "checkpoint.pt", out_dir / mode / "checkpoint_slim.pt")
        runs[mode] = res
    cache = load_cache(data_cache)
    x_val, val_ids = cache_split(cache, "val", n_val, source=str(data_cache))  # the end of the training range
    x_test, test_ids = cache_split(cache, "test", n_test, source=str(data_cache))
    left = budget_s - (time.monotonic() - t0)
    say(f"scoring on {len(test_ids)} test images ({left:.0f} s of the budget left)")
    extra = {}
    for mode in SHARES:
        model, _ = load_checkpoint(out_dir / mode / "checkpoint.pt", device)
        extra[f"degrad_{mode}"] = (lambda d, w=None, model=model: model(d), None)
    deadline = t0 + budget_s
    reached = {"images": 0}
    bs = preset.batch_size

    def images():
        for s in range(0, len(test_ids), bs):
            if time.monotonic() > deadline and reached["images"] > 0:
                return  # out of time: the images scored so far are the result, and say so
            reached["images"] += len(test_ids[s:s + bs])
            yield test_ids[s:s + bs], x_test[s:s + bs]

    settings = ClassicalSettings()
    if tv_grid:
        settings.tv_grid = tuple(tv_grid)
    test = Split("cache-test", images, preset.image_size, f"test split of {data_cache}")
    with torch.no_grad():
        result = evaluate_classical(["tv", "degrad_jfb", "degrad_ift"], preset.blur, preset.padding, preset.noise_std,
                                    (val_ids, x_val), test, seed=0, settings=settings, device=device, extra=extra,
                                    progress=say)
    result.pop("_images", None)
    result["test_images_scored"] = reached["images"]
    result["test_images_in_split"] = len(test_ids)
    result["runs"] = {mode: {"stopped": r.stopped, "epochs": len(r.log), "final": r.log[-1] if r.log else None}
                      for mode, r in runs.items()}
    result["budget_seconds"] = budget_s
    result["wall_seconds"] = time.monotonic() - t0
    result["provenance"] = provenance(config={**preset.to_dict(), **dataclasses.asdict(options),
                                              "data_cache": str(data_cache), "budget_s": budget_s}, device=device)
    write_json(out_dir / "paper_run.json", result)
    plot_runs(out_dir)
    return result


def plot_runs(out_dir: str | Path) -> list[Path]:
    """``loss_curves.png`` (train and test loss per epoch) and ``psnr_vs_time.png`` from the runs' logs."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir = Path(out_dir)
    logs = {m: json.loads((out_dir / m / "log.json").read_text()) for m in SHARES if (out_dir / m / "log.json").exists()}
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    for m, log in logs.items():
        rows = log["log"]
        ax.plot([r["epoch"] for r in rows], [r["train_loss"] for r in rows], "o-", label=f"{m.upper()} train")
        ax.plot([r["epoch"] for r in rows], [r["test_loss"] for r in rows], "s--", label=f"{m.upper()} test")
    ax.set(xlabel="epoch", ylabel="mean squared error", yscale="log", title="losses (Fig. 1)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    paths = [out_dir / "loss_curves.png"]
    fig.savefig(paths[0], dpi=120)
    plt.close(fig)
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    for m, log in logs.items():
        c = log["curve"]
        ax.plot([p["train_seconds"] for p in c], [p["test_psnr"] for p in c], "o-", ms=3, label=m.upper())
    ax.set(xlabel="training time (s)", ylabel="test PSNR (dB)", title="test PSNR against training time")
    ax.legend(fontsize=8)
    fig.tight_layout()
    paths.append(out_dir / "psnr_vs_time.png")
    fig.savefig(paths[1], dpi=120)
    plt.close(fig)
    return paths


__all__ = ["SHARES", "paper_run", "plot_runs"]
