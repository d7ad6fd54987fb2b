"""Evaluation of reconstruction methods on a data split (``python -m jfb_core evaluate``).

Classical methods (direct inverse, Tikhonov, TV gradient descent) have their
regularisation weight tuned on a validation split, never on the test split:

* bundled images: the ``val`` photographs;
* CelebA, paper subset: the last ``n_val`` images of the training range
  (the paper's subset has no validation split of its own);
* CelebA, official subset: the official validation split.

Every image gets the same noise whatever the batch it is in (the noise is seeded
by the image's number), so two methods always see the same measurements.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from dataclasses import asdict, dataclass, field
from typing import Callable, Iterable, Sequence

import numpy as np
import torch

from jfb_core.baselines import TV_BOX, direct_inverse, pnp_pgd, tikhonov, tune_weight, tv_fista, tv_gradient_descent
from jfb_core.config import BLURS
from jfb_core.data import measure
from jfb_core.metrics import psnr, ssim
from jfb_core.models import DEGRAD, SolveStats
from jfb_core.operators import LinearOperator, blur_from_setting
from jfb_core.errors import UserError

CLASSICAL_METHODS = ("direct", "tikhonov", "tv", "tv_exact")
TIKHONOV_GRID = (3e-3, 1e-2, 3e-2)
TV_GRID = (5e-4, 1e-3, 2e-3, 4e-3)
TV_EXACT_GRID = (1e-4, 2e-4, 5e-4, 1e-3, 1.5e-3, 2e-3, 4e-3)  # setting B chose 1.5e-3


@dataclass
class ClassicalSettings:
    """Solver settings of the classical methods (the defaults are the ones used for results/)."""

    direct_max_iter: int = 100
    tikhonov_max_iter: int = 200
    tikhonov_grid: tuple[float, ...] = TIKHONOV_GRID
    tv_grid: tuple[float, ...] = TV_GRID
    tv_delta: float = 1e-2
    #: smoothing parameters to tune together with the weight (empty: ``tv_delta`` alone)
    tv_delta_grid: tuple[float, ...] = ()
    tv_max_iter: int = 150
    tv_tol: float = 1e-5
    tv_momentum: bool = True
    tv_exact_grid: tuple[float, ...] = TV_EXACT_GRID
    tv_exact_max_iter: int = 2000
    tv_exact_inner_iter: int = 10
    #: FISTA stops each image once its duality gap is at most this fraction of its objective
    tv_exact_gap_tol: float = 1e-3

    def grids(self) -> dict[str, tuple]:
        """The tuning grid of each method that has one; TV's is of ``(weight, delta)`` pairs
        when ``tv_delta_grid`` is given."""
        tv_grid = tuple((w, dl) for dl in self.tv_delta_grid for w in self.tv_grid) or self.tv_grid
        return {"tikhonov": self.tikhonov_grid, "tv": tv_grid, "tv_exact": self.tv_exact_grid}


@dataclass
class Split:
    """Images of one split with stable identifiers (seeds for their noise)."""

    name: str
    images: Callable[[], Iterable[tuple[list[int], torch.Tensor]]]
    size: int
    description: str


def make_reconstructor(method: str, A: LinearOperator, settings: ClassicalSettings
                       ) -> Callable[[torch.Tensor, float | None], torch.Tensor]:
    """``rec(d, weight)`` for a classical method (``weight`` ignored by ``direct``)."""
    if method == "direct":
        return lambda d, w=None: direct_inverse(A, d, max_iter=settings.direct_max_iter)
    if method == "tikhonov":
        return lambda d, w: tikhonov(A, d, w, max_iter=settings.tikhonov_max_iter)
    if method == "tv":
        def rec(d: torch.Tensor, w: float | tuple[float, float]) -> torch.Tensor:
            lam, delta = w if isinstance(w, (tuple, list)) else (w, settings.tv_delta)
            return tv_gradient_descent(A, d, lam, delta=delta, max_iter=settings.tv_max_iter,
                                       tol=settings.tv_tol, momentum=settings.tv_momentum).x
        return rec
    if method == "tv_exact":
        return FistaTally(A, settings)
    raise UserError(f"unknown method {method!r}; choose from {CLASSICAL_METHODS}")


class FistaTally:
    """The ``tv_exact`` reconstructor: FISTA to the duality gap of the settings, one tally entry
    per call ``(weight, images, images at the cap, largest relative gap, iterations)``. As in
    :class:`PnPTally`, each weight's first call is its validation run and every later call a
    test batch, so :meth:`summary` reports the test images apart from the tuning."""

    def __init__(self, A: LinearOperator, settings: ClassicalSettings) -> None:
        self.A, self.settings, self.calls = A, settings, []

    def __call__(self, d: torch.Tensor, w: float) -> torch.Tensor:
        s = self.settings
        r = tv_fista(self.A, d, w, max_iter=s.tv_exact_max_iter, inner_iter=s.tv_exact_inner_iter,
                     gap_tol=s.tv_exact_gap_tol)
        self.calls.append((w, len(d), int((~r.converged).sum()), float((r.gap / r.objective[-1]).max()),
                           int(r.iterations.sum())))
        return r.x

    def summary(self) -> dict:
        first = {}
        test = [c for i, c in enumerate(self.calls) if first.setdefault(c[0], i) != i]
        images = sum(c[1] for c in test)
        return {"scheme": "FISTA to a duality gap (baselines.tv_exact_gap)", "box": list(TV_BOX), "images": images,
                "gap_tol": self.settings.tv_exact_gap_tol, "max_relative_gap": max((c[3] for c in test), default=0.0),
                "images_at_cap": sum(c[2] for c in test), "mean_iterations": sum(c[4] for c in test) / max(images, 1)}


@dataclass
class MethodResult:
    method: str
    weight: float | None
    psnr_mean: float
    ssim_mean: float
    psnr_std: float | None  # None for a single image
    ssim_std: float | None
    seconds: float
    tuning: dict | None = None
    per_image: dict = field(default_factory=dict)


def _tune(methods, recs, grids, d_val, x_val, say) -> tuple[dict, dict]:
    """Each method's weight chosen on the validation images (``None`` for a method without a grid)."""
    weights: dict[str, float | None] = {}
    tuning: dict[str, dict | None] = {}
    for m in methods:
        if m in grids:
            say(f"tuning {m} on {len(x_val)} validation images")
            t = tune_weight(lambda w, m=m: recs[m](d_val, w), x_val, grids[m],
                            progress=lambda msg, m=m: say(f"  {m} {msg}"))
            weights[m], tuning[m] = t.best, {"weights": t.weights, "val_psnr": t.psnr}
        else:
            weights[m], tuning[m] = None, None
    return weights, tuning


