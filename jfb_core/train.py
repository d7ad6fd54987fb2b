"""Training DE-GRAD (Algorithm 4.1) with any backward mode: data, loop, checkpoints, resume, DDP.

The loop, per batch of clean images ``x`` (noise fixed per image, seeded by its number):

1. ``d = A x + eps``;
2. ``x_hat = N_Theta(d)``: Anderson to the fixed point without a graph, then one
   recorded application of ``T`` whose backward is JFB, IFT, Neumann-k or, for
   ``unrolled``, backpropagation through ``unroll_k`` recorded steps;
3. ``loss = mean((x_hat - x)^2)``, ``loss.backward()``, ``Adam.step()``.

Optional pretraining fits the network ``f_Theta`` (``S = I - f``) as a denoiser,
``f(x + sigma n) ~ x``, as Gilton et al. did before DE-GRAD training. The same
pretrained denoiser is stored in the checkpoint and serves Plug-and-Play.

Everything a run needs to continue is in one checkpoint, written atomically at the
end of every epoch (and, with ``checkpoint_every``, every so many steps within one):
model, optimiser, epoch, the per-epoch log, the random generator state and the
configuration; a mid-epoch checkpoint also holds the batches done and the epoch's
running sums, so a resumed run takes the same batches in the same order. ``resume`` continues from it and refuses a
checkpoint whose configuration differs in anything that defines the model or
the data. A non-finite loss stops training with :class:`TrainingDiverged`; the
last checkpoint on disk is then the last good state.

Under ``torchrun`` (``WORLD_SIZE > 1``) the model is wrapped in
``DistributedDataParallel`` (``gloo`` on CPU, ``nccl`` on GPU); each rank takes
every ``world_size``-th batch of the shuffled order, and rank 0 alone evaluates,
logs and writes checkpoints.

The library never prints: progress goes to a callback.
"""

from __future__ import annotations

import dataclasses
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch

from jfb_core.config import Preset
from jfb_core.gradients import GRAD_MODES

# configuration keys that must match for a checkpoint to be resumed or evaluated
DATA_KEYS = ("image_size", "channels", "blur", "padding", "noise_std")  # must match to evaluate a checkpoint
MODEL_KEYS = DATA_KEYS + ("depth", "width", "lipschitz", "rho", "data_step", "skip", "activation", "arch")
RESUME_KEYS = MODEL_KEYS + ("dataset", "grad_mode", "neumann_k", "unroll_k", "n_train", "batch_size", "lr", "seed",
                            "data_cache")


@dataclass
class TrainOptions:
    """What a training run adds to a preset."""

    grad_mode: str = "jfb"
    neumann_k: int = 5
    unroll_k: int = 20
    backward_tol: float = 1e-4
    backward_max_iter: int = 200
    backward_solver: str = "fixed_point"
    pretrain_noise: float = 0.05
    n_eval: int = 64
    data_cache: str | None = None  # a file from ``prepare``; None: the preset's bundled images
    amp: bool = False  # bfloat16 autocast of the network on a GPU
    max_steps: int | None = None  # stop after this many optimiser steps in total (for tests and demos)
    eval_every: int = 0  # also score the eval images every this many steps (0: only after each epoch)
    checkpoint_every: int = 0  # also checkpoint every this many steps, mid-epoch (0: only after each epoch)

    def __post_init__(self) -> None:
        if self.grad_mode not in GRAD_MODES:
            raise ValueError(f"grad_mode must be one of {GRAD_MODES}, got {self.grad_mode!r}")
        if self.n_eval < 1:
            raise ValueError(f"n_eval must be >= 1, got {self.n_eval}")
        for name in ("eval_every", "checkpoint_every"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0 (0: off), got {getattr(self, name)}")


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; nothing after the last checkpoint was saved."""


class ConfigMismatch(ValueError):
    """A checkpoint was made with another configuration."""


# --------------------------------------------------------------------------- data

def load_cache(path: str | os.PathLike[str]) -> dict[str, Any]:
    """A cache written by :func:`jfb_core.data.prepare_celeba`, checked."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no data cache at {path}; make one with `python -m jfb_core prepare --data ...`")
    cache = torch.load(path, map_location="cpu", weights_only=True)
    for key in ("images", "ids", "splits", "size"):
        if key not in cache:
            raise ValueError(f"{path} is not a jfb_core data cache (no {key!r})")
    return cache


