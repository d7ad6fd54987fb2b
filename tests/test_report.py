"""The report helpers merge only evaluations that saw the same measurements, and compute gains per image."""
import copy

import numpy as np
import pytest

from jfb_core.report import (MismatchedEvaluations, check_same_measurements, compare, curve_points, rows_markdown,
                             setting_label, smooth, time_to_quality, training_label)


def evaluation(ids, methods, noise=0.01, blur="9x9_var5", size=64, d_psnr=22.0):
    return {"test": {"name": "celeba-paper-test", "n": len(ids), "size": size, "ids": list(ids)},
            "blur": {"name": blur, "padding": "zeros"}, "noise_std": noise, "data_range": 1.0,
            "measurement": {"psnr_mean": d_psnr},
            "methods": {k: {"psnr_mean": float(np.mean(v)), "per_image": {"psnr": list(v), "ssim": [0.5] * len(v)}}
                        for k, v in methods.items()},
            "provenance": {"environment": {"device": "cpu (1 thread)"}}}


BASE = evaluation([1, 2, 3, 4], {"tv": [20.0, 21.0, 22.0, 23.0], "direct": [10.0] * 4})


def test_rows_are_scored_against_the_reference_on_the_images_they_share():
    net = evaluation([1, 2], {"net": [21.0, 20.5]})  # a prefix: the first two images only
    full = evaluation([1, 2, 3, 4], {"net2": [19.0, 22.0, 23.0, 24.0]})
    rows = compare(BASE, {"prefix": (net, "net"), "full": (full, "net2"), "TV": (BASE, "tv")})
    prefix, whole, tv = rows
    assert prefix.n == 2 and prefix.reference_psnr == 20.5
    assert list(prefix.gain) == [1.0, -0.5] and prefix.gain_mean == 0.25 and prefix.better_fraction == 0.5
    assert whole.n == 4 and list(whole.gain) == [-1.0, 1.0, 1.0, 1.0] and whole.better_fraction == 0.75
    assert tv.gain_mean == 0 and tv.better_fraction == 0
    table = rows_markdown(rows, training={"prefix": "10 steps"})
    assert "| prefix | 2 | " in table and "| +0.25 | 50% | 10 steps |" in table and len(table.splitlines()) == 5


@pytest.mark.parametrize("change, words", [
    (lambda e: e.update(noise_std=0.02), "noise_std"),
    (lambda e: e["blur"].update(name="5x5_s1"), "blur name"),
    (lambda e: e["blur"].update(padding="circular"), "blur padding"),
    (lambda e: e["test"].update(size=128), "image size"),
    (lambda e: e["test"].update(ids=[2, 1]), "not the first"),
    (lambda e: e["test"].update(ids=[1, 2, 3, 4, 5]), "not the first"),
    (lambda e: e["measurement"].update(psnr_mean=22.5), "different measurements"),
])
def test_evaluations_that_saw_other_measurements_are_refused(change, words):
    other = copy.deepcopy(evaluation([1, 2, 3, 4], {"net": [1.0] * 4}))
    change(other)
    if len(other["test"]["ids"]) == 5:
        other["methods"]["net"]["per_image"]["psnr"].append(1.0)
    with pytest.raises(MismatchedEvaluations, match=words):
        check_same_measurements(BASE, other)
    with pytest.raises(MismatchedEvaluations):
        compare(BASE, {"net": (other, "net")})


def test_an_unknown_method_is_a_clear_error():
    with pytest.raises(ValueError, match="not in this evaluation"):
        compare(BASE, {"x": (BASE, "pnp")})


def test_time_to_quality_on_curves_with_a_known_answer():
    slow = [{"train_seconds": 100 * i, "steps": i, "test_psnr": p} for i, p in enumerate([20, 24, 25, 26], 1)]
    fast = [{"train_seconds": 10 * i, "steps": 10 * i, "test_psnr": p}
            for i, p in enumerate([20, 22, 24, 25, 26, 26], 1)]
    # slow: smoothed final = mean(24, 25, 26) = 25; fast smoothed: 20, 21, 22, 23.67, 25, 25.67
    r = time_to_quality(fast, slow, margin=0.5)
    assert r.slow_seconds == 400 and r.slow_final == pytest.approx(25.0)
    assert r.fast_hit == (50.0, 50) and r.fraction == pytest.approx(50 / 400)
    assert r.fast_at_slow_end == pytest.approx(77 / 3)
    never = time_to_quality([{"train_seconds": 1, "steps": 1, "test_psnr": 10.0}], slow)
    assert never.fast_hit is None and never.fraction is None
    assert [a for _, _, a in smooth(fast, k=1)] == [20, 22, 24, 25, 26, 26]
    with pytest.raises(ValueError):
        smooth(fast, k=0)


def test_labels_and_curve_points_come_from_the_artefacts():
    assert setting_label(BASE) == ("celeba-paper-test, 64x64 px, blur 9x9_var5 (zeros padding), noise 0.01, "
                                   "data range 1, cpu (1 thread)")
    log = {"config": {"init_from": "a.pt"}, "provenance": {"environment": {"device": "cpu (1 thread)"}},
           "log": [{"steps": 120, "train_seconds": 600.0, "test_psnr": 25.0}],
           "curve": [{"steps": 50, "train_seconds": 200.0, "test_psnr": 24.0},
                     {"steps": 100, "train_seconds": 450.0, "test_psnr": 24.5}]}
    assert training_label(log) == "120 steps, 10 min, cpu (1 thread), warm-started"
    assert [p["steps"] for p in curve_points(log)] == [50, 100, 120]
    log["curve"].append({"steps": 120, "train_seconds": 600.0, "test_psnr": 25.0})
    assert [p["steps"] for p in curve_points(log)] == [50, 100, 120]


def test_truncate_compares_a_longer_row_on_the_reference_images_only():
    short_ref = evaluation([1, 2], {"tv": [20.0, 21.0]})
    longer = evaluation([1, 2, 3, 4], {"net": [21.0, 23.0, 0.0, 0.0]})
    with pytest.raises(MismatchedEvaluations, match="not the first"):
        compare(short_ref, {"net": (longer, "net")})
    (row,) = compare(short_ref, {"net": (longer, "net")}, truncate=True)
    assert row.n == 2 and list(row.gain) == [1.0, 2.0] and row.psnr == 22.0
    shuffled = evaluation([2, 1, 3, 4], {"net": [0.0] * 4})
    with pytest.raises(MismatchedEvaluations, match="are not the reference's"):
        compare(short_ref, {"net": (shuffled, "net")}, truncate=True)


def test_markdown_table_has_one_line_per_row_and_escapes_bars():
    from jfb_core.report import markdown_table

    text = markdown_table(["a", "b"], [[1, "x|y"], [2.5, ""]])
    assert text.splitlines() == ["| a | b |", "|---|---|", "| 1 | x\\|y |", "| 2.5 |  |"]
    with pytest.raises(ValueError, match="2 cells"):
        markdown_table(["a", "b"], [[1]])