def _summary(values: dict) -> dict:
    """Means and sample standard deviations of per-image PSNR and SSIM."""
    p, s = torch.tensor(values["psnr"]), torch.tensor(values["ssim"])
    one = len(p) < 2  # a sample standard deviation needs two images
    return {"psnr_mean": float(p.mean()), "ssim_mean": float(s.mean()),
            "psnr_std": None if one else float(p.std()), "ssim_std": None if one else float(s.std())}


def _score_batch(x: torch.Tensor, d: torch.Tensor, recs: dict[str, Callable], weights: dict, per: dict,
                 seconds: dict[str, float], kept: dict[str, list], room: int) -> None:
    """Reconstruct one test batch with every method (in ``recs``' order) and add its scores,
    its seconds and, while ``room > 0``, its first images to the running records."""
    for m, rec in recs.items():
        t0 = time.perf_counter()
        with torch.no_grad():
            x_hat = rec(d, weights[m])
        seconds[m] += time.perf_counter() - t0
        if room > 0:
            kept[m].append(x_hat[:room].cpu())
        per[m]["psnr"] += psnr(x_hat, x, reduction="none").tolist()
        per[m]["ssim"] += ssim(x_hat, x, reduction="none").tolist()


def evaluate_classical(methods: Sequence[str], blur: str, padding: str, noise_std: float,
                       val: tuple[list[int], torch.Tensor], test: Split, seed: int = 0,
                       settings: ClassicalSettings | None = None, device: str = "cpu",
                       progress: Callable[[str], None] | None = None,
                       extra: dict[str, tuple[Callable, tuple | None]] | None = None,
                       keep: int = 0) -> dict:
    """Tune each method on ``val`` (ids, images), then score it on every test image.

    ``extra`` adds methods by name: ``(rec(d, weight), grid or None)``, e.g. trained
    DE-GRAD networks or Plug-and-Play. ``keep > 0`` also returns (not as JSON) the
    first ``keep`` test images, measurements and reconstructions under ``"_images"``.

    Returns a JSON-ready dict: per-method means, deviations, tuning tables, per-image values, settings.
    """
    settings, say = settings or ClassicalSettings(), progress or (lambda msg: None)
    A = blur_from_setting(blur, channels=3, padding=padding)
    val_ids, x_val = val[0], val[1].to(device)
    d_val = measure(A, x_val, noise_std, seed=seed, indices=val_ids)
    extra = extra or {}
    recs = {m: extra[m][0] if m in extra else make_reconstructor(m, A, settings) for m in methods}
    grids = settings.grids()
    grids.update({m: g for m, (_, g) in extra.items() if g is not None})
    kept: dict[str, list[torch.Tensor]] = {"truth": [], "measured": [], **{m: [] for m in methods}}
    weights, tuning = _tune(methods, recs, grids, d_val, x_val, say)
    per, seconds = {m: {"psnr": [], "ssim": []} for m in methods}, {m: 0.0 for m in methods}
    per_ids: list[int] = []
    measured: dict[str, list[float]] = {"psnr": [], "ssim": []}
    for ids, x in test.images():
        x = x.to(device)
        d = measure(A, x, noise_std, seed=seed, indices=ids)
        per_ids += list(ids)
        measured["psnr"] += psnr(d, x, reduction="none").tolist()
        measured["ssim"] += ssim(d, x, reduction="none").tolist()
        room = keep - sum(len(t) for t in kept["truth"])
        if room > 0:
            kept["truth"].append(x[:room].cpu())
            kept["measured"].append(d[:room].cpu())
        _score_batch(x, d, recs, weights, per, seconds, kept, room)
        say(f"{len(per_ids)} test images done")
    out = {m: asdict(MethodResult(method=m, weight=weights[m], seconds=seconds[m], tuning=tuning[m],
                                  per_image={k: [round(v, 4) for v in vals] for k, vals in per[m].items()},
                                  **_summary(per[m])))
           for m in methods}
    out.update({m: {**out[m], "solver": rec.summary()} for m, rec in recs.items() if isinstance(rec, FistaTally)})
    result = {
        "blur": {"name": blur, **{k: getattr(BLURS[blur], k) for k in ("kernel_size", "sigma", "description")},
                 "padding": padding},
        "noise_std": noise_std,
        "data_range": 1.0,
        "test": {"name": test.name, "n": len(per_ids), "size": test.size, "description": test.description,
                 "ids": per_ids},
        "val": {"n": len(val_ids)},
        "measurement": _summary(measured),
        "methods": out,
        "settings": asdict(settings),
    }
    if keep:
        result["_images"] = {k: torch.cat(v) for k, v in kept.items() if v}
    return result


