"""Benchmarks: wall time and cost of the library's building blocks.

Benchmarks *measure and record*; they never assert. Every benchmark returns a
JSON-ready dict that the command line stores with its provenance (machine,
versions, configuration). On a GPU every clock reading is preceded by
``torch.cuda.synchronize`` so that asynchronous kernels are counted (the paper's
public timing code did not do this).
"""

from __future__ import annotations

import copy
import statistics
import time
from typing import Callable

import torch

from jfb_core.config import Preset
from jfb_core.data import bundled_images, CelebAFolder, load_cache, measure, random_crops
from jfb_core.errors import UserError
from jfb_core.gradients import Backward, IFT, make_backward, Neumann
from jfb_core.models import build_model
from jfb_core.regularizers import tv_grad, tv_lipschitz
from jfb_core.solvers import anderson, fixed_point
from jfb_core.train import (build_model as build_run_model, certify_norms, load_weights, read_checkpoint,
                            split_images, TrainOptions)


def _network(model) -> dict:
    """What was timed: the DE-GRAD the preset describes (:func:`jfb_core.models.build_model`)."""
    f = model.f
    return {"arch": f.arch, "depth": f.depth, "width": f.channels, "skip": f.skip, "activation": f.activation,
            "lipschitz": f.lipschitz, "data_step": model.data_step, "rho": float(model.rho.detach())
            if model.rho_raw is not None else 1.0}


