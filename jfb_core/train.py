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
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch

from jfb_core.config import Preset
from jfb_core.data import bundled_images, cache_split, load_cache, measure, random_crops
from jfb_core.errors import BadCheckpoint, RunLocked, UserError
from jfb_core.gradients import Backward, IFT, make_backward, Neumann, Unrolled
from jfb_core.metrics import psnr
from jfb_core import models
from jfb_core.models import DEGRAD
from jfb_core.provenance import environment_info, provenance, write_json
from jfb_core.provenance import save_atomic
from jfb_core.solvers import DEFAULT_FORWARD_SOLVER, forward_solver

# configuration keys that must match for a checkpoint to be evaluated on a data setting
DATA_KEYS = ("image_size", "channels", "blur", "padding", "noise_std")  # must match to evaluate a checkpoint
MODEL_KEYS = DATA_KEYS + ("depth", "width", "lipschitz", "rho", "data_step", "skip", "activation", "arch")
# what a resumed run may change: how long it runs, how often it reports, where its data file lies
# (the data is recognised by its content hash), the device; every other key shapes the result
RESUME_MAY_CHANGE = ("epochs", "max_steps", "max_seconds", "eval_every", "checkpoint_every", "data_cache", "device",
                     "channels_last",
                     "bench_sizes", "bench_batch", "bench_repeats", "description", "name")
# the keys of a run's configuration that are neither Preset nor TrainOptions fields
RUN_EXTRA_KEYS = ("data_hash",)
EVAL_SPLITS = ("test", "val")


@dataclass
class TrainOptions:
    """What a training run adds to a preset."""

    grad_mode: str = "jfb"
    # the backward's options: their defaults are the strategies' own (jfb_core.gradients)
    neumann_k: int = Neumann.k
    unroll_k: int = Unrolled.k
    backward_tol: float = IFT.tol
    backward_max_iter: int = IFT.max_iter
    backward_solver: str = IFT.solver
    forward_solver: str = DEFAULT_FORWARD_SOLVER  # the fixed-point solver of the forward pass (jfb_core.solvers)
    pretrain_noise: float = 0.05
    n_eval: int = 64
    data_cache: str | None = None  # a file from ``prepare``; None: the preset's bundled images
    amp: bool = False  # bfloat16 autocast of the network on a GPU
    max_steps: int | None = None  # stop after this many optimiser steps in total (for tests and demos)
    eval_every: int = 0  # also score the eval images every this many steps (0: only after each epoch)
    checkpoint_every: int = 0  # also checkpoint every this many steps, mid-epoch (0: only after each epoch)
    init_from: str | None = None  # warm start: a checkpoint whose weights (any image size) start the run
    channels_last: bool = False  # run a CPLNet on channels-last tensors (faster on a CPU; same map)
    max_seconds: float | None = None  # stop cleanly once this much training time is spent (a budget)
    certify: bool = False  # calibrate the spectral norms to certified bounds at every checkpoint and evaluation
    certify_margin: float = 0.0  # the stored certified norms sit this fraction above the bound (0: at it)
    crop: int | None = None  # train on random crop x crop patches of the training images (evaluation: whole images)
    eval_split: str = "test"  # the images scored during training: "test", or "val" (the training split's last n_eval)

    def __post_init__(self) -> None:
        self.backward()  # every backward option is checked by the strategy that uses it
        forward_solver(self.forward_solver)  # and the forward solver's name by the solvers' own check
        if not 0 <= self.certify_margin < 1:
            raise UserError(f"certify_margin must be in [0, 1), got {self.certify_margin}")
        if self.crop is not None and self.crop < 8:
            raise UserError(f"crop must be at least 8 pixels (or not given), got {self.crop}")
        if self.eval_split not in EVAL_SPLITS:
            raise UserError(f"eval_split must be one of {EVAL_SPLITS}, got {self.eval_split!r}")
        if self.n_eval < 1:
            raise UserError(f"n_eval must be >= 1, got {self.n_eval}")
        for name in ("eval_every", "checkpoint_every"):
            if getattr(self, name) < 0:
                raise UserError(f"{name} must be >= 0 (0: off), got {getattr(self, name)}")
        if self.max_steps is not None and self.max_steps < 1:
            raise UserError(f"max_steps must be >= 1 (or not given), got {self.max_steps}")
        if self.max_seconds is not None and not self.max_seconds > 0:
            raise UserError(f"max_seconds must be positive (or not given), got {self.max_seconds}")
        if not self.pretrain_noise >= 0:
            raise UserError(f"pretrain_noise must be >= 0, got {self.pretrain_noise}")

    def backward(self, mode: str | None = None) -> Backward:
        """The backward strategy of ``mode`` (default: ``grad_mode``) with these options."""
        return make_backward(self.grad_mode if mode is None else mode, neumann_k=self.neumann_k,
                             unroll_k=self.unroll_k, tol=self.backward_tol, max_iter=self.backward_max_iter,
                             solver=self.backward_solver)