# --------------------------------------------------------------------------- learned methods
# A trained network or Plug-and-Play enters evaluate_classical through ``extra`` as a
# reconstructor; a LearnedMethod also keeps what its solver did on every call and shapes
# that, with its settings, into the JSON record of the method.

@dataclass
class SolverTally:
    """The forward solves of a DE-GRAD over every image it reconstructed."""

    images: int = 0
    converged: float = 0.0
    iterations: int = 0
    residual_max: float = 0.0

    def add(self, st: SolveStats) -> None:
        n = len(st.iterations)
        self.images += n
        self.converged += st.converged_fraction * n
        self.iterations += sum(st.iterations)
        self.residual_max = max(self.residual_max, max(st.residual))

    def summary(self) -> dict:
        """Means over the images (the raw counts when there were none)."""
        if not self.images:
            return asdict(self)
        return {"images": self.images, "converged_fraction": self.converged / self.images,
                "iterations_mean": self.iterations / self.images, "residual_max": self.residual_max}


@dataclass
class PnPTally:
    """Plug-and-Play's solves, one entry per call: ``(setting, images, converged, iterations)``.

    :func:`evaluate_classical` tunes first (one call per setting, on the validation images),
    then runs the chosen setting on the test batches; so each setting's first call is its
    validation run and every later call is a test batch."""

    max_iter: int
    tol: float
    calls: list = field(default_factory=list)

    def summary(self) -> dict:
        seen, tuning, test = set(), [], {"images": 0, "converged": 0, "iterations": 0.0}
        for w, n, conv, its in self.calls:
            if w not in seen:
                seen.add(w)
                tuning.append({"setting": list(w) if isinstance(w, tuple) else w, "converged_fraction": conv / n,
                               "iterations": its})
            else:
                test["images"] += n
                test["converged"] += conv
                test["iterations"] += its * n
        solver = {"tol": self.tol, "max_iter": self.max_iter, "tuning": tuning}
        if test["images"]:
            solver.update(images=test["images"], converged_fraction=test["converged"] / test["images"],
                          iterations_mean=test["iterations"] / test["images"])
        return solver


