"""Metrics on hand-made cases with known answers."""

import numpy as np
import pytest

from perfmoco import metrics


def _disc(shape, centre, radius):
    yy, xx = np.mgrid[0 : shape[0], 0 : shape[1]]
    return (yy - centre[0]) ** 2 + (xx - centre[1]) ** 2 <= radius**2


def _ring(shape, centre, r_in=6, r_out=10):
    return _disc(shape, centre, r_out) & ~_disc(shape, centre, r_in)


def _const_field(t, shape, dy, dx):
    d = np.zeros((t, 2, *shape), np.float32)
    d[:, 0] = np.asarray(dy, np.float32).reshape(-1, 1, 1)
    d[:, 1] = np.asarray(dx, np.float32).reshape(-1, 1, 1)
    return d


# --------------------------------------------------------------- TIC smoothness
def test_tic_smoothness_linear_curves_are_zero():
    t = np.arange(20, dtype=np.float32)
    ramp = np.broadcast_to(t[:, None, None], (20, 32, 32)) * np.linspace(1, 3, 32)[None, None]
    assert metrics.tic_smoothness(ramp, centre=(16, 16), radius_px=10) == pytest.approx(0, abs=1e-9)


def test_tic_smoothness_known_value_for_alternating_curve():
    # curve 0,1,0,1,... normalised: 2nd difference = +-2 alternating, SD = 2
    curve = (np.arange(12) % 2).astype(float)
    im = np.broadcast_to(curve[:, None, None], (12, 16, 16))
    assert metrics.tic_smoothness(im, centre=(8, 8), radius_px=4) == pytest.approx(2.0)


def test_tic_smoothness_normalisation_roi_vs_pixel():
    # two halves with the same alternating shape, amplitudes 1 and 0.5
    curve = (np.arange(12) % 2).astype(float)
    im = np.broadcast_to(curve[:, None, None], (12, 16, 16)).copy()
    im[:, :, 8:] *= 0.5
    # per pixel: every curve 0..1 -> SD 2; jointly: half the pixels swing 0.5 -> SD 1
    assert metrics.tic_smoothness(im, centre=(8, 8), radius_px=20, normalise="pixel") == (
        pytest.approx(2.0)
    )
    assert metrics.tic_smoothness(im, centre=(8, 8), radius_px=20) == pytest.approx(1.5)
    with pytest.raises(ValueError, match="normalise must be 'roi' or 'pixel', got 'x'"):
        metrics.tic_smoothness(im, centre=(8, 8), radius_px=2, normalise="x")


def test_tic_smoothness_motion_is_rougher():
    rng = np.random.default_rng(0)
    t = 30
    base = np.zeros((t, 48, 48))
    gd = np.exp(-((np.arange(t) - 10) ** 2) / 20)
    shifts = rng.integers(-3, 4, size=t)
    still = np.stack([gd[i] * _disc((48, 48), (24, 24), 8) + 0.2 for i in range(t)])
    moving = np.stack([gd[i] * _disc((48, 48), (24 + shifts[i], 24), 8) + 0.2 for i in range(t)])
    s_still = metrics.tic_smoothness(still + base, centre=(24, 24), radius_px=14)
    s_moving = metrics.tic_smoothness(moving, centre=(24, 24), radius_px=14)
    assert s_moving > s_still


def test_tic_smoothness_flat_roi_warns():
    with pytest.warns(UserWarning, match="non-flat"):
        v = metrics.tic_smoothness(np.ones((5, 8, 8)), centre=(4, 4), radius_px=2)
    assert np.isnan(v)


def test_tic_smoothness_rejects_bad_input():
    with pytest.raises(ValueError, match="radius_px must be positive, got 0"):
        metrics.tic_smoothness(np.ones((5, 8, 8)), centre=(4, 4), radius_px=0)
    with pytest.raises(ValueError, match="3 dimensions"):
        metrics.tic_smoothness(np.ones((8, 8)), centre=(4, 4), radius_px=2)


def test_roi_from_mask():
    ring = _ring((40, 40), (20, 18), 5, 9)
    (cy, cx), r = metrics.roi_from_mask(ring)
    assert (cy, cx) == pytest.approx((20, 18), abs=1e-6)
    assert 18.5 <= r <= 19.0 + 1e-9


