"""Signal model: closed form, round trips, dcmri cross-check, M0 map, bolus arrival."""

from __future__ import annotations

import numpy as np
import pytest

from perfmoco.quant.model import gd_to_r1, saturation_recovery, signal_to_r1
from perfmoco.quant.signal import (
    baseline_m0,
    bolus_arrival_index,
    m0_map,
    pre_contrast_frames,
    signal_to_gd,
)

T1, TS, R = 1.471, 0.100, 4.5


def _gd_curve(n=40):
    t = np.arange(n, dtype=float)
    s = np.clip((t - 8) / 5.0, 0, None)
    return 1.2 * s**2 * np.exp(2 * (1 - s))


def test_closed_form_saturation_recovery():
    r1 = np.array([0.5, 1.0, 5.0, 20.0])
    expect = 1000.0 * (1.0 - np.exp(-TS * r1))
    np.testing.assert_allclose(saturation_recovery(r1, ts_s=TS, m0=1000.0), expect)
    np.testing.assert_allclose(signal_to_r1(expect, ts_s=TS, m0=1000.0), r1, rtol=1e-9)


@pytest.mark.parametrize("eta", [1.0, 0.82])
def test_signal_to_gd_round_trip_with_imperfect_saturation(eta):
    gd = _gd_curve()
    m0 = 750.0
    r1 = gd_to_r1(gd, t1_s=T1, relaxivity=R)
    sig = (1 - eta) * m0 + saturation_recovery(r1, ts_s=TS, m0=eta * m0)
    out, sat = signal_to_gd(sig, m0=m0, ts_s=TS, relaxivity=R, baseline=6)
    np.testing.assert_allclose(out, gd, atol=1e-9)  # the eta offset cancels with the baseline
    assert not sat


def test_signal_to_gd_flags_saturation_and_checks_input():
    sig = np.array([100.0, 100.0, 100.0, 1200.0, 300.0])
    _, sat = signal_to_gd(sig, m0=1000.0, ts_s=TS, relaxivity=R, baseline=2)
    assert sat
    with pytest.raises(ValueError, match="baseline"):
        signal_to_gd(sig, m0=1000.0, ts_s=TS, relaxivity=R, baseline=0)
    with pytest.raises(ValueError, match="positive"):
        signal_to_gd(sig, m0=1000.0, ts_s=0.0, relaxivity=R, baseline=2)


def test_baseline_m0_fallback_round_trip():
    gd = _gd_curve()
    sig = saturation_recovery(gd_to_r1(gd, t1_s=T1, relaxivity=R), ts_s=TS, m0=500.0)
    m0 = baseline_m0(sig[:6].mean(), ts_s=TS, t1_s=T1)
    assert m0 == pytest.approx(500.0, rel=1e-9)
    out, _ = signal_to_gd(sig, m0=m0, ts_s=TS, relaxivity=R, baseline=6)
    np.testing.assert_allclose(out, gd, atol=1e-9)


def test_against_dcmri():
    dc = pytest.importorskip("dcmri")
    gd = _gd_curve()
    r1 = gd_to_r1(gd, t1_s=T1, relaxivity=R)
    sig = np.asarray(dc.signal_src(500.0, r1, TS))
    np.testing.assert_allclose(sig, saturation_recovery(r1, ts_s=TS, m0=500.0), rtol=1e-12)
    # dcmri: relaxivity in Hz/M, concentrations in M
    ref = np.asarray(dc.conc_src(sig, TS, T1, R * 1000.0, n0=6)) * 1000.0
    ours, _ = signal_to_gd(sig, m0=baseline_m0(sig[:6].mean(), ts_s=TS, t1_s=T1), ts_s=TS,
                           relaxivity=R, baseline=6)
    np.testing.assert_allclose(ours, ref, atol=1e-9)


def test_m0_map_does_not_mix_tissues():
    rng = np.random.default_rng(0)
    truth = np.full((32, 32), 1200.0)
    ring = np.zeros((32, 32), bool)
    ring[10:22, 10:22] = True
    ring[13:19, 13:19] = False
    truth[ring] = 1000.0
    pd = truth[None] + rng.normal(0, 20.0, (3, 32, 32))
    m0 = m0_map(pd, mask=ring, sigma_px=1.5)
    assert abs(np.median(m0[ring]) - 1000.0) < 5.0  # no blood (1200) leaks in
    assert np.std(m0[ring] - 1000.0) < 12.0  # and the noise is reduced
    np.testing.assert_allclose(m0_map(pd, sigma_px=0, pd_scale=2.0), 2 * np.median(pd, 0))
    with pytest.raises(ValueError, match="pd_images"):
        m0_map(np.zeros((0, 4, 4)))
    with pytest.raises(ValueError, match="mask"):
        m0_map(pd, mask=np.ones((4, 4), bool))


def test_bolus_arrival_index():
    rng = np.random.default_rng(1)
    c = _gd_curve() * 100 + 50 + rng.normal(0, 0.5, 40)
    assert bolus_arrival_index(c) in (8, 9)
    assert bolus_arrival_index(np.linspace(1, 2, 10)[::-1]) == 2  # peak first: minimum baseline