@dataclass
class LearnedMethod:
    """A reconstructor for ``evaluate_classical(extra=...)`` with its settings (``config``)
    and the tally of its solver (``solver_key`` names it in the record)."""

    rec: Callable[[torch.Tensor, object], torch.Tensor]
    grid: tuple | None
    config: dict
    tally: SolverTally | PnPTally
    solver_key: str = "solver"

    def record(self) -> dict:
        """The method's JSON record: its settings and what its solver did."""
        return {**self.config, self.solver_key: self.tally.summary()}


def degrad_method(model: DEGRAD, dtype: torch.dtype, config: dict) -> LearnedMethod:
    """A trained DE-GRAD as a method: runs in ``dtype`` (its output in the input's), tallies
    every forward solve; ``config`` (checkpoint, lipschitz, ...) is completed with the solve's settings."""
    tally = SolverTally()

    def rec(d: torch.Tensor, w=None) -> torch.Tensor:
        out, stats = model.run(d.to(dtype))
        tally.add(stats.solve)
        return out.to(d.dtype)

    config = {**config, "solve_tol": model.tol, "solve_max_iter": model.max_iter,
              "dtype": str(dtype).removeprefix("torch."),
              "inner_tol": model.inner_tol if model.data_step == "proximal" else None}
    return LearnedMethod(rec, None, config, tally)


def pnp_method(f, A: LinearOperator, dtype: torch.dtype, steps: Sequence[float], strengths: Sequence[float],
               max_iter: int, tol: float, config: dict) -> LearnedMethod:
    """Plug-and-Play proximal gradient with the denoiser ``f`` as a method: the step alone
    tuned for the plain denoiser (``strengths == (1.0,)``), else (step, strength) pairs."""
    if any(not 0 < t < 2 for t in steps):  # 2 / L with L = ||A||^2 <= 1 for a normalised blur
        raise UserError(f"PnP step values (--pnp-step) must be in (0, 2), got {list(steps)}")
    if not tol > 0 or max_iter < 1:
        raise UserError("PnP needs a positive tolerance (--pnp-tol) and at least 1 iteration (--pnp-max-iter)")
    if any(not 0 < a <= 1 for a in strengths):
        raise UserError(f"PnP strength values (--pnp-strength) must be in (0, 1], got {list(strengths)}")
    tally = PnPTally(max_iter=max_iter, tol=tol)

    def rec(d: torch.Tensor, w) -> torch.Tensor:
        w = tuple(w) if isinstance(w, (tuple, list)) else w  # the chosen setting comes back as a list
        step, strength = w if isinstance(w, tuple) else (w, 1.0)
        st: dict = {}
        out = pnp_pgd(A, d.to(dtype), f, step=step, strength=strength, max_iter=max_iter, tol=tol, stats=st)
        tally.calls.append((w, len(d), st["converged"], st["iterations"]))
        return out.to(d.dtype)

    plain = tuple(strengths) == (1.0,)
    grid = tuple(steps) if plain else tuple((t, a) for t in steps for a in strengths)
    scheme = "proximal gradient, step" + ("" if plain else " and denoiser strength")
    config = {**config, "scheme": scheme + " tuned on validation", "strengths": list(strengths),
              "dtype": str(dtype).removeprefix("torch.")}
    return LearnedMethod(rec, grid, config, tally, solver_key="pnp_solver")


