"""Benchmarks: wall time and cost of the library's building blocks.

Benchmarks *measure and record*; they never assert. Every benchmark returns a
JSON-ready dict that the command line stores with its provenance (machine,
versions, configuration). On a GPU every clock reading is preceded by
``torch.cuda.synchronize`` so that asynchronous kernels are counted (the paper's
public timing code did not do this).
"""

from __future__ import annotations

import statistics
import time
from typing import Callable

import torch

from jfb_core.config import Preset


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
    from jfb_core.data import bundled_images, measure
    from jfb_core.operators import blur_from_setting
    from jfb_core.regularizers import tv_grad, tv_lipschitz

    A = blur_from_setting(preset.blur, padding=preset.padding)
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
    from jfb_core.solvers import anderson, fixed_point

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
    and the gradient flows through one application of ``T``. ``unrolled``: ``K``
    plain DE-GRAD steps with autograd recording all of them. Reported per ``K``:
    the bytes autograd saved for the backward pass (:class:`SavedTensorMeter`) and,
    on a GPU, the peak CUDA allocation during forward and backward.
    """
    from jfb_core.data import bundled_images, measure
    from jfb_core.models import DEGRAD, DnCNN
    from jfb_core.operators import blur_from_setting

    size = size or preset.image_size
    batch = batch or preset.bench_batch
    torch.manual_seed(preset.seed)
    A = blur_from_setting(preset.blur, padding=preset.padding)
    f = DnCNN(preset.depth, preset.width, lipschitz=preset.lipschitz).to(device)
    model = DEGRAD(A, f, eta=preset.eta, m=preset.anderson_m, tol=1e-12).to(device)
    x = bundled_images("train", size, n=batch, seed=preset.seed).to(device)
    d = measure(A, x, preset.noise_std, seed=preset.seed)
    model(d)  # certify the spectral norms at this size before measuring
    rows = []
    for k in iterations:
        for mode in ("jfb", "unrolled"):
            model.zero_grad(set_to_none=True)
            if torch.device(device).type == "cuda":
                torch.cuda.synchronize(device)
                torch.cuda.reset_peak_memory_stats(device)
                base = torch.cuda.memory_allocated(device)
            with SavedTensorMeter() as meter:
                if mode == "jfb":
                    model.max_iter = k
                    out = model(d)
                else:
                    z = A.adjoint(d)
                    for _ in range(k):
                        z = model.T(z, d)
                    out = z
            ((out - x) ** 2).mean().backward()
            row = {"iterations": k, "mode": mode, "saved_bytes": meter.bytes}
            if torch.device(device).type == "cuda":
                torch.cuda.synchronize(device)
                row["cuda_peak_bytes"] = torch.cuda.max_memory_allocated(device) - base
            rows.append(row)
    return {"size": size, "batch": batch, "depth": preset.depth, "width": preset.width, "device": device,
            "measure": "bytes of distinct tensor storages saved by autograd for backward"
                       + ("; and peak CUDA allocation above the baseline" if torch.device(device).type == "cuda" else ""),
            "rows": rows}


__all__ = ["SavedTensorMeter", "bench_memory", "bench_solvers", "synchronize", "timed", "tv_fixed_point_map"]