def synchronize(device: torch.device | str) -> None:
    """Wait for queued GPU work, so a clock reading includes it."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], object], device: torch.device | str, repeats: int, warmup: int = 1) -> list[float]:
    """Wall-clock seconds of ``repeats`` calls of ``fn`` after ``warmup`` calls, synchronised."""
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(repeats):
        synchronize(device)
        t0 = time.perf_counter()
        fn()
        synchronize(device)
        out.append(time.perf_counter() - t0)
    return out


def tv_fixed_point_map(preset: Preset, size: int, batch: int, device: str, lam: float = 2e-3,
                       delta: float = 1e-2, seed: int = 0):
    """The TV gradient-descent map of chapter 2 on a ``(batch, 3, size, size)`` problem.

    ``T(z) = z - eta (A^T (A z - d) + lam grad TV(z))`` with ``eta = 1 / (L + 8 lam / delta)``:
    the same shape and data term as the DE-GRAD map of chapter 4, with TV in place
    of the learned regulariser. Returns ``(T, z0)`` with ``z0 = A^T d``.
    """

    A = preset.blur_operator()
    x = bundled_images("val", size, n=batch, seed=seed, scale=max(1, 256 // size)).to(device)
    d = measure(A, x, preset.noise_std, seed=seed)
    eta = 1.0 / (A.eigenvalue_bounds(size, size).L + lam * tv_lipschitz(delta))

    def T(z: torch.Tensor) -> torch.Tensor:
        return z - eta * (A.adjoint(A(z) - d) + lam * tv_grad(z, delta))

    return T, A.adjoint(d)


def bench_solvers(preset: Preset, device: str = "cpu", size: int | None = None, batch: int | None = None,
                  repeats: int | None = None) -> dict:
    """Function evaluations and wall time to tolerance: plain iteration vs Anderson.

    Also the overhead of Anderson's least-squares step relative to one evaluation
    of the map. Sizes default to the preset's largest benchmark size and batch.
    """

    size = size or max(preset.bench_sizes)
    batch = batch or preset.bench_batch
    repeats = repeats or preset.bench_repeats
    T, z0 = tv_fixed_point_map(preset, size, batch, device)
    budget = 20 * preset.max_iter  # let plain iteration show how long it really needs
    solvers = {
        "fixed_point": lambda: fixed_point(T, z0, tol=preset.tol, max_iter=budget),
        "anderson": lambda: anderson(T, z0, m=preset.anderson_m, tol=preset.tol, max_iter=budget),
    }
    t_eval = timed(lambda: T(z0), device, repeats=max(5, repeats))
    out: dict = {"size": size, "batch": batch, "tol": preset.tol, "max_iter": budget,
                 "anderson_m": preset.anderson_m, "repeats": repeats, "device": device,
                 "map": "TV gradient-descent map of chapter 2 (DE-GRAD's shape and data term)",
                 "seconds_per_evaluation": statistics.median(t_eval), "solvers": {}}
    for name, run in solvers.items():
        result = run()
        times = timed(run, device, repeats=repeats, warmup=0)
        med = statistics.median(times)
        out["solvers"][name] = {
            "nfe": result.nfe,
            "iterations_max": int(result.iterations.max()),
            "converged_fraction": result.converged_fraction,
            "final_residual_max": float(result.residual.max()),
            "seconds_median": med,
            "seconds_all": times,
            "fallbacks": result.fallbacks,
            "residual_history_mean": result.history.mean(dim=1).tolist(),
        }
    a = out["solvers"]["anderson"]
    per_iter = a["seconds_median"] / max(1, a["nfe"])
    out["anderson_overhead_per_iteration"] = (per_iter - out["seconds_per_evaluation"]) / out["seconds_per_evaluation"]
    out["speedup_wall"] = out["solvers"]["fixed_point"]["seconds_median"] / a["seconds_median"]
    out["speedup_nfe"] = out["solvers"]["fixed_point"]["nfe"] / a["nfe"]
    return out


class SavedTensorMeter:
    """Bytes of the distinct tensor storages that autograd saves for the backward pass.

    Used as a context manager around a forward pass: it is exactly the memory the
    graph keeps alive until ``backward``, on any device, and it does not depend on
    the allocator or on what else the process holds (unlike peak RSS on a CPU).
    """

    def __init__(self) -> None:
        self.bytes = 0
        self._seen: set[tuple[str, int]] = set()

    def _pack(self, t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        key = (str(t.device), storage.data_ptr())
        if key not in self._seen:
            self._seen.add(key)
            self.bytes += storage.nbytes()
        return t

    def __enter__(self) -> "SavedTensorMeter":
        self._ctx = torch.autograd.graph.saved_tensors_hooks(self._pack, lambda t: t)
        self._ctx.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self._ctx.__exit__(*exc)


def bench_memory(preset: Preset, device: str = "cpu", iterations: tuple[int, ...] = (10, 20, 50, 100),
                 size: int | None = None, batch: int | None = None) -> dict:
    """Memory of one forward + backward of DE-GRAD as the number of forward iterations grows.

    ``jfb``: the fixed point is found without a graph (exactly ``K`` Anderson steps)
    and the gradient flows through one application of ``T``. ``ift``: the same solve;
    the backward solves the adjoint equation through a second recorded application of ``T``. ``unrolled``: ``K``
    plain DE-GRAD steps with autograd recording all of them. Reported per ``K``:
    the bytes autograd saved for the backward pass (:class:`SavedTensorMeter`) and,
    on a GPU, the peak CUDA allocation during forward and backward.
    """

    size = size or preset.image_size
    batch = batch or preset.bench_batch
    torch.manual_seed(preset.seed)
    model = build_model(preset, device, tol=1e-12)
    A = model.A
    x = bundled_images("train", size, n=batch, seed=preset.seed).to(device)
    d = measure(A, x, preset.noise_std, seed=preset.seed)
    model(d)  # certify the spectral norms at this size before measuring
    rows = []
    for k in iterations:
        for mode in ("jfb", "ift", "unrolled"):
            model.zero_grad(set_to_none=True)
            if torch.device(device).type == "cuda":
                torch.cuda.synchronize(device)
                torch.cuda.reset_peak_memory_stats(device)
                base = torch.cuda.memory_allocated(device)
            with SavedTensorMeter() as meter:
                model.max_iter = k
                out = model.set_backward(mode, unroll_k=k)(d)
            ((out - x) ** 2).mean().backward()
            row = {"iterations": k, "mode": mode, "saved_bytes": meter.bytes}
            if torch.device(device).type == "cuda":
                torch.cuda.synchronize(device)
                row["cuda_peak_bytes"] = torch.cuda.max_memory_allocated(device) - base
            rows.append(row)
    return {"size": size, "batch": batch, "depth": preset.depth, "width": preset.width, "device": device,
            "network": _network(model),
            "measure": "bytes of distinct tensor storages saved by autograd for backward"
                       + ("; and peak CUDA allocation above the baseline" if torch.device(device).type == "cuda" else ""),
            "rows": rows}


def plot_backward(result: dict, path: str) -> None:
    """Three panels from :func:`bench_backward`: step time per method against image size,
    the step-time ratio to JFB together with JFB's backward over ``t_T``, and memory."""
    from matplotlib.figure import Figure

    sizes = [r["size"] for r in result["rows"]]
    methods = list(result["methods"])
    fig = Figure(figsize=(13, 3.8), layout="constrained")
    ax1, ax2, ax3 = fig.subplots(1, 3)
    for name in methods:
        step = [r["methods"][name]["step_median"] for r in result["rows"]]
        bwd = [r["methods"][name]["backward_median"] for r in result["rows"]]
        (line,) = ax1.plot(sizes, step, "o-", label=f"{name}: step")
        ax1.plot(sizes, bwd, "s--", color=line.get_color(), alpha=0.6, label=f"{name}: backward")
        if name != "jfb" and "step_ratio_to_jfb" in result["rows"][0]:
            ax2.plot(sizes, [r["step_ratio_to_jfb"][name] for r in result["rows"]], "o-", color=line.get_color(),
                     label=f"{name} step / JFB step")
        mem = [r["methods"][name]["cuda_peak_bytes"] or r["methods"][name]["saved_bytes"] for r in result["rows"]]
        ax3.plot(sizes, [m / 2**20 for m in mem], "o-", color=line.get_color(), label=name)
    ax1.plot(sizes, [r["t_T_forward_backward"] for r in result["rows"]], "k:", label="one T forward+backward")
    ax1.set(xlabel="image side (pixels)", ylabel="median seconds", yscale="log", title="time per training step")
    ax1.legend(fontsize=8)
    if "jfb" in methods:
        ax2.plot(sizes, [r["methods"]["jfb"]["backward_over_t_T"] for r in result["rows"]], "ko--",
                 label="JFB backward / (T fwd+bwd)")
    ax2.axhline(1.0, color="grey", lw=0.8)
    ax2.set(xlabel="image side (pixels)", ylabel="ratio", title="cost ratios")
    ax2.legend(fontsize=8)
    gpu = result["rows"][0]["methods"][methods[0]]["cuda_peak_bytes"] is not None
    ax3.set(xlabel="image side (pixels)", ylabel="MiB",
            title="peak CUDA allocation in a step" if gpu else "bytes saved by autograd in a step")
    ax3.legend(fontsize=8)
    fig.suptitle(f"DE-GRAD training step, batch {result['batch']}, {result['forward_iters']} forward iterations, "
                 f"depth {result['depth']} width {result['width']}, {result['device']}", fontsize=9)
    fig.savefig(path, dpi=110)


