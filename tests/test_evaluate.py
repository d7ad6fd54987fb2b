"""Learned methods inside the evaluation: their reconstructors and the records they leave."""

import pytest
import torch

from jfb_core.config import get_preset
from jfb_core.errors import UserError
from jfb_core.evaluate import PnPTally, SolverTally, degrad_method, pnp_method
from jfb_core.models import SolveStats, build_model


def test_solver_tally_averages_over_images_not_calls():
    tally = SolverTally()
    assert tally.summary() == {"images": 0, "converged": 0.0, "iterations": 0, "residual_max": 0.0}
    tally.add(SolveStats(iterations=[3, 5], residual=[1e-4, 2e-3], converged_fraction=0.5))
    tally.add(SolveStats(iterations=[10], residual=[5e-4], converged_fraction=1.0))
    s = tally.summary()
    assert s["images"] == 3 and s["iterations_mean"] == pytest.approx(6.0)
    assert s["converged_fraction"] == pytest.approx(2 / 3) and s["residual_max"] == 2e-3


def test_pnp_tally_splits_validation_calls_from_test_calls():
    # first call of each setting: its validation run; later calls: the chosen one on test batches
    tally = PnPTally(max_iter=50, tol=1e-4, calls=[(0.5, 16, 16, 20.0), (1.0, 16, 8, 50.0),
                                                  (1.0, 4, 4, 30.0), (1.0, 2, 1, 45.0)])
    s = tally.summary()
    assert [t["setting"] for t in s["tuning"]] == [0.5, 1.0]
    assert s["tuning"][1]["converged_fraction"] == 0.5
    assert s["images"] == 6 and s["converged_fraction"] == pytest.approx(5 / 6)
    assert s["iterations_mean"] == pytest.approx((4 * 30 + 2 * 45) / 6)


def test_degrad_method_reconstructs_in_its_dtype_and_tallies_each_solve():
    torch.manual_seed(0)
    model = build_model(get_preset("fast"), tol=1e-4, max_iter=30).double().eval()
    method = degrad_method(model, torch.float64, {"checkpoint": "x.pt"})
    d = torch.rand(3, 3, 12, 12)
    with torch.no_grad():
        out = method.rec(d, None)
        expected = model(d.double())
    assert out.dtype == torch.float32 and method.grid is None
    torch.testing.assert_close(out, expected.float())
    method.rec(d[:1], None)
    rec = method.record()
    assert rec["checkpoint"] == "x.pt" and rec["dtype"] == "float64" and rec["solve_tol"] == 1e-4
    assert rec["solver"]["images"] == 4


def test_pnp_method_checks_its_settings_and_builds_its_grid():
    A = get_preset("fast").blur_operator()
    f = torch.nn.Identity()
    m = pnp_method(f, A, torch.float32, (0.5, 1.0), (0.5, 1.0), 10, 1e-3, {})
    assert m.grid == ((0.5, 0.5), (0.5, 1.0), (1.0, 0.5), (1.0, 1.0)) and m.solver_key == "pnp_solver"
    assert pnp_method(f, A, torch.float32, (0.5, 1.0), (1.0,), 10, 1e-3, {}).grid == (0.5, 1.0)
    for steps, strengths, max_iter, tol in (((2.0,), (1.0,), 10, 1e-3), ((1.0,), (0.0,), 10, 1e-3),
                                            ((1.0,), (1.0,), 0, 1e-3), ((1.0,), (1.0,), 10, 0.0)):
        with pytest.raises(UserError):
            pnp_method(f, A, torch.float32, steps, strengths, max_iter, tol, {})
