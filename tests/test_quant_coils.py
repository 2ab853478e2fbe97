"""The surface-coil profile measured from aligned pre-contrast frames (quant.coils)."""

import numpy as np
import pytest

from perfmoco.quant.coils import PreContrastFrames
from perfmoco.quant.signal import coil_motion_factors

N = 64
YY, XX = np.mgrid[0:N, 0:N].astype(float)
#: a smooth coil profile, log-quadratic around the heart at (32, 32)
LOG_COIL = 0.025 * (YY - 32) - 0.012 * (XX - 32) + 2e-4 * (YY - 32) ** 2


def _coil_at(disp):
    """The profile at q + d(q), frame by frame."""
    from scipy import ndimage

    return np.stack([np.exp(ndimage.map_coordinates(LOG_COIL, [YY + d[0], XX + d[1]],
                                                    order=1, mode="nearest")) for d in disp])


def _study(n_frames=12, noise=0.0, seed=0):
    """A pool 30 % brighter in PD beside a darker tissue band (the PD frame's contrast
    fools its fit); dynamics whose tissue is the same in every pre-contrast frame, seen
    through the coil where breathing moved it (up to 6 px), with noise."""
    rng = np.random.default_rng(seed)
    pool = np.hypot(YY - 32, XX - 32) < 6
    band = (YY > 40) & (YY < 48)
    pd_tissue = np.where(pool, 1300.0, np.where(band, 600.0, 1000.0))
    pre_tissue = np.where(pool, 80.0, np.where(band, 120.0, 100.0))  # other contrast
    disp = np.zeros((n_frames, 2, N, N))
    disp[:, 0] = (3.0 + 3.0 * np.sin(np.linspace(0, 3 * np.pi, n_frames)))[:, None, None]
    disp[:, 1] = (1.0 * np.cos(np.linspace(0, 2 * np.pi, n_frames)))[:, None, None]
    frames = pre_tissue[None] * _coil_at(disp)
    frames = frames * (1 + noise * rng.standard_normal(frames.shape))
    pd = (pd_tissue * np.exp(LOG_COIL))[None]
    return pd, frames, disp, pool


def _factors(pd, frames, disp, pool, **kw):
    return coil_motion_factors(pd, disp, pixels=pool, centre=(32, 32), spacing_mm=(2.0, 2.0),
                               radius_mm=60.0, **kw)


def test_the_frames_measure_the_profile_the_pd_contrast_hides():
    """The PD frame's fit reads the tissues' PD contrast as coil (factors 1 % or more
    off); measured from the aligned pre-contrast frames they follow the true profile."""
    pd, frames, disp, pool = _study()
    truth = _coil_at(disp)[:, pool] / np.exp(LOG_COIL[pool])  # PD frame at rest
    pd_only = _factors(pd, frames, disp, pool)
    measured = _factors(pd, frames, disp, pool, baseline=PreContrastFrames(frames, disp, pool))
    assert np.abs(pd_only / truth - 1).max() > 0.01
    assert np.abs(measured / truth - 1).max() < 0.002


def test_pd_frames_acquired_elsewhere_in_the_breathing():
    """PD frames seen 4 px higher than the dynamics' rest (another breath): each frame's
    M0 follows the profile where the frame was acquired over where the PD frames were,
    ``P(q + d_t) - P(q + d_pd)``, with ``P`` in the scanner's coordinates (the frames'
    measurement's; the PD fit's too, its pixels placed where they were acquired).
    The shift's difference on a profile measured so, ``P(q + d_t - d_pd) - P(q)``,
    is right for a log-linear profile only: with this one's curvature it was off by
    up to 1.6 %.  A PD fit with no PD contrast gives the same factors."""
    _, frames, disp, pool = _study()
    d_pd = np.zeros((2, 2, N, N))
    d_pd[:, 0] = -4.0
    truth = _coil_at(disp)[:, pool] / _coil_at(d_pd)[:, pool].mean(axis=0)
    curvature = 2e-4 * 2 * 4.0 * (4.0 + disp[:, 0, 32, 32])  # the shift-difference's error
    assert curvature.max() > 0.015
    for pd_tissue, baseline in ((np.where(pool, 1300.0, 1000.0),
                                 PreContrastFrames(frames, disp, pool)),
                                (np.full((N, N), 1000.0), None)):
        pd = pd_tissue[None] * _coil_at(d_pd)  # corrected PD frames: seen at q + d_pd
        f = _factors(pd, frames, disp, pool, pd_displacement=d_pd, baseline=baseline)
        assert np.abs(f / truth - 1).max() < 0.002


def test_noisy_frames_stay_near_a_right_pd_fit():
    """Frames whose noise (50 % per pixel) drowns the coil's 2-3 % change, and a PD fit
    that is right (no PD contrast): the measurement's own spread (leave one frame out)
    keeps the posterior near the PD fit (1 % off on average; taken as measured, 9 %)."""
    errs = []
    for seed in range(6):
        _, frames, disp, pool = _study(n_frames=8, noise=0.5, seed=seed)
        pd = (1000.0 * np.exp(LOG_COIL))[None]
        truth = _coil_at(disp)[:, pool] / np.exp(LOG_COIL[pool])
        measured = _factors(pd, frames, disp, pool, baseline=PreContrastFrames(frames, disp, pool))
        errs.append(np.abs(measured / truth - 1).mean())
    assert np.mean(errs) < 0.02