def plot_backward_comparison(results: dict[str, dict], figsize: tuple[float, float] = (13, 4.6)):
    """Fig. 2 for several committed :func:`bench_backward` results at once, drawn large.

    ``results`` maps a label (say ``"paper 17x64, CPU"``) to a result. Panel 1: median
    step time per method against image size (one line style per result); panel 2: each
    IFT variant's step time over JFB's; panel 3: memory (CUDA peak on a GPU, else bytes
    saved by autograd). Returns the matplotlib ``Figure``; nothing is written.
    """
    from matplotlib.figure import Figure

    if not results:
        raise ValueError("plot_backward_comparison needs at least one result")
    fig = Figure(figsize=figsize, layout="constrained")
    ax1, ax2, ax3 = fig.subplots(1, 3)
    colours = {"jfb": "C0", "ift_cg": "C1", "ift_fp": "C2", "neumann": "C3", "ift_aa": "C4"}
    styles = ["o-", "s--", "^:", "d-."]
    for (label, res), style in zip(results.items(), styles):
        sizes = [r["size"] for r in res["rows"]]
        for name in res["methods"]:
            c = colours.get(name, "k")
            ms = [r["methods"][name] for r in res["rows"]]
            ax1.plot(sizes, [m["step_median"] for m in ms], style, color=c, label=f"{name}, {label}")
            mem = [(m["cuda_peak_bytes"] or m["saved_bytes"]) / 2**20 for m in ms]
            ax3.plot(sizes, mem, style, color=c, label=f"{name}, {label}")
            if name != "jfb":
                ax2.plot(sizes, [r["step_ratio_to_jfb"][name] for r in res["rows"]], style, color=c,
                         label=f"{name} / jfb, {label}")
    ax1.set(xlabel="image side (pixels)", ylabel="median seconds per step", yscale="log",
            title="time per training step")
    ax2.axhline(1.0, color="grey", lw=0.8)
    ax2.set(xlabel="image side (pixels)", ylabel="step time / JFB step time", title="cost relative to JFB")
    ax3.set(xlabel="image side (pixels)", ylabel="MiB", yscale="log", title="memory of a step")
    for ax in (ax1, ax2, ax3):
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    return fig

