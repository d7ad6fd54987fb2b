"""The exact (unsmoothed) TV baseline: its proximal map and FISTA on the deblurring problem."""

import pytest
import torch

from jfb_core.baselines import TV_BOX, tv_exact_gap, tv_fista, tv_gradient_descent, tv_objective_exact
from jfb_core.errors import UserError
from jfb_core.evaluate import ClassicalSettings, make_reconstructor
from jfb_core.operators import GaussianBlur
from jfb_core.regularizers import tv_exact, tv_prox


def _two_pixels(a: float, b: float) -> torch.Tensor:
    return torch.tensor([a, b], dtype=torch.float64).view(1, 1, 1, 2)


@pytest.mark.parametrize("a, b, tau, expected", [
    (0.0, 1.0, 0.1, (0.1, 0.9)),     # |b - a| > 2 tau: each end moves tau towards the other
    (0.2, -0.4, 0.05, (0.15, -0.35)),
    (0.0, 1.0, 0.7, (0.5, 0.5)),     # |b - a| <= 2 tau: they meet at the mean
])
def test_prox_of_a_two_pixel_image_has_its_closed_form(a, b, tau, expected):
    # TV of a 1x2 image is |x1 - x0|; its proximal map is known in closed form
    out = tv_prox(_two_pixels(a, b), tau, iterations=2000, gap=True)
    assert torch.allclose(out.x.flatten(), torch.tensor(expected, dtype=torch.float64), atol=1e-6)
    assert float(out.gap) < 1e-9


def test_prox_duality_gap_certifies_optimality_on_random_images():
    g = torch.Generator().manual_seed(0)
    v = torch.rand(3, 2, 12, 12, generator=g, dtype=torch.float64)
    tau = 0.05
    out = tv_prox(v, tau, iterations=3000, gap=True)
    assert bool((out.gap >= -1e-12).all()) and float(out.gap.max()) < 1e-8
    primal = lambda x: 0.5 * ((x - v) ** 2).flatten(1).sum(1) + tau * tv_exact(x)  # noqa: E731
    best = primal(out.x)
    for _ in range(20):  # no nearby point does better
        z = out.x + 1e-3 * torch.randn(v.shape, generator=g, dtype=torch.float64)
        assert bool((primal(z) >= best - 1e-12).all())
    # a few iterations leave a positive gap that more iterations close
    assert float(tv_prox(v, tau, iterations=5, gap=True).gap.min()) > 10 * float(out.gap.max())


def test_prox_keeps_a_constant_image_and_rejects_bad_input():
    v = torch.full((1, 3, 8, 8), 0.3, dtype=torch.float64)
    assert torch.allclose(tv_prox(v, 0.2, iterations=10).x, v, atol=1e-15)
    assert torch.equal(tv_prox(v, 0.0).x, v)
    with pytest.raises(UserError):
        tv_prox(v, -1.0)
    with pytest.raises(UserError):
        tv_prox(v, 0.1, iterations=0)


def _problem():
    g = torch.Generator().manual_seed(1)
    A = GaussianBlur(5, 1.0, channels=1, padding="zeros")
    x = torch.rand(2, 1, 16, 16, generator=g, dtype=torch.float64)
    d = A(x) + 0.01 * torch.randn(x.shape, generator=g, dtype=torch.float64)
    return A, x, d


def test_fista_reaches_the_fixed_point_of_the_proximal_gradient_map():
    A, _, d = _problem()
    lam = 0.02
    r = tv_fista(A, d, lam, max_iter=3000, tol=1e-12, inner_iter=50)
    L = A.eigenvalue_bounds(16, 16).L
    again = tv_prox(r.x - A.adjoint(A(r.x) - d) / L, lam / L, iterations=5000).x
    assert float((again - r.x).norm() / r.x.norm()) < 1e-6
    assert bool((r.objective[-1] < r.objective[0]).all())


def test_fista_beats_smoothed_tv_on_the_exact_objective():
    # the smoothed solution minimises another objective; on the exact one FISTA must do better
    A, _, d = _problem()
    lam = 0.02
    exact = tv_fista(A, d, lam, max_iter=1000, tol=1e-10, inner_iter=20)
    smooth = tv_gradient_descent(A, d, lam, delta=1e-2, max_iter=1000, tol=1e-10, momentum=True)
    assert bool((tv_objective_exact(A, d, exact.x, lam) < tv_objective_exact(A, d, smooth.x, lam)).all())


def test_tv_tuning_grid_pairs_weights_with_smoothing_parameters():
    s = ClassicalSettings(tv_grid=(1e-3, 2e-3), tv_delta_grid=(0.01, 0.05))
    assert s.grids()["tv"] == ((1e-3, 0.01), (2e-3, 0.01), (1e-3, 0.05), (2e-3, 0.05))
    assert ClassicalSettings(tv_grid=(1e-3,)).grids()["tv"] == (1e-3,)
    A, _, d = _problem()
    rec = make_reconstructor("tv", A, ClassicalSettings())
    # a pair's delta is used: a larger delta gives a different (smoother) reconstruction
    assert torch.equal(rec(d, (1e-2, 0.01)), rec(d, 1e-2))
    assert not torch.allclose(rec(d, (1e-2, 0.2)), rec(d, 1e-2))


