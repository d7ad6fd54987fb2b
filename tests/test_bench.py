"""Benchmarks record measurements; these tests check what they measure, never how fast."""

import torch

from jfb_core.bench import SavedTensorMeter, bench_memory, bench_solvers
from jfb_core.config import get_preset


def test_saved_tensor_meter_counts_each_storage_once():
    w = torch.randn(100, requires_grad=True)
    with SavedTensorMeter() as m:
        y = (w * w).sum()  # saves w (twice, the same storage)
    assert m.bytes == 100 * 4
    y.backward()
    with SavedTensorMeter() as m2:
        (w.detach() * 2).sum()  # nothing requires grad: nothing saved
    assert m2.bytes == 0


def test_jfb_memory_is_constant_and_unrolled_memory_grows_linearly():
    preset = get_preset("fast", depth=3, width=4)
    r = bench_memory(preset, iterations=(2, 4, 8), size=16, batch=1)
    jfb = [row["saved_bytes"] for row in r["rows"] if row["mode"] == "jfb"]
    unrolled = [row["saved_bytes"] for row in r["rows"] if row["mode"] == "unrolled"]
    assert len(set(jfb)) == 1
    # affine in K: the same bytes for every extra recorded step
    per_step = (unrolled[1] - unrolled[0]) / 2
    assert per_step > 0 and unrolled[2] - unrolled[1] == 4 * per_step
    assert unrolled[0] > jfb[0]


def test_bench_solvers_reports_both_solvers_at_the_same_tolerance():
    preset = get_preset("fast", tol=1e-4)
    r = bench_solvers(preset, size=16, batch=2, repeats=1)
    fp, aa = r["solvers"]["fixed_point"], r["solvers"]["anderson"]
    assert fp["converged_fraction"] == aa["converged_fraction"] == 1.0
    assert max(fp["final_residual_max"], aa["final_residual_max"]) <= 1e-4
    assert aa["nfe"] < fp["nfe"]
    assert len(aa["residual_history_mean"]) == aa["nfe"]