BACKWARD_METHODS = {
    # name: (grad_mode, backward_solver, human label)
    "jfb": ("jfb", "fixed_point", "JFB (eq. 4.1)"),
    "ift_cg": ("ift", "cg_normal", "IFT, CG on the normal equations (the paper's route)"),
    "ift_fp": ("ift", "fixed_point", "IFT, fixed-point iteration on the adjoint equation"),
    "ift_aa": ("ift", "anderson", "IFT, Anderson acceleration on the adjoint equation"),
    "neumann": ("neumann", "fixed_point", "Neumann series, k extra terms (eq. 4.2)"),
}


def _bench_batch(size: int, batch: int, seed: int, data: str | None, device: str) -> tuple[torch.Tensor, str]:
    """A fixed batch of ``batch`` images at ``size`` x ``size``: CelebA when ``data`` is given
    (the first images of the paper's training range), else the bundled training photographs."""

    if data:
        ds = CelebAFolder(data, "train", size=size, subset="paper", limit=batch)
        return torch.stack([ds[i] for i in range(len(ds))]).to(device), f"CelebA paper train images 1-{len(ds)}"
    return bundled_images("train", size, n=batch, seed=seed).to(device), "bundled training photographs"


def _peak_start(device: str) -> int:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        return torch.cuda.memory_allocated(device)
    return 0


def _peak_bytes(device: str, base: int) -> int | None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)
        return torch.cuda.max_memory_allocated(device) - base
    return None


def _time_training_step(base, backward: Backward, d, x, lr: float, warmup: int, repeats: int, t_T: float,
                        device) -> dict:
    """One backward mode of :func:`bench_backward`: ``warmup`` + ``repeats`` training steps of a copy of
    ``base``, each split into forward, backward and optimizer time; medians, samples and memory."""
    model = copy.deepcopy(base)
    model.backward = backward
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    samples: dict[str, list] = {"forward": [], "backward": [], "optimizer": [], "step": [],
                                "backward_iterations": [], "forward_nfe": []}
    saved, peak = 0, None
    for rep in range(warmup + repeats):
        opt.zero_grad(set_to_none=True)
        mark = _peak_start(device)
        synchronize(device)
        t0 = time.perf_counter()
        model.f.power_step()  # as DEGRAD.forward does in training mode
        solved = model.solve(d)
        synchronize(device)
        t1 = time.perf_counter()
        with SavedTensorMeter() as meter:
            out, bstats = model.attach_gradient(solved.z, d)
            loss = ((out - x) ** 2).mean()
        loss.backward()
        synchronize(device)
        t2 = time.perf_counter()
        opt.step()
        synchronize(device)
        t3 = time.perf_counter()
        if rep < warmup:
            continue
        samples["forward"].append(t1 - t0)
        samples["backward"].append(t2 - t1)
        samples["optimizer"].append(t3 - t2)
        samples["step"].append(t3 - t0)
        samples["backward_iterations"].append(bstats.iterations)  # filled in by loss.backward()
        samples["forward_nfe"].append(solved.nfe)
        saved = max(saved, meter.bytes)
        p = _peak_bytes(device, mark)
        peak = p if peak is None else max(peak, p or 0)
    med = {k: statistics.median(samples[k]) for k in ("forward", "backward", "optimizer", "step")}
    return {
        **{f"{k}_median": v for k, v in med.items()},
        "backward_over_t_T": med["backward"] / t_T,
        "backward_iterations_median": statistics.median(samples["backward_iterations"]),
        "forward_nfe": samples["forward_nfe"][-1],
        "saved_bytes": saved,
        "cuda_peak_bytes": peak,
        "samples": samples,
    }