# ---------------------------------------------------------------------- Dice
def test_dice_basics():
    a = np.zeros((4, 4), bool)
    a[:2] = True
    b = np.zeros((4, 4), bool)
    b[1:3] = True
    assert metrics.dice(a, a) == 1.0
    assert metrics.dice(a, b) == pytest.approx(0.5)
    assert metrics.dice(a, ~a) == 0.0


def test_dice_around_peak_identical_masks_is_one():
    m = np.broadcast_to(_ring((32, 32), (16, 16)), (10, 32, 32))
    assert metrics.dice_around_peak(m, peak_index=4) == 1.0
    assert metrics.dice_around_peak(m, peak_index=0, mode="centre") == 1.0


def test_dice_around_peak_known_value():
    # frames 0..4 with two half masks alternating: pairwise Dice over 5 frames
    a = np.zeros((4, 4), bool)
    a[:2] = True
    b = np.zeros((4, 4), bool)
    b[1:3] = True  # dice(a, b) = 0.5
    m = np.stack([a, b, a, b, a])
    # pairs: 3 (a,a) + 1 (b,b) identical = 4 x 1.0; 6 mixed pairs x 0.5
    assert metrics.dice_around_peak(m, peak_index=2) == pytest.approx((4 + 3) / 10)
    # vs centre (frame 2 = a): frames 0, 4 -> 1; 1, 3 -> 0.5
    assert metrics.dice_around_peak(m, peak_index=2, mode="centre") == pytest.approx(0.75)


def test_dice_around_peak_window_stays_inside():
    m = np.zeros((6, 4, 4), bool)
    m[:, :2] = True
    m[5] = ~m[5]  # only the last frame differs
    # peak at 0: window 0..4 never sees frame 5
    assert metrics.dice_around_peak(m, peak_index=0) == 1.0
    assert metrics.dice_around_peak(m, peak_index=5) < 1.0
    with pytest.raises(ValueError, match="peak_index must be in 0..5, got 6"):
        metrics.dice_around_peak(m, peak_index=6)
    with pytest.raises(ValueError, match="mode must be"):
        metrics.dice_around_peak(m, peak_index=2, mode="bogus")


# -------------------------------------------------------------------- PD SD
def test_pd_sd_uniform_in_mask_is_zero_and_misaligned_is_not():
    shape = (40, 40)
    ring = _ring(shape, (20, 20))
    pd = np.where(ring, 1.0, 0.2)[None].repeat(3, 0)
    assert metrics.pd_sd(pd, ring) == pytest.approx(0.0, abs=1e-12)
    shifted = np.where(_ring(shape, (23, 20)), 1.0, 0.2)[None]
    assert metrics.pd_sd(shifted, ring) > 0.1
    with pytest.warns(UserWarning, match="no PD frames"):
        assert np.isnan(metrics.pd_sd(np.zeros((0, 40, 40)), ring))


def test_pd_sd_known_value_without_normalising():
    mask = np.ones((2, 2), bool)
    pd = np.array([[0.0, 2.0], [0.0, 2.0]])  # SD = 1
    assert metrics.pd_sd(pd, mask, normalise=False) == pytest.approx(1.0)


# -------------------------------------------------------------------- MBF
def test_segment_mbf_sd_and_median():
    aha = np.zeros((4, 6), int)
    aha[:, :3] = 1
    aha[:, 3:] = 2
    mbf = np.where(aha == 1, 3.0, 0.0)
    mbf[:, 3:] = [[1.0, 3.0, 1.0]] * 4  # segment 2: SD of {1,3,1} x4 = sqrt(8/9)
    sd = metrics.segment_mbf_sd(mbf, aha)
    assert sd.shape == (16,)
    assert sd[0] == pytest.approx(0.0)
    assert sd[1] == pytest.approx(np.sqrt(8 / 9))
    assert np.isnan(sd[2:]).all()
    assert metrics.median_mbf(mbf, aha) == pytest.approx(3.0)
    mbf[0, 0] = np.nan
    assert np.isfinite(metrics.segment_mbf_sd(mbf, aha)[0])