class TrainingDiverged(RuntimeError):
    """Training went wrong (a non-finite or exploding loss, a collapsed step size, a solve that
    stopped converging); nothing after the last checkpoint was saved."""


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C during training; the message names the last checkpoint on disk."""


class ConfigMismatch(UserError):
    """A checkpoint was made with another configuration."""


# --------------------------------------------------------------------------- data

def split_images(preset: Preset, options: TrainOptions, split: str, n: int | None,
                 cache: dict[str, Any] | None = None) -> tuple[torch.Tensor, list[int]]:
    """``(images, ids)`` of a split: float32 in [0, 1], ``(N, 3, S, S)``; ids seed the noise.

    ``cache``: the already loaded ``options.data_cache`` (read from disk when not given).
    ``n=None`` takes the whole split; ``n`` must otherwise be at least 1."""
    if n is not None and n < 1:
        raise UserError(f"asked for {n} images of the {split} split; give at least 1")
    if options.data_cache:
        cache = cache if cache is not None else load_cache(options.data_cache)
        if cache["size"] != preset.image_size:
            raise ConfigMismatch(f"cache {options.data_cache} holds {cache['size']}x{cache['size']} images, "
                                 f"the configuration asks for {preset.image_size}; run prepare with --size "
                                 f"{preset.image_size} or pass --size {cache['size']}")
        return cache_split(cache, split, n, source=options.data_cache)
    bundled_split = {"train": "train", "test": "test", "val": "val"}[split]
    images = bundled_images(bundled_split, preset.image_size, n=n, seed=preset.seed)
    offset = {"train": 200_000, "val": 300_000, "test": 100_000}[split]
    return images, [offset + i for i in range(len(images))]


# --------------------------------------------------------------------------- model

def build_model(preset: Preset, options: TrainOptions, device: str = "cpu") -> DEGRAD:
    """A fresh DE-GRAD for ``preset`` with the backward of ``options`` (:func:`jfb_core.models.build_model`)."""
    return models.build_model(preset, device, backward=options.backward(), channels_last=options.channels_last,
                              solver=options.forward_solver)


def run_config(preset: Preset, options: TrainOptions) -> dict[str, Any]:
    return {**preset.to_dict(), **dataclasses.asdict(options)}


def _defaults() -> dict[str, Any]:
    """Each field's default, for a key missing from an older checkpoint's configuration."""
    out = {}
    for cls in (Preset, TrainOptions):
        out.update({f.name: f.default for f in dataclasses.fields(cls) if f.default is not dataclasses.MISSING})
    return out


def config_changes(saved: dict[str, Any], current: dict[str, Any], keys=None) -> dict[str, tuple[Any, Any]]:
    """``{key: (saved, current)}`` for the keys (default: all of either) whose values differ."""
    defaults = _defaults()
    keys = sorted(set(saved) | set(current)) if keys is None else keys
    pairs = {k: (saved.get(k, defaults.get(k)), current.get(k, defaults.get(k))) for k in keys}
    return {k: (a, b) for k, (a, b) in pairs.items() if a != b}


def check_compatible(saved: dict[str, Any], current: dict[str, Any], keys=None, what: str = "resume") -> None:
    """Raise :class:`ConfigMismatch` listing the keys that differ (default: every key that shapes
    a run's result, i.e. all but :data:`RESUME_MAY_CHANGE`)."""
    diff = config_changes(saved, current, keys)
    if keys is None:
        diff = {k: v for k, v in diff.items() if k not in RESUME_MAY_CHANGE}
        if "data_hash" in diff and None in diff["data_hash"]:  # a checkpoint from before content hashes
            diff.pop("data_hash")
            if saved.get("data_cache") != current.get("data_cache"):
                diff["data_cache"] = (saved.get("data_cache"), current.get("data_cache"))
    if diff:
        lines = ", ".join(f"{k}: checkpoint {a!r} vs now {b!r}" for k, (a, b) in sorted(diff.items()))
        hint = ("; the data file's content differs from the run's" if "data_hash" in diff else "")
        raise ConfigMismatch(f"cannot {what}: the checkpoint was made with another configuration ({lines}){hint}; "
                             f"use the same flags, or start a new run in another --out")


# --------------------------------------------------------------------------- checkpoint files

def to_plain(obj: Any) -> Any:
    """``obj`` with every value a tensor or plain Python data (str, int, float, bool, None, list,
    tuple, dict), as ``torch.load(weights_only=True)`` accepts; other objects (a version
    object, a path) become their ``str``."""
    if isinstance(obj, torch.Tensor) or obj is None or type(obj) in (bool, int, float, str):
        return obj
    if isinstance(obj, dict):
        return {to_plain(k) if not isinstance(k, (str, int)) else k: to_plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(to_plain(v) for v in obj) if type(obj) in (list, tuple) else [to_plain(v) for v in obj]
    if isinstance(obj, (bool, int, float, str)):  # subclasses such as torch's TorchVersion
        return (bool if isinstance(obj, bool) else int if isinstance(obj, int)
                else float if isinstance(obj, float) else str)(obj)
    return str(obj)


def read_checkpoint(path: str | os.PathLike[str]) -> dict[str, Any]:
    """A training checkpoint as a dict, loaded with ``weights_only=True`` (no code runs).

    Raises :class:`BadCheckpoint` for a missing, empty, truncated or foreign file, or one
    that holds objects other than tensors and plain data."""
    import pickle

    path = Path(path)
    if not path.is_file():
        raise BadCheckpoint(f"no checkpoint file at {path}")
    if path.stat().st_size == 0:
        raise BadCheckpoint(f"{path} is empty (0 bytes): not a checkpoint")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise BadCheckpoint(f"{path} was refused: it holds objects other than tensors and plain data, which "
                            f"could run code when loaded ({str(exc).splitlines()[-1][:160]})") from None
    except Exception as exc:  # noqa: BLE001 - any failure to unpickle a user's file means it is no checkpoint
        raise BadCheckpoint(f"{path} is not a readable checkpoint (truncated or not made by torch.save: "
                            f"{str(exc).splitlines()[0][:120]})") from None
    if not isinstance(ckpt, dict) or "config" not in ckpt or "model" not in ckpt:
        what = type(ckpt).__name__ if not isinstance(ckpt, dict) else f"a dict with keys {sorted(ckpt)[:6]}"
        raise BadCheckpoint(f"{path} is not a jfb_core training checkpoint (it holds {what})")
    return ckpt


def split_config(cfg: dict[str, Any]) -> tuple[Preset, TrainOptions]:
    """The preset and options a run's configuration dict describes."""
    option_names = {f.name for f in dataclasses.fields(TrainOptions)}
    options = TrainOptions(**{k: v for k, v in cfg.items() if k in option_names})
    preset = Preset.from_dict({k: v for k, v in cfg.items() if k not in option_names and k not in RUN_EXTRA_KEYS})
    return preset, options


def load_checkpoint(path: str | os.PathLike[str], device: str = "cpu"):
    """``(model, checkpoint dict)`` from a training checkpoint, ready for evaluation."""
    ckpt = read_checkpoint(path)
    try:
        preset, options = split_config(dict(ckpt["config"]))
    except TypeError as exc:
        raise BadCheckpoint(f"{path} has a configuration this version does not know ({exc})") from None
    model = build_model(preset, options, device)
    load_weights(model, ckpt["model"], path)
    model.eval()
    return model, ckpt


def load_weights(module: torch.nn.Module, state: dict[str, Any], path: str | os.PathLike[str]) -> None:
    """``module.load_state_dict(state)``, or :class:`BadCheckpoint` naming ``path`` if they do not match."""
    try:
        module.load_state_dict(state)
    except (RuntimeError, KeyError, TypeError, AttributeError) as exc:
        first = str(exc).splitlines()[0][:200]
        raise BadCheckpoint(f"the weights in {path} do not match its configuration ({first})") from None


class RunLock:
    """An exclusive lock on a run folder for the life of one training process.

    ``flock`` on ``OUT/.lock``: the kernel drops it when the process ends, however it
    ends, so a lock left by a dead process never blocks; a live holder is named."""

    def __init__(self, folder: str | os.PathLike[str]) -> None:
        self.folder = Path(folder)
        self.fd: int | None = None

    def __enter__(self) -> "RunLock":
        import fcntl

        if self.folder.exists() and not self.folder.is_dir():
            raise UserError(f"--out {self.folder} is a file; give a folder for the run")
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self.folder / ".lock"
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 64).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise RunLocked(f"{self.folder} is in use by another training process (pid {holder}); wait for it "
                            f"to finish, or give this run another --out") from None
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        self.fd = fd
        return self

    def __exit__(self, *exc: object) -> None:
        import fcntl

        if self.fd is not None:
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
            self.fd = None


@dataclass
class DivergenceGuard:
    """Decides, step by step, whether training has gone wrong beyond a NaN.

    It stops a run whose loss (mean of the last ``window`` steps) rises above ``factor``
    times its first step's loss, whose step size ``eta`` or regulariser weight ``rho``
    falls below ``collapse`` times its starting value, or whose fixed-point solves stop
    converging: fewer than half the images of a batch converged for ``patience`` steps in
    a row, in a run whose first ``patience`` steps converged (on average) for 90%."""

    factor: float = 100.0
    window: int = 10
    collapse: float = 1e-3
    patience: int = 20
    start: dict[str, float] = field(default_factory=dict)  # first loss, eta, rho, early converged fraction
    recent: list[float] = field(default_factory=list)
    early: list[float] = field(default_factory=list)
    unconverged_run: int = 0

    def check(self, loss: float, eta: float, rho: float, converged: float | None) -> str | None:
        """A message saying what went wrong, or None (called with each step's loss)."""
        if not math.isfinite(loss):
            return f"the loss became {loss}"
        self.start.setdefault("loss", loss)
        self.recent = (self.recent + [loss])[-self.window:]
        mean = sum(self.recent) / len(self.recent)
        if mean > self.factor * self.start["loss"]:
            return (f"the loss rose to {mean:.3g} (mean of the last {len(self.recent)} steps), more than "
                    f"{self.factor:g} times its first value {self.start['loss']:.3g}")
        why = self.check_parameters(eta, rho)
        if why or converged is None:
            return why
        if converged is not None:
            if len(self.early) < self.patience:
                self.early.append(converged)
            self.unconverged_run = self.unconverged_run + 1 if converged < 0.5 else 0
            early_ok = len(self.early) == self.patience and sum(self.early) / self.patience >= 0.9
            if early_ok and self.unconverged_run >= self.patience:
                return (f"the fixed-point solve stopped converging: fewer than half of each batch converged "
                        f"for {self.unconverged_run} steps in a row")
        return None

    def check_parameters(self, eta: float, rho: float) -> str | None:
        """A message if the step size or the regulariser weight collapsed (called after each update too,
        so that a collapsed value is caught before the next solve uses it)."""
        for name, value in (("rho", rho), ("eta", eta)):  # rho first: the proximal step's eta is 1 / rho
            self.start.setdefault(name, value)
            what = "step size eta" if name == "eta" else "regulariser weight rho"
            if not math.isfinite(value):
                return f"the {what} became {value}"
            if value < self.collapse * self.start[name]:
                return f"the {what} collapsed from {self.start[name]:.3g} to {value:.3g}"
        return None

    def state(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def save_checkpoint(obj: Any, path: str | os.PathLike[str]) -> Path:
    """:func:`jfb_core.provenance.save_atomic` of ``to_plain(obj)``: a checkpoint that loads with
    ``weights_only=True``."""
    return save_atomic(to_plain(obj), path)


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
    model.eval()
    losses, psnrs, iters, conv = [], [], [], []
    for s in range(0, len(x), batch):
        xb = x[s:s + batch].to(device)
        d = measure(A, xb, noise_std, seed=seed, indices=ids[s:s + batch])
        out, stats = model.run(d)
        losses += ((out - xb) ** 2).flatten(1).mean(1).tolist()
        psnrs += psnr(out, xb, data_range=1.0).flatten().tolist()
        if stats.solve is not None:
            iters += stats.solve.iterations
            conv.append(stats.solve.converged_fraction * len(xb))
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


@dataclass
class RunState:
    """Everything a run needs to continue, and the one place that writes and reads its checkpoint.

    ``partial`` holds the running sums of an epoch interrupted after a mid-epoch checkpoint
    (``batch``: batches done); ``resumes`` records, per resumption, the settings that were
    allowed to change (:data:`RESUME_MAY_CHANGE`) and did."""

    model: DEGRAD
    opt: torch.optim.Optimizer
    config: dict[str, Any]
    epoch: int = 0
    steps: int = 0
    train_seconds: float = 0.0
    log: list[dict[str, Any]] = field(default_factory=list)
    curve: list[dict[str, Any]] = field(default_factory=list)  # (steps, seconds, test PSNR) every eval_every
    pretrain_history: list[float] = field(default_factory=list)
    denoiser: dict[str, torch.Tensor] | None = None
    partial: dict[str, Any] | None = None
    guard: DivergenceGuard = field(default_factory=DivergenceGuard)
    resumes: list[dict[str, Any]] = field(default_factory=list)
    warm_start: dict[str, Any] | None = None
    calibrations: list[dict[str, Any]] = field(default_factory=list)  # (steps, drift) of each norm calibration
    saved_at: str = "nothing yet"  # what the checkpoint on disk holds, for messages

    def checkpoint(self, device: str) -> dict[str, Any]:
        ckpt = {"model": self.model.state_dict(), "optimizer": self.opt.state_dict(), "epoch": self.epoch,
                "steps": self.steps, "train_seconds": self.train_seconds, "log": self.log, "config": self.config,
                "pretrain_history": self.pretrain_history, "denoiser": self.denoiser, "curve": self.curve,
                "environment": environment_info(device), "guard": self.guard.state(), "resumes": self.resumes,
                "warm_start": self.warm_start, "calibrations": self.calibrations}
        if self.partial is not None:
            ckpt["partial"] = self.partial
        return ckpt

    def log_record(self, device: str) -> dict[str, Any]:
        record = {"config": self.config, "pretrain_history": self.pretrain_history, "log": self.log,
                  "curve": self.curve, "resumes": self.resumes, "warm_start": self.warm_start,
                  "calibrations": self.calibrations}
        if self.partial is not None:
            record["partial_epoch"] = {"epoch": self.epoch + 1, "batch": self.partial["batch"], "steps": self.steps}
        return {**record, "provenance": provenance(config=self.config, device=device)}

    def save(self, out_dir: Path, device: str) -> None:
        """The checkpoint, then the log that follows it; both atomic."""
        save_checkpoint(self.checkpoint(device), out_dir / "checkpoint.pt")
        write_json(out_dir / "log.json", self.log_record(device))
        where = (f"epoch {self.epoch + 1}, batch {self.partial['batch']}" if self.partial is not None
                 else f"end of epoch {self.epoch}")
        self.saved_at = f"{where}, step {self.steps}"

    def restore(self, ckpt: dict[str, Any], path: Path) -> None:
        """Continue from a checkpoint of the same configuration (checked by the caller)."""
        load_weights(self.model, ckpt["model"], path)
        self.opt.load_state_dict(ckpt["optimizer"])
        self.epoch, self.steps, self.train_seconds = ckpt["epoch"], ckpt["steps"], ckpt["train_seconds"]
        self.log, self.curve = ckpt["log"], ckpt.get("curve", [])
        self.pretrain_history, self.denoiser = ckpt.get("pretrain_history", []), ckpt.get("denoiser")
        self.partial, self.resumes = ckpt.get("partial"), ckpt.get("resumes", [])
        self.warm_start, self.calibrations = ckpt.get("warm_start"), ckpt.get("calibrations", [])
        if ckpt.get("guard"):
            self.guard = DivergenceGuard(**ckpt["guard"])
        self.saved_at = f"epoch {self.epoch}, step {self.steps}"


def certify_norms(model: DEGRAD, preset: Preset, options: TrainOptions) -> float | None:
    """With ``options.certify``: the spectral norms of ``model`` certified at the preset's image
    size (so for whole images and for crops), tracked on the training crops from then on;
    returns the drift (1 when training had the peak exactly, above 1 by as much as its
    normalisation lagged), or None when nothing is certified."""
    if not (options.certify and hasattr(model.f, "spectral_layers")):
        return None
    size = (preset.image_size, preset.image_size)
    track = (options.crop, options.crop) if options.crop is not None else size
    return models.calibrate_norms(model.f, size, track, options.certify_margin)


def _calibrate(state: RunState, preset: Preset, options: TrainOptions) -> None:
    """:func:`certify_norms` before a checkpoint or an evaluation, its drift logged."""
    drift = certify_norms(state.model, preset, options)
    if drift is not None:
        state.calibrations.append({"steps": state.steps, "drift": drift})


def _warm_start(model: DEGRAD, path: str, preset: Preset, options: TrainOptions, x_train: torch.Tensor,
                device: str, progress) -> tuple[dict[str, Any], dict[str, torch.Tensor] | None, list[float]]:
    """Start ``model`` from another run's weights (a fully convolutional network loads at any
    image size); pretrain its denoiser from that run's denoiser when ``pretrain_epochs > 0``.
    Returns (what was loaded, the denoiser state, the pretraining history)."""
    src = read_checkpoint(path)
    info = {"checkpoint": str(path), "epoch": src.get("epoch"), "steps": src.get("steps"),
            "train_seconds": src.get("train_seconds"),
            **{k: src["config"].get(k) for k in ("image_size", "blur", "grad_mode", "arch", "depth", "width")}}
    history: list[float] = []
    denoiser = src.get("denoiser")
    if preset.pretrain_epochs > 0:
        if denoiser is not None:
            load_weights(model.f, denoiser, path)
        history = pretrain_denoiser(model.f, x_train, preset.pretrain_epochs, preset.batch_size, preset.lr,
                                    options.pretrain_noise, preset.seed, device, progress)
        denoiser = {k: v.detach().cpu().clone() for k, v in model.f.state_dict().items()}
    load_weights(model, src["model"], path)
    return info, denoiser, history


def _start_or_resume(state: RunState, preset: Preset, options: TrainOptions, out_dir: Path, resume: bool,
                     x_train: torch.Tensor, device: str, progress) -> None:
    ckpt_path = out_dir / "checkpoint.pt"
    if ckpt_path.exists() and not resume:
        raise UserError(f"{out_dir} already holds a run (checkpoint.pt): pass --resume to continue it, "
                        f"or give a new run another --out")
    if resume and ckpt_path.exists():
        ckpt = read_checkpoint(ckpt_path)
        check_compatible(ckpt["config"], state.config)
        state.restore(ckpt, ckpt_path)
        changed = {k: list(v) for k, v in config_changes(ckpt["config"], state.config, RESUME_MAY_CHANGE).items()}
        if changed or ckpt.get("portable"):  # a portable file's power and tracking vectors are re-estimated
            state.resumes.append({"epoch": state.epoch, "steps": state.steps, "changed": changed,
                                  **({"portable": True} if ckpt.get("portable") else {})})
        if progress:
            progress({"phase": "resume", "epoch": state.epoch, "steps": state.steps,
                      "batch": state.partial["batch"] if state.partial else 0})
        return
    t0 = time.perf_counter()
    if options.init_from:
        state.warm_start, state.denoiser, state.pretrain_history = _warm_start(
            state.model, options.init_from, preset, options, x_train, device, progress)
    elif preset.pretrain_epochs > 0:
        state.pretrain_history = pretrain_denoiser(state.model.f, x_train, preset.pretrain_epochs, preset.batch_size,
                                                   preset.lr, options.pretrain_noise, preset.seed, device, progress)
        state.denoiser = {k: v.detach().cpu().clone() for k, v in state.model.f.state_dict().items()}
    state.train_seconds += time.perf_counter() - t0


def _setup_device(device: str, world: int, rank: int) -> str:
    if world > 1 and not torch.distributed.is_initialized():
        torch.distributed.init_process_group("nccl" if device.startswith("cuda") else "gloo")
    if device.startswith("cuda"):
        torch.backends.cudnn.benchmark = True
        if world > 1:
            device = f"cuda:{int(os.environ.get('LOCAL_RANK', rank))}"
            torch.cuda.set_device(device)
    return device


def train(preset: Preset, options: TrainOptions, out_dir: str | os.PathLike[str], device: str = "cpu",
          resume: bool = False, progress: Callable[[dict], None] | None = None) -> TrainResult:
    """Train DE-GRAD; write ``checkpoint.pt`` and ``log.json`` to ``out_dir`` after every epoch.

    ``progress`` receives dicts (phase, epoch, step, loss, solver iterations ...) for
    a progress bar. Raises :class:`TrainingDiverged` when training goes wrong (see
    :class:`DivergenceGuard`), :class:`ConfigMismatch` when resuming with settings that
    shape the result changed, :class:`RunLocked` when another process trains in
    ``out_dir``, and :class:`TrainingInterrupted` on Ctrl-C (naming the last checkpoint).
    """
    check_trainable(preset)
    rank, world = _dist_info()
    out_dir = Path(out_dir)
    if rank != 0:
        return _train(preset, options, out_dir, device, resume, progress)
    with RunLock(out_dir):
        return _train(preset, options, out_dir, device, resume, progress)


def check_trainable(preset: Preset) -> None:
    """What training adds to a preset's own rules (a preset for evaluation may have no epochs):
    at least one epoch and one training image."""
    if preset.epochs < 1:
        raise UserError(f"epochs must be >= 1 to train, got {preset.epochs}")
    if preset.n_train < 1:
        raise UserError(f"n_train must be >= 1 (the number of training images), got {preset.n_train}")


def _train(preset: Preset, options: TrainOptions, out_dir: Path, device: str, resume: bool,
           progress: Callable[[dict], None] | None) -> TrainResult:
    rank, world = _dist_info()
    device = _setup_device(device, world, rank)
    torch.manual_seed(preset.seed)
    model = build_model(preset, options, device)
    cache = load_cache(options.data_cache) if options.data_cache else None  # read once for both splits
    x_train, id_train = split_images(preset, options, "train", preset.n_train, cache)
    # with a data cache, the cache's test split is the limit; the preset's n_test sizes the bundled split only
    n_eval = options.n_eval if options.data_cache else min(options.n_eval, preset.n_test or options.n_eval)
    x_eval, id_eval = split_images(preset, options, options.eval_split, n_eval, cache)
    if set(id_eval) & set(id_train):
        raise UserError(f"the {len(set(id_eval) & set(id_train))} last training images are the val split: "
                        f"lower --n-train to at most {len(x_train) - len(set(id_eval) & set(id_train))}")
    if options.crop is not None and options.crop > preset.image_size:
        raise UserError(f"crop {options.crop} is larger than the {preset.image_size}-px images")
    config = {**run_config(preset, options), "data_hash": cache["hash"] if cache is not None else None}
    del cache
    state = RunState(model, torch.optim.Adam(model.parameters(), lr=preset.lr), config)
    try:
        _start_or_resume(state, preset, options, out_dir, resume, x_train, device, progress)
        net = model
        if world > 1:
            net = torch.nn.parallel.DistributedDataParallel(model, device_ids=None if device == "cpu" else [device])
        untracked = options.certify and any(layer.fvec.numel() == 0 for layer in model.f.spectral_layers())
        if not state.calibrations or untracked:  # certified from the first step, and after a portable file
            _calibrate(state, preset, options)
        stop = "finished"
        if (state.epoch >= preset.epochs or (options.max_steps is not None and state.steps >= options.max_steps)
                or (options.max_seconds is not None and state.train_seconds >= options.max_seconds)):
            stop = "already complete"
        while stop == "finished" and state.epoch < preset.epochs:
            data = (x_train, id_train, x_eval, id_eval)
            if _train_epoch(state, net, preset, options, data, out_dir, device, progress, rank, world):
                stop = ("time budget" if options.max_seconds is not None
                        and state.train_seconds >= options.max_seconds else "max_steps")
    except KeyboardInterrupt:
        where = (f"the last checkpoint is {out_dir / 'checkpoint.pt'} ({state.saved_at}); continue with --resume"
                 if state.saved_at != "nothing yet" else "nothing was saved yet")
        raise TrainingInterrupted(f"interrupted; {where}") from None
    return TrainResult(log=state.log, checkpoint=str(out_dir / "checkpoint.pt") if rank == 0 else None, stopped=stop)


def _diverged(state: RunState, what: str, out_dir: Path, where: str) -> TrainingDiverged:
    kept = (f"the checkpoint {out_dir / 'checkpoint.pt'} holds the last good state ({state.saved_at})"
            if state.saved_at != "nothing yet" else "nothing was saved")
    return TrainingDiverged(f"{what} at {where}; {kept}. Lower --lr (now {state.config['lr']:g}) and start "
                            f"a new run in another --out")


def _train_step(state: RunState, net, preset: Preset, options: TrainOptions, xb: torch.Tensor, ids: list[int],
                b: int, device: str, out_dir: Path):
    """One step of Algorithm 4.1 on batch ``b`` of the epoch: ``(loss, forward stats, the images)``;
    a :class:`TrainingDiverged` (the last good state kept) when the guard sees the run go wrong."""
    model, epoch = state.model, state.epoch
    if options.crop is not None:  # the same crops on resume: the generator is seeded by epoch and batch
        xb = random_crops(xb, options.crop, seed=(preset.seed * 7919 + epoch) * 1_000_003 + b)
    xb = xb.to(device)
    d = measure(model.A, xb, preset.noise_std, seed=preset.seed, indices=ids)
    with torch.autocast("cuda", dtype=torch.bfloat16, enabled=options.amp and device.startswith("cuda")):
        out, stats = net(d, return_stats=True)
    loss = ((out.float() - xb) ** 2).mean()
    conv = stats.solve.converged_fraction if stats.solve is not None else None
    why = state.guard.check(loss.item(), float(model.eta.detach()), float(model.rho.detach()), conv)
    if why:
        raise _diverged(state, why, out_dir, f"epoch {epoch + 1}, batch {b + 1}")
    state.opt.zero_grad(set_to_none=True)
    loss.backward()
    state.opt.step()
    state.steps += 1
    why = state.guard.check_parameters(float(model.eta.detach()), float(model.rho.detach()))
    if why:
        raise _diverged(state, why, out_dir, f"epoch {epoch + 1}, batch {b + 1}")
    return loss, stats, xb


def _curve_point(state: RunState, preset: Preset, options: TrainOptions, x_eval, id_eval, device: str,
                 train_seconds: float) -> None:
    """A point of the learning curve: the (certified) model scored on the held-out images."""
    _calibrate(state, preset, options)
    ev = evaluate_model(state.model, state.model.A, x_eval, id_eval, preset.noise_std, preset.seed + 1,
                        preset.batch_size, device)
    state.curve.append({"steps": state.steps, "train_seconds": train_seconds, "test_psnr": ev["psnr"],
                        "test_loss": ev["loss"]})
    state.model.train()


def _train_epoch(state: RunState, net, preset: Preset, options: TrainOptions, data, out_dir: Path, device: str,
                 progress, rank: int, world: int) -> bool:
    """One epoch (or its rest, after a mid-epoch checkpoint); True when ``max_steps`` was reached."""
    model, epoch = state.model, state.epoch
    x_train, id_train, x_eval, id_eval = data
    g = torch.Generator().manual_seed(preset.seed * 7919 + epoch)
    order = torch.randperm(len(x_train), generator=g)
    batches = [order[s:s + preset.batch_size] for s in range(0, len(order), preset.batch_size)][rank::world]
    model.train()
    t_epoch = time.perf_counter()
    sums = {"batch": 0, "total": 0.0, "count": 0, "iters": [], "biters": [], "bres": []}
    if state.partial is not None:  # continue the interrupted epoch after its last checkpointed batch
        sums, state.partial = dict(state.partial), None
    hit_max = False
    for b in range(sums["batch"], len(batches)):
        idx = batches[b]
        loss, stats, xb = _train_step(state, net, preset, options, x_train[idx], [id_train[i] for i in idx],
                                      b, device, out_dir)
        sums["total"] += loss.item() * len(xb)
        sums["count"] += len(xb)
        sums["batch"] = b + 1
        if stats.solve is not None:  # the backward statistics were filled in by loss.backward()
            sums["iters"].append(sum(stats.solve.iterations) / len(stats.solve.iterations))
            sums["biters"].append(stats.backward.iterations)
            if stats.backward.residual:
                sums["bres"].append(max(stats.backward.residual))
        if progress and rank == 0:
            progress({"phase": "train", "epoch": epoch + 1, "epochs": preset.epochs, "batch": b + 1,
                      "batches": len(batches), "loss": loss.item(), "eta": float(model.eta.detach()),
                      "iterations": sums["iters"][-1] if sums["iters"] else None,
                      "backward_iterations": sums["biters"][-1] if sums["biters"] else None})
        if options.eval_every and state.steps % options.eval_every == 0 and rank == 0:
            paused = time.perf_counter()  # evaluation time is not training time
            _curve_point(state, preset, options, x_eval, id_eval, device, state.train_seconds + paused - t_epoch)
            t_epoch += time.perf_counter() - paused
        if options.max_steps is not None and state.steps >= options.max_steps:
            hit_max = True
            break
        spent = state.train_seconds + time.perf_counter() - t_epoch
        if options.max_seconds is not None and spent >= options.max_seconds:
            hit_max = True  # the time budget: end the epoch here, score and checkpoint as usual
            break
        if options.checkpoint_every and state.steps % options.checkpoint_every == 0 and b + 1 < len(batches):
            # mid-epoch: the epoch counter stays, the batches done and the epoch's running sums
            # are saved, so that --resume continues with the next batch of the same order
            if rank == 0:
                now = time.perf_counter()
                state.train_seconds += now - t_epoch
                state.partial = sums
                _calibrate(state, preset, options)
                state.save(out_dir, device)
                state.partial = None
                t_epoch = time.perf_counter()  # writing is not training time
    state.train_seconds += time.perf_counter() - t_epoch
    _end_epoch(state, preset, options, sums, x_eval, id_eval, out_dir, device, progress, rank, world)
    return hit_max


def _end_epoch(state: RunState, preset: Preset, options: TrainOptions, sums: dict[str, Any], x_eval, id_eval,
               out_dir: Path, device: str, progress, rank: int, world: int) -> None:
    """Score the eval images, append the epoch's log row, write the checkpoint and log."""
    model = state.model
    if world > 1:
        torch.distributed.barrier()
    state.epoch += 1
    if rank == 0:
        _calibrate(state, preset, options)
        ev = evaluate_model(model, model.A, x_eval, id_eval, preset.noise_std, preset.seed + 1, preset.batch_size,
                            device)
        iters, biters, bres = sums["iters"], sums["biters"], sums["bres"]
        row = {"epoch": state.epoch, "steps": state.steps, "train_loss": sums["total"] / max(1, sums["count"]),
               "test_loss": ev["loss"], "test_psnr": ev["psnr"], "test_iterations": ev["iterations"],
               "test_converged_fraction": ev["converged_fraction"],
               "train_iterations": sum(iters) / len(iters) if iters else None,
               "backward_iterations": sum(biters) / len(biters) if biters else None,
               "backward_residual_max": max(bres) if bres else None,
               "eta": float(model.eta.detach()), "rho": float(model.rho.detach()),
               "train_seconds": state.train_seconds, "n_eval_images": len(x_eval),
               "world_size": world}
        state.log.append(row)
        state.save(out_dir, device)
        if progress:
            progress({"phase": "epoch", **row})
    if world > 1:
        torch.distributed.barrier()


def slim_checkpoint(src: str | os.PathLike[str], dst: str | os.PathLike[str],
                    keep_power_vectors: bool = True, keep_optimizer: bool = False) -> Path:
    """A copy of a checkpoint for publishing: without the optimiser state, and with the
    power-iteration vectors ``u`` of the spectral layers (image-sized, most of what is left)
    stored in float16. They only warm-start the norm estimate; a model scores with the
    stored ``sigma``, so the slim checkpoint gives the same outputs as the full one.

    ``keep_power_vectors=False`` stores each as a zero of its shape (a single stored number:
    at 128 px the vectors are most of the file) and drops the Fourier tracking vectors of a
    certified run (``fvec``; a fresh empty tensor, since a slice would keep, and save, its
    whole storage). The network still scores with the stored ``sigma`` (certified up
    to the size recorded in ``certified``), so its outputs are the same; training from such a
    file restarts the power iteration from a random vector, or with ``certify`` the tracking
    from the exact singular vectors.

    ``keep_optimizer=True`` (with ``keep_power_vectors=False``) makes a *portable* checkpoint
    that ``train --resume`` continues: the optimiser state and the counters stay, the power and
    tracking vectors are re-estimated on resumption, and the resumption is recorded as
    portable. A certified run re-derives its tracking vectors exactly as the calibration before
    the checkpoint did, so it continues as the uninterrupted run (a test checks it bit for bit);
    an uncertified one restarts its power iteration and continues close to it."""
    ckpt = read_checkpoint(src)
    if keep_optimizer:
        ckpt["portable"] = not keep_power_vectors
    else:
        ckpt.pop("optimizer", None)
    for key in ("model", "denoiser"):
        state = ckpt.get(key)
        if state:
            is_u = lambda k: k == "u" or k.endswith(".u")  # noqa: E731
            is_f = lambda k: k == "fvec" or k.endswith(".fvec")  # noqa: E731
            ckpt[key] = {k: (v.half() if keep_power_vectors else torch.zeros((), dtype=torch.float16).expand(v.shape))
                         if is_u(k) else (v.new_zeros((0, *v.shape[1:])) if is_f(k) and not keep_power_vectors else v)
                         for k, v in state.items()}
    return save_checkpoint(ckpt, dst)


__all__ = ["ConfigMismatch", "DATA_KEYS", "DivergenceGuard", "MODEL_KEYS", "RESUME_MAY_CHANGE", "RunLock", "RunState",
           "TrainOptions", "TrainResult", "TrainingDiverged", "TrainingInterrupted", "build_model", "certify_norms", "check_compatible", "check_trainable",
           "config_changes", "evaluate_model", "load_cache", "load_checkpoint", "pretrain_denoiser", "read_checkpoint",
           "load_weights", "run_config", "save_checkpoint", "slim_checkpoint", "split_config", "split_images", "to_plain", "train"]