def test_box_constrained_prox_is_optimal_inside_its_box():
    g = torch.Generator().manual_seed(2)
    v = torch.rand(2, 1, 10, 10, generator=g, dtype=torch.float64) * 1.6 - 0.3  # crosses the box
    tau, box = 0.05, (0.0, 1.0)
    x = tv_prox(v, tau, iterations=4000, box=box).x
    assert float(x.min()) >= 0.0 and float(x.max()) <= 1.0
    primal = lambda z: 0.5 * ((z - v) ** 2).flatten(1).sum(1) + tau * tv_exact(z)  # noqa: E731
    best = primal(x)
    for _ in range(20):  # no feasible point nearby does better
        z = (x + 1e-3 * torch.randn(v.shape, generator=g, dtype=torch.float64)).clamp(*box)
        assert bool((primal(z) >= best - 1e-10).all())
    # clipping the unconstrained answer is feasible but worse: the box changes the problem
    clipped = tv_prox(v, tau, iterations=4000).x.clamp(*box)
    assert bool((primal(clipped) > best + 1e-6).all())
    # a box the answer never reaches changes nothing
    wide = tv_prox(v, tau, iterations=4000, box=(-10.0, 10.0)).x
    assert torch.allclose(wide, tv_prox(v, tau, iterations=4000).x, atol=1e-12)
    with pytest.raises(UserError, match="box"):
        tv_prox(v, tau, box=box, gap=True)
    with pytest.raises(UserError, match="box"):
        tv_prox(v, tau, box=(1.0, 0.0))


def test_deblurring_duality_gap_bounds_the_distance_to_the_minimum():
    # weak duality: for ANY feasible x and ANY field p in the unit discs, the gap is at
    # least F(x) - min F; the minimum is approximated from above by a long FISTA run
    A, _, d = _problem()
    lam = 0.02
    ref = tv_fista(A, d, lam, max_iter=4000, tol=0.0, inner_iter=50)
    f_ref = tv_objective_exact(A, d, ref.x, lam)
    g = torch.Generator().manual_seed(3)
    for scale in (1e-3, 1e-2, 0.3):
        x = (ref.x + scale * torch.randn(ref.x.shape, generator=g, dtype=torch.float64)).clamp(*TV_BOX)
        p = (torch.randn(x.shape, generator=g, dtype=torch.float64), torch.randn(x.shape, generator=g, dtype=torch.float64))
        norm = torch.sqrt(p[0] ** 2 + p[1] ** 2).clamp_min(1.0)
        p = (p[0] / norm, p[1] / norm)
        gap = tv_exact_gap(A, d, x, lam, p)
        assert bool((gap >= tv_objective_exact(A, d, x, lam) - f_ref - 1e-12).all())
    # at the solution the gap closes, and it shrinks as FISTA runs longer
    assert float((ref.gap / f_ref).max()) < 1e-6
    short = tv_fista(A, d, lam, max_iter=20, tol=0.0)
    assert float(short.gap.min()) > 10 * float(ref.gap.max())
    # a point outside the box has no finite certificate
    outside = ref.x.clone()
    outside[0, 0, 0, 0] = TV_BOX[1] + 0.1
    assert torch.isinf(tv_exact_gap(A, d, outside, lam, p)[0])


def test_fista_stops_each_image_at_the_requested_duality_gap():
    A, _, d = _problem()
    r = tv_fista(A, d, 0.02, max_iter=5000, gap_tol=1e-5, check_every=5)
    assert bool(r.converged.all())
    assert bool((r.gap <= 1e-5 * r.objective[-1]).all())
    assert int(r.iterations.max()) < 5000
    loose = tv_fista(A, d, 0.02, max_iter=5000, gap_tol=1e-2, check_every=5)
    assert bool((loose.iterations <= r.iterations).all()) and bool((loose.iterations < r.iterations).any())
    with pytest.raises(UserError, match="gap_tol"):
        tv_fista(A, d, 0.02, gap_tol=0.0)


def test_evaluation_records_the_duality_gap_that_tv_exact_reached_on_the_test_images():
    from jfb_core.evaluate import FistaTally, Split, evaluate_classical
    g = torch.Generator().manual_seed(4)
    x = torch.rand(5, 3, 12, 12, generator=g)
    test = Split("toy", lambda: iter([([10, 11, 12], x[:3]), ([13], x[3:4])]), 12, "toy images")
    settings = ClassicalSettings(tv_exact_grid=(1e-3, 1e-2), tv_exact_gap_tol=1e-4)
    r = evaluate_classical(["tv_exact"], "5x5_s1", "zeros", 0.01, ([0], x[4:]), test, settings=settings)
    solver = r["methods"]["tv_exact"]["solver"]
    assert solver["images"] == 4  # the test images only: tuning ran before, on the validation image
    assert solver["gap_tol"] == 1e-4 and 0 < solver["max_relative_gap"] <= 1e-4
    assert solver["images_at_cap"] == 0 and solver["mean_iterations"] >= 1
    # an image stopped by the cap is counted as such; a weight's first call is its tuning run
    tally = FistaTally(GaussianBlur(5, 1.0, channels=3), ClassicalSettings(tv_exact_max_iter=3, tv_exact_gap_tol=1e-9))
    tally(x[:2], 1e-3)
    assert tally.summary()["images"] == 0
    tally(x[:2], 1e-3)
    assert tally.summary()["images_at_cap"] == 2 and tally.summary()["mean_iterations"] == 3
