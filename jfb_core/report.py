"""Reading committed artefacts for the book: merge evaluations, compare rows, time to quality.

An evaluation JSON (written by ``python -m jfb_core evaluate``) scores some methods on
some test images. A comparison table usually merges several of them (the baselines
from one file, each learned network from its own), which is valid only when they
scored the *same images under the same measurements*: same image ids (a file may
score a prefix of the reference's images), image size, blur, padding, noise and data
range. :func:`compare` checks that before it computes anything, then reports each row
with the gain over a reference method *on the same images*, per image.

Training logs (``log.json`` of ``train``) give the curves; :func:`time_to_quality`
turns two of them into the comparison that matters in practice: how long one backward
mode takes to come within a margin of where the other ended.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy as np

from jfb_core.errors import UserError


class MismatchedEvaluations(UserError):
    """Two evaluations that did not score the same images under the same measurements."""


def load_json(path: str | os.PathLike[str]) -> dict[str, Any]:
    """One committed JSON artefact (evaluation, baseline or training log)."""
    with open(path, encoding="utf-8") as fh:
        return json.load(fh)


def setting_label(ev: Mapping[str, Any]) -> str:
    """The one-line provenance of an evaluation: data, size, blur, noise, device."""
    t, b = ev["test"], ev["blur"]
    device = ev.get("provenance", {}).get("environment", {}).get("device", "?")
    return (f"{t['name']}, {t['size']}x{t['size']} px, blur {b['name']} ({b['padding']} padding), "
            f"noise {ev['noise_std']:g}, data range {ev.get('data_range', 1):g}, {device}")


def check_same_measurements(reference: Mapping[str, Any], other: Mapping[str, Any], truncate: bool = False) -> int:
    """Raise :class:`MismatchedEvaluations` unless ``other`` scored a prefix of ``reference``'s
    test images under the same blur, noise, size and data range. Returns that prefix's length.
    With ``truncate``, ``other`` may also score *more* images than ``reference``, provided its
    first ones are ``reference``'s; only those are compared (the returned length).

    Noise is drawn per image from its id, so the same ids and noise level give the same
    measurements; where both files score the same number of images, the mean PSNR of the
    measurements must also agree (it would not if the noise seed differed)."""
    for key in ("noise_std", "data_range"):
        if reference.get(key) != other.get(key):
            raise MismatchedEvaluations(f"{key} differs: {reference.get(key)} vs {other.get(key)}")
    for key in ("name", "padding"):
        if reference["blur"][key] != other["blur"][key]:
            raise MismatchedEvaluations(f"blur {key} differs: {reference['blur'][key]} vs {other['blur'][key]}")
    if reference["test"]["size"] != other["test"]["size"]:
        raise MismatchedEvaluations(f"image size differs: {reference['test']['size']} vs {other['test']['size']}")
    ref_ids, ids = list(reference["test"]["ids"]), list(other["test"]["ids"])
    if truncate and len(ids) > len(ref_ids):
        if ids[:len(ref_ids)] != ref_ids:
            raise MismatchedEvaluations(f"the first {len(ref_ids)} of the {len(ids)} test images are not the "
                                        f"reference's")
        return len(ref_ids)
    if len(ids) > len(ref_ids) or ref_ids[:len(ids)] != ids:
        raise MismatchedEvaluations(f"the {len(ids)} test images are not the first {len(ids)} of the reference's "
                                    f"{len(ref_ids)}")
    if len(ids) == len(ref_ids):
        a, b = reference["measurement"]["psnr_mean"], other["measurement"]["psnr_mean"]
        if abs(a - b) > 1e-6:
            raise MismatchedEvaluations(f"same images but different measurements (mean PSNR of d {a:.6f} vs {b:.6f})")
    return len(ids)


def per_image(ev: Mapping[str, Any], method: str, metric: str = "psnr") -> np.ndarray:
    """The per-image scores of one method of an evaluation."""
    if method not in ev["methods"]:
        raise UserError(f"method {method!r} is not in this evaluation (has {sorted(ev['methods'])})")
    return np.asarray(ev["methods"][method]["per_image"][metric], dtype=float)


@dataclass
class Row:
    """One method of a comparison, against the reference method on the same images."""

    label: str
    n: int
    psnr: float
    ssim: float
    gain: np.ndarray = field(repr=False)  # per-image PSNR minus the reference method's
    reference_psnr: float = float("nan")  # the reference method's mean on the same images

    @property
    def gain_mean(self) -> float:
        return float(self.gain.mean())

    @property
    def better_fraction(self) -> float:
        return float(np.mean(self.gain > 0))


def compare(reference: Mapping[str, Any], rows: Mapping[str, tuple[Mapping[str, Any], str]],
            against: str = "tv", truncate: bool = False) -> list[Row]:
    """Rows of a comparison table, each checked against ``reference``.

    ``rows`` maps a label to ``(evaluation, method key)``; ``against`` names the method of
    ``reference`` (say tuned TV) that every row is measured against, image by image, on the
    images that row scored. With ``truncate``, a row that scored more images than the
    reference is compared on the reference's images only."""
    ref = per_image(reference, against)
    out = []
    for label, (ev, method) in rows.items():
        n = check_same_measurements(reference, ev, truncate=truncate)
        psnr, ssim = per_image(ev, method)[:n], per_image(ev, method, "ssim")[:n]
        out.append(Row(label, n, float(psnr.mean()), float(ssim.mean()), psnr - ref[:n], float(ref[:n].mean())))
    return out