def _backward_row(preset: Preset, A, size: int, batch: int, data: str | None, device: str, forward_iters: int,
                  methods: tuple[str, ...], backward_options: dict, lr: float, warmup: int, repeats: int,
                  say: Callable[[str], None]):
    """One image size of :func:`bench_backward`: ``(row, image source, the timed base model)``."""
    x, source = _bench_batch(size, batch, preset.seed, data, device)
    d = measure(A, x, preset.noise_std, seed=preset.seed)
    torch.manual_seed(preset.seed)
    base = build_model(preset, device, tol=1e-30, max_iter=forward_iters)
    base.eval()
    with torch.no_grad():
        base(d)  # certify the spectral norms at this size once, before copying
    base.train()
    # the floor: one forward + backward of T at a point, with the same graph as JFB
    z_fixed = base.solve(d).z

    def t_pass() -> None:
        base.zero_grad(set_to_none=True)
        ((base.T(z_fixed, d) - x) ** 2).mean().backward()

    t_T = statistics.median(timed(t_pass, device, repeats=repeats, warmup=warmup))
    row = {"size": size, "t_T_forward_backward": t_T, "methods": {}}
    for name in methods:
        mode, solver, _ = BACKWARD_METHODS[name]
        backward = make_backward(mode, solver=solver, **backward_options)
        row["methods"][name] = _time_training_step(base, backward, d, x, lr, warmup, repeats, t_T, device)
        med = {k: row["methods"][name][f"{k}_median"] for k in ("forward", "backward", "optimizer", "step")}
        say(f"size {size:4d} {name:>8}: step {med['step'] * 1e3:9.1f} ms (forward {med['forward'] * 1e3:8.1f}, "
            f"backward {med['backward'] * 1e3:8.1f}, optimizer {med['optimizer'] * 1e3:6.1f}), "
            f"backward iterations {row['methods'][name]['backward_iterations_median']:g}")
    if "jfb" in row["methods"]:
        jfb_step = row["methods"]["jfb"]["step_median"]
        row["step_ratio_to_jfb"] = {k: v["step_median"] / jfb_step for k, v in row["methods"].items()}
    return row, source, base


def bench_backward(preset: Preset, device: str = "cpu", sizes: tuple[int, ...] | None = None,
                   batch: int | None = None, repeats: int | None = None, warmup: int = 2,
                   forward_iters: int = 20, methods: tuple[str, ...] = ("jfb", "ift_cg", "ift_fp"),
                   backward_tol: float = IFT.tol, backward_max_iter: int = IFT.max_iter, neumann_k: int = Neumann.k,
                   data: str | None = None, lr: float = 1e-5,
                   progress: Callable[[str], None] | None = None,
                   on_row: Callable[[list], None] | None = None) -> dict:
    """Time one training step of DE-GRAD per backward mode (the paper's Fig. 2, made fair).

    Protocol: per square image size, one fixed batch; every method gets its own copy
    of the same initial model and its own Adam optimiser; the forward solve runs
    exactly ``forward_iters`` Anderson iterations for every method (tolerance
    disabled), so only the backward differs; ``warmup`` untimed steps, then
    ``repeats`` timed steps, with ``torch.cuda.synchronize`` before every clock
    reading on a GPU. A step is split into *forward* (the fixed-point solve under
    ``no_grad``), *backward* (one recorded application of ``T`` and
    ``loss.backward()``, which for IFT includes the adjoint solve) and *optimizer*
    (``Adam.step``). Also per size: the median time of one forward + backward
    pass of ``T`` alone (``t_T``: the floor of any backward through the fixed
    point), the adjoint solver's iterations, and memory: bytes saved by autograd in
    the step (:class:`SavedTensorMeter`; any device) and the peak CUDA allocation
    during the step on a GPU. Medians are reported; all samples are kept.
    ``on_row`` is called with the rows so far after every image size (to save partial results).
    """
    unknown = sorted(set(methods) - set(BACKWARD_METHODS))
    if unknown:
        raise UserError(f"unknown method(s) {unknown}; available: {sorted(BACKWARD_METHODS)}")
    if forward_iters < 1 or warmup < 0:
        raise UserError("forward_iters must be >= 1 and warmup >= 0")
    sizes = tuple(sizes or preset.bench_sizes)
    batch = batch or preset.bench_batch
    repeats = repeats or preset.bench_repeats
    say = progress or (lambda msg: None)
    A = preset.blur_operator()
    rows, source = [], ""
    for size in sizes:
        row, source, base = _backward_row(preset, A, size, batch, data, device, forward_iters, methods,
                                          dict(tol=backward_tol, max_iter=backward_max_iter, neumann_k=neumann_k),
                                          lr, warmup, repeats, say)
        rows.append(row)
        if on_row is not None:
            on_row(rows)
    return {"sizes": list(sizes), "batch": batch, "repeats": repeats, "warmup": warmup,
            "forward_iters": forward_iters, "methods": {k: BACKWARD_METHODS[k][2] for k in methods},
            "backward_tol": backward_tol, "backward_max_iter": backward_max_iter, "neumann_k": neumann_k,
            "depth": preset.depth, "width": preset.width, "blur": preset.blur, "device": device,
            "network": _network(base), "images": source, "adam_lr": lr,
            "memory_measure": "saved_bytes: distinct tensor storages autograd saved during the step's recorded "
                              "part (work vectors of the adjoint solve are not included); cuda_peak_bytes: peak "
                              "CUDA allocation above the step's starting allocation (GPU only)",
            "rows": rows}


