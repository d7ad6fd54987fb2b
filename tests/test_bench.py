"""Benchmarks record measurements; these tests check what they measure, never how fast."""

import torch

import json

import pytest

from jfb_core.bench import SavedTensorMeter, bench_backward, bench_memory, bench_solvers
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
    ift = [row["saved_bytes"] for row in r["rows"] if row["mode"] == "ift"]
    assert len(set(jfb)) == 1 and len(set(ift)) == 1
    # IFT's adjoint products reuse the one recorded T of its output: it saves what JFB saves;
    # unrolled records K applications
    assert jfb[0] == ift[0] < unrolled[0]
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


def test_bench_backward_runs_every_method_with_the_same_forward_work():
    preset = get_preset("fast", depth=3, width=4)
    r = bench_backward(preset, sizes=(8, 16), batch=2, repeats=2, warmup=1, forward_iters=6,
                       methods=("jfb", "ift_cg", "ift_fp", "ift_aa", "neumann"), backward_tol=1e-6, neumann_k=3)
    assert [row["size"] for row in r["rows"]] == [8, 16]
    for row in r["rows"]:
        ms = row["methods"]
        assert {m["forward_nfe"] for m in ms.values()} == {7}  # tolerance disabled: T(x0) and then exactly 6 iterations
        assert ms["jfb"]["backward_iterations_median"] == 0
        assert ms["neumann"]["backward_iterations_median"] == 3
        assert ms["ift_cg"]["backward_iterations_median"] > 0 and ms["ift_fp"]["backward_iterations_median"] > 1
        assert ms["ift_aa"]["backward_iterations_median"] > 1
        for m in ms.values():
            assert len(m["samples"]["step"]) == 2
            parts = m["forward_median"] + m["backward_median"] + m["optimizer_median"]
            assert m["step_median"] == pytest.approx(parts, rel=1e-9)  # median of 2 = mean: the parts add up
            assert m["saved_bytes"] > 0
        # one recorded T serves every backward: each saves exactly what JFB saves
        assert len({m["saved_bytes"] for m in ms.values()}) == 1
        assert row["step_ratio_to_jfb"]["jfb"] == 1.0
    json.dumps(r)  # JSON-ready


def test_bench_backward_rejects_unknown_methods():
    with pytest.raises(ValueError, match="unknown method"):
        bench_backward(get_preset("fast"), sizes=(8,), methods=("jfb", "magic"))


def test_benchmarks_time_the_network_the_preset_describes():
    """The benchmarks build their DE-GRAD with the one factory: arch, skip, rho and data step are honoured."""
    preset = get_preset("fast", depth=2, width=4, arch="cpl", skip=True, rho=0.05, data_step="proximal",
                        lipschitz=0.99)
    r = bench_backward(preset, sizes=(8,), batch=1, repeats=1, warmup=0, forward_iters=2, methods=("jfb", "ift_fp"))
    m = bench_memory(preset, iterations=(2,), size=8, batch=1)
    for net in (r["network"], m["network"]):
        assert net["arch"] == "cpl" and net["skip"] and net["data_step"] == "proximal"
        assert net["rho"] == pytest.approx(0.05) and net["lipschitz"] == 0.99 and net["depth"] == 2
    assert bench_memory(get_preset("fast", depth=2, width=4), iterations=(2,), size=8, batch=1)["network"]["arch"] == "dncnn"


def test_the_comparison_figure_draws_every_method_of_every_result_from_its_numbers():
    from jfb_core.bench import plot_backward_comparison
    preset = get_preset("fast", depth=2, width=4)
    a = bench_backward(preset, sizes=(8, 12), batch=1, repeats=1, warmup=0, forward_iters=2, methods=("jfb", "ift_fp"))
    b = bench_backward(preset, sizes=(8,), batch=1, repeats=1, warmup=0, forward_iters=2, methods=("jfb", "ift_cg"))
    fig = plot_backward_comparison({"a": a, "b": b})
    steps, ratios, mem = fig.axes
    lines = {ln.get_label(): ln for ln in steps.get_lines()}
    assert set(lines) == {"jfb, a", "ift_fp, a", "jfb, b", "ift_cg, b"}
    assert list(lines["ift_fp, a"].get_ydata()) == [r["methods"]["ift_fp"]["step_median"] for r in a["rows"]]
    assert [ln.get_label() for ln in ratios.get_lines() if not ln.get_label().startswith("_")] == \
        ["ift_fp / jfb, a", "ift_cg / jfb, b"]
    assert len([ln for ln in mem.get_lines()]) == 4
    with pytest.raises(ValueError):
        plot_backward_comparison({})


def test_bench_step_times_a_runs_own_step_in_parts(tmp_path, capsys):
    """A run's own step, timed in parts at two thread counts: every part is timed, the profile
    saw convolutions, and the normalisation time lies within the solve and backward."""
    from jfb_core.cli import main
    from jfb_core.train import TrainOptions, train

    preset = get_preset("fast", image_size=16, depth=2, width=4, n_train=8, n_test=4, batch_size=2,
                        pretrain_epochs=0, epochs=1, arch="cpl", max_iter=10)
    run = tmp_path / "run"
    train(preset, TrainOptions(n_eval=2), run)
    out = tmp_path / "step.json"
    assert main(["bench", "step", "--run", str(run / "checkpoint.pt"), "--crop", "8", "--certify",
                 "--thread-counts", "1,2", "--repeats", "2", "--warmup", "0", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["image_size"] == 16 and result["crop"] == 8 and result["certify"] and result["batch"] == 2
    assert [r["threads"] for r in result["rows"]] == [1, 2]
    for r in result["rows"]:
        assert set(r["parts_seconds"]) == {"data", "forward_solve", "backward", "optimiser", "checkpoint"}
        assert all(v >= 0 for v in r["parts_seconds"].values()) and r["parts_seconds"]["forward_solve"] > 0
        assert 0 < r["convolution_seconds"] <= r["profiled_step_wall_seconds"]
        assert r["evaluations_of_T"] >= 2 and len(r["steps"]) == 2
        assert 0 < r["norm_estimation_seconds"] < r["parts_seconds"]["forward_solve"] + r["parts_seconds"]["backward"]
    assert result["network"]["arch"] == "cpl" and result["provenance"]["config"]["image_size"] == 16