def markdown_table(header: list[str], rows: list[list[Any]]) -> str:
    """A Markdown table (for ``IPython.display.Markdown``): the header, then one line per row;
    cells are written with ``str`` (format numbers before), a ``|`` inside a cell is escaped."""
    if any(len(row) != len(header) for row in rows):
        raise ValueError(f"every row needs {len(header)} cells, one per column of {header}")
    cell = lambda v: str(v).replace("|", "\\|")  # noqa: E731
    lines = ["| " + " | ".join(map(cell, header)) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(map(cell, row)) + " |" for row in rows]
    return "\n".join(lines)


def rows_markdown(rows: list[Row], training: Mapping[str, str] | None = None, against: str = "TV") -> str:
    """A Markdown table of :func:`compare`'s rows (``training``: label -> how it was trained)."""
    training = training or {}
    return markdown_table(["method", "images", "PSNR (dB)", "SSIM", f"− {against} (dB)", "better", "training"],
                          [[r.label, r.n, f"{r.psnr:.2f}", f"{r.ssim:.3f}", f"{r.gain_mean:+.2f}",
                            f"{r.better_fraction:.0%}", training.get(r.label, "")] for r in rows])


def training_label(log: Mapping[str, Any]) -> str:
    """How a run was trained, from its ``log.json``: steps, minutes, device, warm start."""
    last, cfg = log["log"][-1], log["config"]
    warm = ", warm-started" if cfg.get("init_from") else ""
    device = log.get("provenance", {}).get("environment", {}).get("device", "?")
    device = device.replace("(1 threads)", "(1 thread)")  # the wording of logs written before it was fixed
    return f"{last['steps']} steps, {last['train_seconds'] / 60:.0f} min, {device}{warm}"


def smooth(curve: list[Mapping[str, Any]], k: int = 3) -> list[tuple[float, int, float]]:
    """``(training seconds, steps, PSNR averaged over the last k scores)`` per point of a curve.

    One score on a few dozen images moves by tenths of a dB between evaluations, so curves
    are compared through a running mean."""
    if k < 1:
        raise UserError(f"k must be at least 1, got {k}")
    p = np.array([c["test_psnr"] for c in curve], dtype=float)
    avg = [float(p[max(0, i - k + 1):i + 1].mean()) for i in range(len(p))]
    return [(float(c["train_seconds"]), int(c["steps"]), a) for c, a in zip(curve, avg)]


@dataclass
class TimeToQuality:
    """Where the slower run ended, and when the faster one first came within ``margin`` of it."""

    slow_seconds: float
    slow_final: float  # smoothed PSNR at the slow run's end
    margin: float
    fast_hit: tuple[float, int] | None  # (seconds, steps) of the first smoothed score within margin
    fast_at_slow_end: float | None  # the fast run's smoothed PSNR at the slow run's total time

    @property
    def fraction(self) -> float | None:
        return None if self.fast_hit is None else self.fast_hit[0] / self.slow_seconds


def time_to_quality(fast: list[Mapping[str, Any]], slow: list[Mapping[str, Any]], margin: float = 0.5,
                    k: int = 3) -> TimeToQuality:
    """Compare two training curves (lists of ``{"train_seconds", "steps", "test_psnr"}``).

    The slow run's quality is its smoothed final score; the answer is the first time at
    which the fast run's smoothed score is within ``margin`` dB of it, and the fast run's
    smoothed score at the slow run's total time (its last score before then)."""
    if not fast or not slow:
        raise UserError("time_to_quality needs two non-empty curves")
    fs, ss = smooth(fast, k), smooth(slow, k)
    total, _, final = ss[-1]
    hit = next(((t, s) for t, s, a in fs if a >= final - margin), None)
    before = [a for t, _, a in fs if t <= total]
    return TimeToQuality(total, final, margin, hit, before[-1] if before else None)


def curve_points(log: Mapping[str, Any]) -> list[dict[str, Any]]:
    """A run's scores during training and its final epoch score, in step order, without repeats."""
    points = {p["steps"]: p for p in log.get("curve", [])}
    last = log["log"][-1]
    points.setdefault(last["steps"], last)
    return [points[k] for k in sorted(points)]


__all__ = ["MismatchedEvaluations", "Row", "TimeToQuality", "check_same_measurements", "compare", "curve_points",
           "load_json", "markdown_table", "rows_markdown", "per_image", "setting_label", "smooth", "time_to_quality", "training_label"]