def split_images(preset: Preset, options: TrainOptions, split: str, n: int | None,
                 cache: dict[str, Any] | None = None) -> tuple[torch.Tensor, list[int]]:
    """``(images, ids)`` of a split: float32 in [0, 1], ``(N, 3, S, S)``; ids seed the noise.

    ``cache``: the already loaded ``options.data_cache`` (read from disk when not given)."""
    from jfb_core.data import bundled_images

    if options.data_cache:
        cache = cache if cache is not None else load_cache(options.data_cache)
        if cache["size"] != preset.image_size:
            raise ConfigMismatch(f"cache {options.data_cache} holds {cache['size']}x{cache['size']} images, "
                                 f"the configuration asks for {preset.image_size}; run prepare with --size "
                                 f"{preset.image_size} or pass --size {cache['size']}")
        if split not in cache["splits"]:
            raise ValueError(f"split {split!r} is not in {options.data_cache} (has {sorted(cache['splits'])})")
        idx = cache["splits"][split][: n if n else None]
        if len(idx) == 0:
            raise ValueError(f"split {split!r} of {options.data_cache} is empty")
        images = cache["images"][idx].float() / 255.0
        return images, [int(cache["ids"][i]) for i in idx]
    bundled_split = {"train": "train", "test": "test", "val": "val"}[split]
    images = bundled_images(bundled_split, preset.image_size, n=n or None, seed=preset.seed)
    offset = {"train": 200_000, "val": 300_000, "test": 100_000}[split]
    return images, [offset + i for i in range(len(images))]


# --------------------------------------------------------------------------- model

def build_model(preset: Preset, options: TrainOptions, device: str = "cpu"):
    """A fresh DE-GRAD for ``preset`` with the backward of ``options``."""
    from jfb_core.models import DEGRAD, make_network
    from jfb_core.operators import blur_from_setting

    A = blur_from_setting(preset.blur, padding=preset.padding)
    f = make_network(preset.arch, preset.depth, preset.width, in_channels=preset.channels,
                     lipschitz=preset.lipschitz, skip=preset.skip, activation=preset.activation)
    model = DEGRAD(A, f, eta=preset.eta, m=preset.anderson_m, tol=preset.tol, max_iter=preset.max_iter,
                   grad_mode=options.grad_mode, neumann_k=options.neumann_k, unroll_k=options.unroll_k,
                   backward_tol=options.backward_tol, backward_max_iter=options.backward_max_iter,
                   backward_solver=options.backward_solver, rho=preset.rho, data_step=preset.data_step)
    return model.to(device)


def run_config(preset: Preset, options: TrainOptions) -> dict[str, Any]:
    return {**preset.to_dict(), **dataclasses.asdict(options)}


def check_compatible(saved: dict[str, Any], current: dict[str, Any], keys=RESUME_KEYS, what: str = "resume") -> None:
    # a key missing from an older checkpoint's configuration had the field's default then
    defaults = {f.name: f.default for f in dataclasses.fields(Preset) if f.default is not dataclasses.MISSING}
    pairs = {k: (saved.get(k, defaults.get(k)), current.get(k)) for k in keys}
    diff = {k: (a, b) for k, (a, b) in pairs.items() if a != b}
    if diff:
        lines = ", ".join(f"{k}: checkpoint {a!r} vs now {b!r}" for k, (a, b) in sorted(diff.items()))
        raise ConfigMismatch(f"cannot {what}: the checkpoint was made with another configuration ({lines})")


def load_checkpoint(path: str | os.PathLike[str], device: str = "cpu"):
    """``(model, checkpoint dict)`` from a training checkpoint, ready for evaluation."""
    ckpt = torch.load(path, map_location="cpu", weights_only=False)
    if "config" not in ckpt or "model" not in ckpt:
        raise ValueError(f"{path} is not a jfb_core training checkpoint")
    cfg = dict(ckpt["config"])
    option_names = {f.name for f in dataclasses.fields(TrainOptions)}
    options = TrainOptions(**{k: v for k, v in cfg.items() if k in option_names})
    preset = Preset.from_dict({k: v for k, v in cfg.items() if k not in option_names})
    model = build_model(preset, options, device)
    model.load_state_dict(ckpt["model"])
    model.eval()
    return model, ckpt