def test_pre_contrast_frames_stop_before_the_bolus_foot():
    """A sampled bolus whose foot falls between frames: the frame before the first one
    above 5 % of the peak already holds contrast; the baseline leaves it out."""
    t = np.arange(40) * 0.8
    s = np.clip((t - 6.3) / 6.0, 0, None)
    c = 4.5 * s**3 * np.exp(3 * (1 - s))
    arrival = bolus_arrival_index(c)
    assert c[arrival - 1] > 0.01 * c.max()  # contrast in the frame before "arrival"
    n = pre_contrast_frames(c)
    assert n == arrival - 1 and c[:n].max() < 0.001 * c.max()
    assert pre_contrast_frames(c, margin=0) == arrival
    assert pre_contrast_frames(np.linspace(1, 2, 10)[::-1]) == 2  # at least min_baseline


def test_coil_motion_factors():
    from perfmoco.quant.signal import coil_motion_factors

    yy, xx = np.mgrid[0:64, 0:64].astype(float)
    coil = np.exp(0.02 * (yy - 32) - 0.01 * (xx - 32))  # smooth coil profile, log-linear
    pd = (coil * 1000.0)[None]
    pix = np.zeros((64, 64), bool)
    pix[28:36, 28:36] = True
    disp = np.zeros((3, 2, 64, 64))
    disp[1, 0] = 5.0  # frame 1 seen 5 px lower, frame 2 3 px to the right
    disp[2, 1] = 3.0
    f = coil_motion_factors(pd, disp, pixels=pix, centre=(32, 32), spacing_mm=(2.0, 2.0))
    assert f.shape == (3, 64)
    np.testing.assert_allclose(f[0], 1.0, atol=1e-9)
    np.testing.assert_allclose(f[1], np.exp(0.02 * 5), rtol=1e-6)
    np.testing.assert_allclose(f[2], np.exp(-0.01 * 3), rtol=1e-6)
    with pytest.raises(ValueError, match="displacement"):
        coil_motion_factors(pd, disp[:, :, :10], pixels=pix, centre=(32, 32), spacing_mm=(2, 2))


def test_coil_fit_leaves_the_blood_pools_out():
    """A blood pool 30 % brighter in PD just above the wall: fitted with the rest, its
    contrast reads as coil and the factors of frames seen lower are off (by 1.4 %, a
    tenth of the coil change itself);
    left out (``exclude``, :func:`pools_and_edges`), they follow the coil."""
    from perfmoco.quant.signal import coil_motion_factors, pools_and_edges

    yy, xx = np.mgrid[0:64, 0:64].astype(float)
    coil = np.exp(0.02 * (yy - 32) - 0.01 * (xx - 32))
    pool = np.hypot(yy - 26, xx - 32) < 5
    pd = (coil * np.where(pool, 1300.0, 1000.0))[None]
    wall = (np.hypot(yy - 26, xx - 32) >= 7) & (np.hypot(yy - 26, xx - 32) < 10)
    disp = np.zeros((2, 2, 64, 64))
    disp[1, 0] = 5.0
    kw = dict(pixels=wall, centre=(32, 32), spacing_mm=(2.0, 2.0), radius_mm=40.0)
    truth = np.exp(0.02 * 5)
    with_pool = coil_motion_factors(pd, disp, **kw)[1]
    without = coil_motion_factors(pd, disp, exclude=pools_and_edges(pool), **kw)[1]
    assert np.abs(with_pool / truth - 1).max() > 0.01  # 1.4 % here: 10 % of the 5 px change
    np.testing.assert_allclose(without, truth, rtol=1e-6)
    edge = pools_and_edges(pool, 2.0)
    assert edge.sum() > pools_and_edges(pool).sum() > pool.sum()
    assert not pools_and_edges(np.zeros((4, 4), bool)).any()


def test_coil_motion_factors_give_up_when_the_heart_is_near_the_image_edge():
    """Fitted from one side of the heart only, the polynomial extrapolates onto the
    other; the factors are then left at 1 rather than guessed.  (With this pure coil
    profile the one-sided fit would happen to be right; with the anatomy's PD contrast
    on one side of a real or phantom heart it is not: docs/quantification.md.)  A small
    field of view centred on the heart (the disc cut on every side alike) still gets them."""
    from perfmoco.quant.signal import coil_motion_factors

    yy, xx = np.mgrid[0:96, 0:96].astype(float)
    coil = np.exp(0.02 * (yy - 48) - 0.01 * (xx - 48))
    pix = np.zeros((96, 96), bool)
    pix[44:52, 44:52] = True
    disp = np.zeros((2, 2, 96, 96))
    disp[1, 0] = 5.0
    why: list[str] = []
    centred = coil_motion_factors((coil * 1000.0)[None], disp, pixels=pix, centre=(48, 48),
                                  spacing_mm=(2.0, 2.0), skipped=why)
    np.testing.assert_allclose(centred[1], np.exp(0.02 * 5), rtol=1e-6)
    assert why == []
    # the same image cut 16 px (32 mm) above and right of the heart's centre
    cut = (coil * 1000.0)[32:, :64]
    one_sided = coil_motion_factors(cut[None], disp[:, :, 32:, :64], pixels=pix[32:, :64],
                                    centre=(16, 48), spacing_mm=(2.0, 2.0), skipped=why)
    np.testing.assert_array_equal(one_sided, 1.0)
    assert len(why) == 1 and "edge" in why[0]  # the reason, for the study's messages