def test_mbf_error_known_values():
    true = np.full((5, 5), 3.0)
    est = true + 0.5
    est[0, 0] = np.nan
    err = metrics.mbf_error(est, true, np.ones((5, 5), bool))
    assert err.mean_abs == pytest.approx(0.5)
    assert err.bias == pytest.approx(0.5)
    assert err.rmse == pytest.approx(0.5)
    assert err.n_pixels == 24


# ---------------------------------------------------- ground-truth metrics
def test_warp_series_known_shift():
    im = np.zeros((1, 20, 20))
    im[0, 10, 10] = 1.0
    d = _const_field(1, (20, 20), 2, -3)
    out = metrics.warp_series(im, d)
    # out(p) = im(p + (2, -3)) -> the bright pixel lands at (8, 13)
    assert out[0, 8, 13] == pytest.approx(1.0)


def test_dice_all_dynamics_and_centroid_residual_with_known_shift():
    t, shape = 6, (48, 48)
    shifts = np.array([0, 2, -3, 4, 1, -2])
    masks = np.stack([_ring(shape, (24 + s, 24)) for s in shifts])
    assert metrics.dice_all_dynamics(masks) < 0.9
    res = metrics.lv_centroid_residual_mm(masks, spacing_mm=(2.0, 1.0), reference_index=0)
    np.testing.assert_allclose(res, 2.0 * np.abs(shifts), atol=1e-9)
    # the exact correction: pull frame t from p + shift
    corr = _const_field(t, shape, shifts, 0)
    assert metrics.dice_all_dynamics(masks, corr) == pytest.approx(1.0)
    ref = masks[0]
    assert metrics.dice_all_dynamics(masks, corr, reference_mask=ref) == pytest.approx(1.0)
    res = metrics.lv_centroid_residual_mm(masks, corr, spacing_mm=(2.0, 1.0))
    np.testing.assert_allclose(res, 0.0, atol=1e-9)


def test_compose_and_displacement_error_known_residual():
    t, shape = 3, (24, 24)
    true = _const_field(t, shape, [1.0, 2.0, -1.5], [0.0, -1.0, 0.5])
    spacing = (2.0, 1.5)
    mask = np.ones(shape, bool)
    # no correction: error from the reference (frame 0) = |true_t - true_0| in mm
    none = np.zeros_like(true)
    expect = np.mean([np.hypot(1.0 * 2.0, 1.0 * 1.5), np.hypot(2.5 * 2.0, 0.5 * 1.5), 0.0])
    got = metrics.displacement_error_mm(none, true, mask, spacing_mm=spacing, reference_index=0)
    assert got == pytest.approx(expect)
    # exact inverse: composed field is zero everywhere
    r = metrics.compose_displacement(-true, true)
    np.testing.assert_allclose(r, 0.0, atol=1e-6)
    assert metrics.displacement_error_mm(-true, true, mask, spacing_mm=spacing) == pytest.approx(0)
    # aligning everything to frame 0 instead is also perfect (relative to the reference)
    to_ref = true[[0]] - true
    assert metrics.displacement_error_mm(
        to_ref, true, mask, spacing_mm=spacing, reference_index=0
    ) == pytest.approx(0, abs=1e-6)
    # a known leftover of 0.5 px in x in frame 2 only -> mean over 3 frames
    off = to_ref.copy()
    off[2, 1] += 0.5
    got = metrics.displacement_error_mm(off, true, mask, spacing_mm=spacing, reference_index=0)
    assert got == pytest.approx(0.5 * 1.5 / 3)


def test_compose_uses_the_moved_point_for_nonuniform_true_field():
    # true field varying along x: true_x(p) = 0.1 * x; estimated = constant shift 2 in x
    shape = (8, 32)
    true = np.zeros((1, 2, *shape))
    true[0, 1] = 0.1 * np.arange(32)[None, :]
    est = _const_field(1, shape, 0, 2)
    r = metrics.compose_displacement(est, true)
    # r_x(p) = 2 + 0.1 * (x + 2) away from the border
    np.testing.assert_allclose(r[0, 1, 4, 5:25], 2 + 0.1 * (np.arange(5, 25) + 2), atol=1e-9)