def test_directions_the_breathing_did_not_explore_keep_the_pd_fit():
    """Breathing along x only: the frames say nothing of the profile's y terms, which
    stay the PD fit's (not zero), while the x gradient is measured."""
    from perfmoco.quant.coils import baseline_coefficients

    n = 8
    disp = np.zeros((n, 2, N, N))
    disp[:, 1] = np.linspace(-4, 4, n)[:, None, None]
    pool = np.hypot(YY - 32, XX - 32) < 8
    frames = 100.0 * _coil_at(disp)

    def terms(y, x):
        return np.stack([np.ones_like(y), y - 32, x - 32], -1)

    prior = np.array([0.0, 0.02, 0.0])  # y right, x unknown to the PD fit
    c = baseline_coefficients(frames, disp, region=pool, terms=terms, prior=prior)
    assert c[1] == pytest.approx(0.02, abs=1e-6)
    assert c[2] == pytest.approx(-0.012, rel=0.05)


def test_too_little_to_measure_falls_back_to_the_pd_fit():
    """Two frames, no motion or a handful of pixels: the PD fit's factors as they were."""
    from perfmoco.quant.coils import baseline_coefficients

    pd, frames, disp, pool = _study()
    pd_only = _factors(pd, frames, disp, pool)
    still = np.zeros_like(disp)
    few = np.zeros_like(pool)
    few[32, 30:35] = True
    for base in ((frames[:2], disp[:2], pool), (frames, still, pool), (frames, disp, few)):
        np.testing.assert_array_equal(
            _factors(pd, frames, disp, pool, baseline=PreContrastFrames(*base)), pd_only)
    assert baseline_coefficients(frames[:2], disp[:2], region=pool, prior=np.zeros(3),
                                 terms=lambda y, x: np.stack([y * 0 + 1, y, x], -1)) is None
    with pytest.raises(ValueError, match="region"):
        baseline_coefficients(frames, disp, region=pool[:10], prior=np.zeros(3),
                              terms=lambda y, x: np.stack([y * 0 + 1, y, x], -1))


def test_a_heart_near_the_image_edge_is_measured_from_the_frames_alone():
    """The image cut 12 px (24 mm) above and left of the heart's centre (a tight field
    of view): the PD frame's one-sided fit is not used alone (factors at 1 without the
    frames), but the pre-contrast frames measure the profile with it as their prior."""
    pd, frames, disp, pool = _study()
    cut = (slice(None), slice(20, None), slice(20, None))
    pd_c, fr_c, pool_c = pd[cut], frames[cut], pool[20:, 20:]
    disp_c = disp[:, :, 20:, 20:]
    truth = _coil_at(disp)[:, pool] / np.exp(LOG_COIL[pool])
    why: list[str] = []
    kw = dict(pixels=pool_c, centre=(12, 12), spacing_mm=(2.0, 2.0), radius_mm=60.0)
    alone = coil_motion_factors(pd_c, disp_c, skipped=why, **kw)
    np.testing.assert_array_equal(alone, 1.0)
    assert len(why) == 1 and "edge" in why[0]
    why.clear()
    measured = coil_motion_factors(pd_c, disp_c, skipped=why,
                                   baseline=PreContrastFrames(fr_c, disp_c, pool_c), **kw)
    assert why == []
    assert np.abs(truth - 1).max() > 0.05  # the coil's change is there to be found
    assert np.abs(measured / truth - 1).max() < 0.01


def test_tissue_baseline_keeps_the_aligned_tissue_before_the_bolus():
    """The frames before the LV's bolus less QC-flagged ones; the myocardium and LV
    pool off their outer edge and away from the RV (its bolus comes first); distances
    in acquired pixels (zero-filled images: twice as many display pixels)."""
    from perfmoco.quant.coils import tissue_baseline

    r = np.hypot(YY - 32, XX - 32)
    lv_core, myo = r < 6, (r >= 6) & (r < 12)
    rv = (np.hypot(YY - 32, XX - 48) < 5) & ~myo & ~lv_core
    frames = np.arange(10.0)[:, None, None] * np.ones((10, N, N))
    disp = np.zeros((10, 2, N, N))
    qc = np.zeros(10, bool)
    qc[2] = True
    f, d, region = tissue_baseline(frames, disp, myo=myo, lv_core=lv_core, rv=rv, n_frames=6,
                                   qc=qc)
    assert f[:, 0, 0].tolist() == [0, 1, 3, 4, 5] and d.shape == (5, 2, N, N)
    assert region[32, 32] and region[32, 22] and not region[32, 42]  # r = 10, the RV's side
    assert not (region & (r >= 11)).any()  # the outer edge eroded
    wide = tissue_baseline(frames, disp, myo=myo, lv_core=lv_core, rv=rv, n_frames=6,
                           scale=2.0)[2]
    assert wide.sum() < region.sum() and r[wide].max() < r[region].max()