# --------------------------------------------------------------------------- the training step

STEP_PARTS = ("data", "forward_solve", "backward", "optimiser", "checkpoint")


def _step_model(preset: Preset, options: TrainOptions, device: str):
    """The run's DE-GRAD in training mode: warm-started from ``options.init_from`` when given
    and, with ``options.certify``, calibrated as :func:`jfb_core.train.train` does first."""
    torch.manual_seed(preset.seed)
    model = build_run_model(preset, options, device)
    if options.init_from:
        load_weights(model, read_checkpoint(options.init_from)["model"], options.init_from)
    certify_norms(model, preset, options)
    return model.train()


def _timed_step(model, opt, x, ids, preset: Preset, options: TrainOptions, b: int, device: str) -> dict:
    """One step of Algorithm 4.1 as :func:`jfb_core.train.train` runs it, with a clock between
    its parts (the solve and the recorded application are the two halves of ``DEGRAD.run``)."""
    n = preset.batch_size
    clock = [time.perf_counter()]

    def lap() -> None:
        synchronize(device)
        clock.append(time.perf_counter())

    idx = torch.arange(b * n, b * n + n) % len(x)
    xb = x[idx]
    if options.crop is not None:
        xb = random_crops(xb, options.crop, seed=b)
    xb = xb.to(device)
    d = measure(model.A, xb, preset.noise_std, seed=preset.seed, indices=[ids[i] for i in idx])
    lap()
    if hasattr(model.f, "power_step"):
        model.f.power_step()
    result = model.solve(d)
    lap()
    out, _ = model.attach_gradient(result.z, d)
    loss = ((out - xb) ** 2).mean()
    opt.zero_grad(set_to_none=True)
    loss.backward()
    lap()
    opt.step()
    lap()
    seconds = dict(zip(STEP_PARTS, (b - a for a, b in zip(clock, clock[1:]))))
    return {"seconds": seconds, "evaluations_of_T": result.nfe + 1,
            "anderson_iterations": sum(result.iterations.tolist()) / len(result.iterations)}


def _norm_seconds(model, evaluations: float, repeats: int = 3) -> float:
    """Seconds spent normalising the spectral layers in one step of ``evaluations`` evaluations
    of T: the first evaluation after the optimiser's update (in certified mode it carries the
    Fourier power step), then the others at their own cost."""
    layers = model.f.spectral_layers() if hasattr(model.f, "spectral_layers") else []
    first = later = 0.0
    with torch.no_grad():
        for _ in range(repeats):
            for layer in layers:
                layer.weight.add_(0.0)  # a new weight version, as after opt.step()
            t0 = time.perf_counter()
            for layer in layers:
                layer.current_sigma()
            t1 = time.perf_counter()
            for layer in layers:
                layer.current_sigma()
            first, later = first + t1 - t0, later + time.perf_counter() - t1
    return (first + (evaluations - 1) * later) / repeats


def _convolution_seconds(model, opt, x, ids, preset, options, device) -> tuple[float, float]:
    """(seconds inside convolution operators, wall seconds) of one step under ``torch.profiler``:
    the self time of every operator whose name contains ``conv`` (forward and backward, the
    network's and the blur's)."""
    from torch.profiler import ProfilerActivity, profile

    t0 = time.perf_counter()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        _timed_step(model, opt, x, ids, preset, options, 0, device)
    wall = time.perf_counter() - t0
    conv_us = sum(e.self_cpu_time_total for e in prof.key_averages() if "conv" in e.key.lower())
    return conv_us / 1e6, wall