def test_shape_errors_name_the_value():
    with pytest.raises(ValueError, match=r"must have shape \(2, 2, 4, 4\), got \(2, 2, 4, 5\)"):
        metrics.warp_series(np.zeros((2, 4, 4)), np.zeros((2, 2, 4, 5)))
    with pytest.raises(ValueError, match="myo_mask is empty"):
        metrics.roi_from_mask(np.zeros((4, 4), bool))


def test_pd_residual_is_the_distance_from_the_reference_frame_at_a_point():
    """Uniform fields: a PD frame moved by (3, 4) px whose correction undoes (3, 1)
    lies (0, 3) px from a reference frame at rest, 6 mm at 2 mm pixels; exactly
    undone, 0."""
    shape = (2, 16, 16)
    true = np.zeros((2, *shape), np.float32)
    true[:, 0], true[:, 1] = 3.0, 4.0
    est = np.zeros_like(true)
    est[0, 0], est[0, 1] = -3.0, -1.0
    est[1, 0], est[1, 1] = -3.0, -4.0
    still = np.zeros(shape, np.float32)
    r = metrics.pd_residual_mm(est, true, still, still, (8, 8), spacing_mm=(2.0, 2.0))
    np.testing.assert_allclose(r, [6.0, 0.0], atol=1e-5)


# ------------------------------------- true masks rendered once in the corrected frame
def _rendered(mf, true):
    """Masks as the phantom renders them: the motion-free mask moved, > 0.5."""
    return metrics.warp_series(np.broadcast_to(mf, (true.shape[0], *mf.shape)), true) > 0.5


def test_true_masks_corrected_scores_a_perfect_correction_one_where_warped_rasters_do_not():
    """A thin ring (2 px) moved by fractional shifts and corrected exactly onto frame 0:
    rendered once through the composed field, every frame's mask is frame 0's (Dice 1,
    centroid 0); warping the binary per-frame masks instead resamples a raster twice
    and loses boundary pixels, so the same perfect correction scores clearly below 1."""
    shape = (48, 48)
    mf = _ring(shape, (24.0, 24.0), r_in=6, r_out=8)
    dy = np.array([0.3, 0.8, -1.4, 2.5, 0.55, -0.45])
    dx = np.array([0.4, -0.7, 1.25, 0.35, -2.5, 0.9])
    true = _const_field(6, shape, dy, dx)
    masks = _rendered(mf, true)
    np.testing.assert_array_equal(metrics.true_masks_corrected(mf, None, true) > 0.5, masks)
    perfect = _const_field(6, shape, dy[0] - dy, dx[0] - dx)
    soft = metrics.true_masks_corrected(mf, perfect, true)
    once = soft > 0.5
    assert metrics.dice_all_dynamics(once, reference_mask=once[0]) == pytest.approx(1.0)
    cen = metrics.lv_centroid_residual_mm(soft, spacing_mm=(2.0, 2.0), reference_index=0)
    np.testing.assert_allclose(cen, 0.0, atol=1e-6)
    raster = metrics.dice_all_dynamics(masks, perfect, reference_mask=masks[0])
    assert raster < 0.95  # 0.90 here
    cen_raster = metrics.lv_centroid_residual_mm(masks, perfect, spacing_mm=(2.0, 2.0),
                                                 reference_index=0)
    assert np.median(cen_raster) > 0.2  # 0.5 mm for a perfect correction


def test_true_masks_corrected_half_correction_leaves_half_the_shift():
    shape = (48, 48)
    mf = _ring(shape, (24.0, 24.0))
    dy, dx = np.array([0.0, 2.0, -3.0, 1.0]), np.array([0.0, 1.0, 2.0, -4.0])
    true = _const_field(4, shape, dy, dx)
    half = _const_field(4, shape, -0.5 * dy, -0.5 * dx)
    soft = metrics.true_masks_corrected(mf, half, true)
    cen = metrics.lv_centroid_residual_mm(soft, spacing_mm=(2.0, 1.0), reference_index=0)
    np.testing.assert_allclose(cen, np.hypot(2.0 * 0.5 * dy, 1.0 * 0.5 * dx), atol=1e-6)
    with pytest.raises(ValueError, match="do not fit a mask"):
        metrics.true_masks_corrected(mf[:40], half, true)