def save_atomic(obj: Any, path: str | os.PathLike[str]) -> Path:
    """``torch.save`` to a temporary file, then an atomic rename: a crash leaves the old file intact."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    torch.save(obj, tmp)
    os.replace(tmp, path)
    return path


# --------------------------------------------------------------------------- loop

@dataclass
class TrainResult:
    log: list[dict[str, Any]] = field(default_factory=list)
    checkpoint: str | None = None
    stopped: str = "finished"


def _dist_info() -> tuple[int, int]:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    return rank, world


@torch.no_grad()
def evaluate_model(model, A, x: torch.Tensor, ids: list[int], noise_std: float, seed: int, batch: int,
                   device: str) -> dict[str, float]:
    """Mean loss, PSNR (data range 1, output not clipped, as for the classical methods) and
    solver statistics of ``model`` on ``x``."""
    from jfb_core.data import measure
    from jfb_core.metrics import psnr

    model.eval()
    losses, psnrs, iters, conv = [], [], [], []
    for s in range(0, len(x), batch):
        xb = x[s:s + batch].to(device)
        d = measure(A, xb, noise_std, seed=seed, indices=ids[s:s + batch])
        out = model(d)
        losses += ((out - xb) ** 2).flatten(1).mean(1).tolist()
        psnrs += psnr(out, xb, data_range=1.0).flatten().tolist()
        if model.grad_mode != "unrolled":
            iters += model.last_stats.iterations
            conv.append(model.last_stats.converged_fraction * len(xb))
    return {"loss": sum(losses) / len(losses), "psnr": sum(psnrs) / len(psnrs),
            "iterations": sum(iters) / len(iters) if iters else None,
            "converged_fraction": sum(conv) / len(x) if conv else None}


def pretrain_denoiser(f, x: torch.Tensor, epochs: int, batch: int, lr: float, noise: float, seed: int,
                      device: str, progress: Callable[[dict], None] | None = None) -> list[float]:
    """Fit ``f(x + noise * n) ~ x`` (the denoiser view of ``S = I - f``); returns per-epoch mean loss."""
    g = torch.Generator().manual_seed(seed + 17)
    opt = torch.optim.Adam(f.parameters(), lr=lr)
    history = []
    f.train()
    for epoch in range(epochs):
        order = torch.randperm(len(x), generator=g)
        total = 0.0
        for s in range(0, len(x), batch):
            xb = x[order[s:s + batch]].to(device)
            noisy = xb + noise * torch.randn(xb.shape, generator=g).to(device)
            f.power_step()
            loss = ((f(noisy) - xb) ** 2).mean()
            if not torch.isfinite(loss):
                raise TrainingDiverged(f"pretraining loss became {loss.item()} in epoch {epoch + 1}")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += loss.item() * len(xb)
            if progress:
                progress({"phase": "pretrain", "epoch": epoch + 1, "done": min(s + batch, len(x)), "total": len(x),
                          "loss": loss.item()})
        history.append(total / len(x))
    return history


def train(preset: Preset, options: TrainOptions, out_dir: str | os.PathLike[str], device: str = "cpu",
          resume: bool = False, progress: Callable[[dict], None] | None = None) -> TrainResult:
    """Train DE-GRAD; write ``checkpoint.pt`` and ``log.json`` to ``out_dir`` after every epoch.

    ``progress`` receives dicts (phase, epoch, step, loss, solver iterations ...) for
    a progress bar. Raises :class:`TrainingDiverged` on a non-finite loss and
    :class:`ConfigMismatch` when resuming from another configuration.
    """
    from jfb_core.data import measure
    from jfb_core.provenance import environment_info, provenance, write_json

    rank, world = _dist_info()
    out_dir = Path(out_dir)
    ckpt_path, log_path = out_dir / "checkpoint.pt", out_dir / "log.json"
    config = run_config(preset, options)
    if world > 1 and not torch.distributed.is_initialized():
        torch.distributed.init_process_group("nccl" if device.startswith("cuda") else "gloo")
    if device.startswith("cuda"):
        torch.backends.cudnn.benchmark = True
        if world > 1:
            device = f"cuda:{int(os.environ.get('LOCAL_RANK', rank))}"
            torch.cuda.set_device(device)
    torch.manual_seed(preset.seed)
    model = build_model(preset, options, device)
    opt = torch.optim.Adam(model.parameters(), lr=preset.lr)
    cache = load_cache(options.data_cache) if options.data_cache else None  # read once for both splits
    x_train, id_train = split_images(preset, options, "train", preset.n_train, cache)
    # with a data cache, the cache's test split is the limit; the preset's n_test sizes the bundled split only
    n_eval = options.n_eval if options.data_cache else min(options.n_eval, preset.n_test or options.n_eval)
    x_eval, id_eval = split_images(preset, options, "test", n_eval, cache)
    del cache
    A = model.A
    log: list[dict[str, Any]] = []
    curve: list[dict[str, Any]] = []  # (steps, training seconds, test PSNR) every eval_every steps
    start_epoch, steps, train_seconds = 0, 0, 0.0
    partial = None  # the running sums of an epoch interrupted after a mid-epoch checkpoint
    saved_at = "nothing yet"  # what the checkpoint on disk holds, for the divergence message
    pretrain_history: list[float] = []
    denoiser_state = None
    if resume and ckpt_path.exists():
        ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=False)
        check_compatible(ckpt["config"], config)
        model.load_state_dict(ckpt["model"])
        opt.load_state_dict(ckpt["optimizer"])
        log, start_epoch, steps = ckpt["log"], ckpt["epoch"], ckpt["steps"]
        curve = ckpt.get("curve", [])
        train_seconds = ckpt["train_seconds"]
        pretrain_history, denoiser_state = ckpt.get("pretrain_history", []), ckpt.get("denoiser")
        partial = ckpt.get("partial")
        saved_at = f"epoch {start_epoch}, step {steps}"
        if progress:
            progress({"phase": "resume", "epoch": start_epoch, "steps": steps,
                      "batch": partial["batch"] if partial else 0})
    elif preset.pretrain_epochs > 0:
        t0 = time.perf_counter()
        pretrain_history = pretrain_denoiser(model.f, x_train, preset.pretrain_epochs, preset.batch_size, preset.lr,
                                             options.pretrain_noise, preset.seed, device, progress)
        train_seconds += time.perf_counter() - t0
        denoiser_state = {k: v.detach().cpu().clone() for k, v in model.f.state_dict().items()}
    net = model
    if world > 1:
        net = torch.nn.parallel.DistributedDataParallel(model, device_ids=None if device == "cpu" else [device])
    stop = "finished"
    for epoch in range(start_epoch, preset.epochs):
        if options.max_steps is not None and steps >= options.max_steps:
            stop = "max_steps"
            break
        g = torch.Generator().manual_seed(preset.seed * 7919 + epoch)
        order = torch.randperm(len(x_train), generator=g)
        batches = [order[s:s + preset.batch_size] for s in range(0, len(order), preset.batch_size)]
        batches = batches[rank::world]
        model.train()
        t_epoch, total, count, iters, biters, bres = time.perf_counter(), 0.0, 0, [], [], []
        first = 0
        if partial is not None:  # continue the interrupted epoch after its last checkpointed batch
            first, total, count = partial["batch"], partial["total"], partial["count"]
            iters, biters, bres = partial["iters"], partial["biters"], partial["bres"]
            partial = None
        for b, idx in enumerate(batches):
            if b < first:
                continue
            xb = x_train[idx].to(device)
            d = measure(A, xb, preset.noise_std, seed=preset.seed, indices=[id_train[i] for i in idx])
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=options.amp and device.startswith("cuda")):
                out = net(d)
            loss = ((out.float() - xb) ** 2).mean()
            if not torch.isfinite(loss):
                raise TrainingDiverged(
                    f"loss became {loss.item()} at epoch {epoch + 1}, batch {b + 1}; the checkpoint "
                    f"{ckpt_path} holds the last good state ({saved_at})")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            steps += 1
            total += loss.item() * len(xb)
            count += len(xb)
            if options.grad_mode != "unrolled":
                iters.append(sum(model.last_stats.iterations) / len(model.last_stats.iterations))
                biters.append(model.last_backward.iterations)
                if model.last_backward.residual:
                    bres.append(max(model.last_backward.residual))
            if progress and rank == 0:
                progress({"phase": "train", "epoch": epoch + 1, "epochs": preset.epochs, "batch": b + 1,
                          "batches": len(batches), "loss": loss.item(), "eta": float(model.eta.detach()),
                          "iterations": iters[-1] if iters else None,
                          "backward_iterations": biters[-1] if biters else None})
            if options.eval_every and steps % options.eval_every == 0 and rank == 0:
                paused = time.perf_counter()  # evaluation time is not training time
                ev = evaluate_model(model, A, x_eval, id_eval, preset.noise_std, preset.seed + 1,
                                    preset.batch_size, device)
                curve.append({"steps": steps, "train_seconds": train_seconds + paused - t_epoch,
                              "test_psnr": ev["psnr"], "test_loss": ev["loss"]})
                model.train()
                t_epoch += time.perf_counter() - paused
            if options.max_steps is not None and steps >= options.max_steps:
                break
            if options.checkpoint_every and steps % options.checkpoint_every == 0 and b + 1 < len(batches):
                # mid-epoch: the epoch counter stays, the batches done and the epoch's running sums
                # are saved, so that --resume continues with the next batch of the same order
                if rank == 0:
                    now = time.perf_counter()
                    save_atomic({"model": model.state_dict(), "optimizer": opt.state_dict(), "epoch": epoch,
                                 "steps": steps, "train_seconds": train_seconds + now - t_epoch, "log": log,
                                 "config": config, "pretrain_history": pretrain_history,
                                 "denoiser": denoiser_state, "curve": curve, "environment": environment_info(device),
                                 "partial": {"batch": b + 1, "total": total, "count": count, "iters": iters,
                                             "biters": biters, "bres": bres}}, ckpt_path)
                    write_json(log_path, {"config": config, "pretrain_history": pretrain_history, "log": log,
                                          "curve": curve, "partial_epoch": {"epoch": epoch + 1, "batch": b + 1,
                                                                            "steps": steps},
                                          "provenance": provenance(config=config, device=device)})
                    t_epoch += time.perf_counter() - now  # writing is not training time
                    saved_at = f"epoch {epoch + 1}, batch {b + 1} of {len(batches)}, step {steps}"
        train_seconds += time.perf_counter() - t_epoch
        if world > 1:
            torch.distributed.barrier()
        if rank == 0:
            ev = evaluate_model(model, A, x_eval, id_eval, preset.noise_std, preset.seed + 1, preset.batch_size,
                                device)
            row = {"epoch": epoch + 1, "steps": steps, "train_loss": total / max(1, count),
                   "test_loss": ev["loss"], "test_psnr": ev["psnr"], "test_iterations": ev["iterations"],
                   "test_converged_fraction": ev["converged_fraction"],
                   "train_iterations": sum(iters) / len(iters) if iters else None,
                   "backward_iterations": sum(biters) / len(biters) if biters else None,
                   "backward_residual_max": max(bres) if bres else None,
                   "eta": float(model.eta.detach()), "rho": float(model.rho.detach()),
                   "train_seconds": train_seconds, "n_eval_images": len(x_eval),
                   "world_size": world}
            log.append(row)
            state = {"model": model.state_dict(), "optimizer": opt.state_dict(), "epoch": epoch + 1,
                     "steps": steps, "train_seconds": train_seconds, "log": log, "config": config,
                     "pretrain_history": pretrain_history, "denoiser": denoiser_state, "curve": curve,
                     "environment": environment_info(device)}
            save_atomic(state, ckpt_path)
            saved_at = f"end of epoch {epoch + 1}, step {steps}"
            write_json(log_path, {"config": config, "pretrain_history": pretrain_history, "log": log,
                                  "curve": curve, "provenance": provenance(config=config, device=device)})
            if progress:
                progress({"phase": "epoch", **row})
        if world > 1:
            torch.distributed.barrier()
        if options.max_steps is not None and steps >= options.max_steps:
            stop = "max_steps"
            break
    return TrainResult(log=log, checkpoint=str(ckpt_path) if rank == 0 else None, stopped=stop)


def slim_checkpoint(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> Path:
    """A copy of a checkpoint for publishing: without the optimiser state, and with the
    power-iteration vectors ``u`` of the spectral layers (image-sized, most of what is left)
    stored in float16. They only warm-start the norm estimate; a model scores with the
    stored ``sigma``, so the slim checkpoint gives the same outputs as the full one."""
    ckpt = torch.load(src, map_location="cpu", weights_only=False)
    ckpt.pop("optimizer", None)
    for key in ("model", "denoiser"):
        state = ckpt.get(key)
        if state:
            ckpt[key] = {k: v.half() if k == "u" or k.endswith(".u") else v for k, v in state.items()}
    return save_atomic(ckpt, dst)


__all__ = ["ConfigMismatch", "DATA_KEYS", "MODEL_KEYS", "RESUME_KEYS", "TrainOptions", "TrainResult", "TrainingDiverged",
           "build_model", "check_compatible", "evaluate_model", "load_cache", "load_checkpoint",
           "pretrain_denoiser", "run_config", "save_atomic", "slim_checkpoint", "split_images", "train"]