def grid_layout(n_rows: int, n_cols: int, size: int, label_width: int = 170, title_height: int = 34,
                gap: int = 6) -> dict:
    """Pixel geometry of :func:`plot_grid`'s figure: each image is drawn ``scale`` times larger by
    pixel repetition (``scale = max(1, 256 // size)``), so a panel of the PNG is an exact copy of
    the image, and a detail can be cut from it without resampling."""
    scale = max(1, 256 // size)
    tile = size * scale
    return {"rows": n_rows, "cols": n_cols, "size": size, "scale": scale, "tile": tile, "gap": gap,
            "left": label_width, "top": title_height,
            "width": label_width + n_cols * (tile + gap), "height": title_height + n_rows * (tile + gap)}


def grid_panel(layout: dict, row: int, col: int) -> tuple[slice, slice]:
    """The pixel rows and columns of panel (``row``, ``col``) in a :func:`plot_grid` PNG."""
    y = layout["top"] + row * (layout["tile"] + layout["gap"])
    x = layout["left"] + col * (layout["tile"] + layout["gap"])
    return slice(y, y + layout["tile"]), slice(x, x + layout["tile"])


def plot_grid(images: dict[str, torch.Tensor], labels: dict[str, str], path: str, title: str = "") -> dict:
    """Rows of images, one row per entry of ``labels`` (the paper's Table 1 layout), columns = test
    images, at an integer magnification (:func:`grid_layout`); with a ``"truth"`` row, every
    other panel carries its PSNR against it, written inside the panel. Writes the PNG at
    ``path`` and its layout beside it (``.json``); returns the layout."""
    from matplotlib.figure import Figure

    rows = [k for k in labels if k in images]
    n, size = images[rows[0]].shape[0], images[rows[0]].shape[-1]
    lay = grid_layout(len(rows), n, size)
    canvas = np.ones((lay["height"], lay["width"], 3))
    for i, key in enumerate(rows):
        for j in range(n):
            tile = images[key][j].clamp(0, 1).permute(1, 2, 0).numpy()
            ys, xs = grid_panel(lay, i, j)
            canvas[ys, xs] = np.repeat(np.repeat(tile, lay["scale"], axis=0), lay["scale"], axis=1)
    fig = Figure(figsize=(lay["width"] / 100, lay["height"] / 100), dpi=100)
    ax = fig.add_axes((0, 0, 1, 1))
    ax.imshow(canvas, interpolation="nearest")
    ax.set_axis_off()
    for i, key in enumerate(rows):
        ys, _ = grid_panel(lay, i, 0)
        ax.text(lay["left"] - 10, (ys.start + ys.stop) / 2, labels[key], ha="right", va="center", fontsize=10)
        for j in range(n if key != "truth" and "truth" in images else 0):
            p = float(psnr(images[key][j:j + 1], images["truth"][j:j + 1]))  # as scored: unclipped
            ys, xs = grid_panel(lay, i, j)
            ax.text(xs.start + 4, ys.stop - 4, f"{p:.2f} dB", ha="left", va="bottom", fontsize=9, color="white",
                    bbox={"facecolor": "black", "alpha": 0.6, "pad": 1.5, "linewidth": 0})
    if title:
        ax.text(lay["width"] / 2, lay["top"] / 2, title, ha="center", va="center", fontsize=10)
    fig.savefig(path, dpi=100)
    Path(path).with_suffix(".json").write_text(json.dumps({**lay, "labels": [labels[k] for k in rows]}, indent=1))
    return lay


def format_weight(w, number: str = "{:.1e}") -> str:
    """A tuned weight for a table: blank for none, ``number`` for a float, ``1.9/0.2`` for several settings."""
    if w is None:
        return ""
    return "/".join(f"{v:g}" for v in w) if isinstance(w, (list, tuple)) else number.format(w)


__all__ = ["CLASSICAL_METHODS", "ClassicalSettings", "LearnedMethod", "MethodResult", "PnPTally", "SolverTally", "Split",
           "TV_EXACT_GRID", "degrad_method", "evaluate_classical", "format_weight", "grid_layout", "grid_panel",
           "make_reconstructor", "plot_grid", "pnp_method"]