def _checkpoint_seconds(model, opt, preset: Preset, options: TrainOptions) -> dict:
    """What one checkpoint costs: the certification of the norms (with ``certify``) and the save."""
    import tempfile

    t0 = time.perf_counter()
    certify_norms(model, preset, options)
    t1 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        torch.save({"model": model.state_dict(), "optimizer": opt.state_dict()}, f"{tmp}/checkpoint.pt")
    return {"calibrate": t1 - t0, "save": time.perf_counter() - t1}


def bench_step(preset: Preset, options: TrainOptions, device: str = "cpu", threads: tuple[int, ...] = (1, 2),
               repeats: int = 3, warmup: int = 1, checkpoint_every: int | None = None,
               progress: Callable[[str], None] | None = None) -> dict:
    """Where the time of one training step goes, at each CPU thread count in ``threads``.

    The step is the one :func:`jfb_core.train.train` runs for ``preset`` and ``options`` (the
    same model, crops, certified normalisation and data), timed in parts: fetching the batch
    and measuring it, the forward solve, the recorded application with the backward pass,
    the optimiser, and the checkpoint (certification and save) shared over
    ``checkpoint_every`` steps. Normalising the spectral layers happens at every evaluation
    of T, inside the solve and the backward; it is reported as its own time times the
    evaluations. One more step runs under ``torch.profiler`` for the time spent in
    convolutions, the floor that the rest of the step is compared with."""
    x, ids = split_images(preset, options, "train", max(2 * preset.batch_size, 1),
                          load_cache(options.data_cache) if options.data_cache else None)
    every = checkpoint_every or options.checkpoint_every or 1
    rows = []
    for n_threads in threads:
        torch.set_num_threads(n_threads)
        model = _step_model(preset, options, device)
        opt = torch.optim.Adam(model.parameters(), lr=preset.lr)
        for b in range(warmup):
            _timed_step(model, opt, x, ids, preset, options, b, device)
        steps = [_timed_step(model, opt, x, ids, preset, options, warmup + b, device) for b in range(repeats)]
        median = {k: statistics.median(s["seconds"][k] for s in steps) for k in STEP_PARTS[:-1]}
        ckpt = _checkpoint_seconds(model, opt, preset, options)
        median["checkpoint"] = (ckpt["calibrate"] + ckpt["save"]) / every
        evaluations = statistics.median(s["evaluations_of_T"] for s in steps)
        conv, profiled_wall = _convolution_seconds(model, opt, x, ids, preset, options, device)
        step = sum(median.values())
        rows.append({"threads": n_threads, "step_seconds": step, "parts_seconds": median,
                     "norm_estimation_seconds": _norm_seconds(model, evaluations),
                     "evaluations_of_T": evaluations,
                     "anderson_iterations": statistics.median(s["anderson_iterations"] for s in steps),
                     "checkpoint_seconds": ckpt, "convolution_seconds": conv,
                     "profiled_step_wall_seconds": profiled_wall, "step_over_convolutions": step / conv,
                     "steps": [s["seconds"] for s in steps]})
        if progress:
            progress(f"{n_threads} thread(s): step {step:.2f} s, convolutions {conv:.2f} s ({step / conv:.2f}x)")
    return {"benchmark": "step", "image_size": preset.image_size, "crop": options.crop,
            "batch": preset.batch_size, "certify": options.certify, "grad_mode": options.grad_mode,
            "channels_last": options.channels_last, "init_from": options.init_from,
            "data": options.data_cache or "bundled", "checkpoint_every": every, "repeats": repeats,
            "warmup": warmup, "network": _network(model), "rows": rows,
            "parts": {"data": "batch from memory, crops, measurement", "forward_solve": "Anderson under no_grad",
                      "backward": "the recorded application of T, the loss and loss.backward()",
                      "optimiser": "Adam step", "checkpoint": "calibration and torch.save, per step"}}


__all__ = ["BACKWARD_METHODS", "STEP_PARTS", "SavedTensorMeter", "bench_backward", "bench_memory", "bench_solvers",
           "bench_step", "plot_backward", "plot_backward_comparison", "synchronize", "timed", "tv_fixed_point_map"]
