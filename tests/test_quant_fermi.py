"""Fermi deconvolution: known MBF from synthetic curves, frame exclusion, resampling, errors."""

from __future__ import annotations

import numpy as np
import pytest
from curve_common import FINE, aif_fine

from perfmoco.quant.conv import FermiConvolution
from perfmoco.quant.fermi import fit_fermi
from perfmoco.quant.grouped import fit_fermi_grouped
from perfmoco.quant.model import mbf_to_flow, tissue_curve
from perfmoco.quant.timegrid import resample_uniform


def _curves(mbf, *, dt=0.6, n=70, tau0=4.0, k=1.2, delay=0.6):
    """Continuous-time (0.05 s grid) curves sampled every ``dt`` s, like the phantom."""
    tf = np.arange(0, n * dt + 1, FINE)
    aif = aif_fine(tf)
    tis = tissue_curve(aif, dt_s=FINE, flow_per_s=mbf_to_flow(np.asarray(mbf)), tau0_s=tau0,
                       k_per_s=k, delay_s=delay)
    idx = np.round(np.arange(n) * dt / FINE).astype(int)
    return tis[..., idx], aif[idx]


def test_recovers_known_mbf_noise_free():
    mbf = np.array([0.6, 1.0, 2.0, 3.0, 4.0])
    c, a = _curves(mbf)
    fit = fit_fermi(c, a, dt_s=0.6)
    np.testing.assert_allclose(fit.mbf, mbf, rtol=0.03)
    assert fit.ok.all() and (fit.r2 > 0.999).all()
    assert np.all(np.abs(fit.delay - 0.6) < 0.15)


@pytest.mark.parametrize(("tau0", "k", "delay"), [(2.5, 2.0, 0.2), (7.0, 0.6, 1.3)])
def test_recovers_mbf_other_shapes(tau0, k, delay):
    mbf = np.array([1.0, 3.0])
    c, a = _curves(mbf, tau0=tau0, k=k, delay=delay)
    np.testing.assert_allclose(fit_fermi(c, a, dt_s=0.6).mbf, mbf, rtol=0.04)


def test_grouped_fit_with_noise():
    rng = np.random.default_rng(0)
    mbf = np.repeat([1.0, 3.0], 150)
    c, a = _curves(mbf)
    noisy = c + rng.normal(0, 0.04, c.shape)
    pix, grp, ids = fit_fermi_grouped(noisy, a, groups=np.repeat([0, 1], 150),
                                      delay_groups=np.zeros(300, int), dt_s=0.6)
    np.testing.assert_allclose(grp.mbf, [1.0, 3.0], rtol=0.1)
    assert list(ids) == [0, 1]
    for m in (1.0, 3.0):
        assert abs(np.median(pix.mbf[mbf == m]) - m) / m < 0.1
    assert pix.mbf.shape == (300,)
    fast, _, _ = fit_fermi_grouped(noisy, a, groups=np.repeat([0, 1], 150),
                                   delay_groups=np.zeros(300, int), dt_s=0.6, fast_pixels=True)
    for m in (1.0, 3.0):
        assert abs(np.median(fast.mbf[mbf == m]) - m) / m < 0.1


def test_frame_mask_excludes_corrupt_frames():
    c, a = _curves(np.array([2.5]))
    bad = c.copy()
    bad[0, 20:23] += 1.5  # e.g. mistriggered beats
    keep = np.ones(c.shape[-1], bool)
    keep[20:23] = False
    assert abs(fit_fermi(bad, a, dt_s=0.6).mbf[0] - 2.5) > 0.1
    assert fit_fermi(bad, a, dt_s=0.6, frame_mask=keep).mbf[0] == pytest.approx(2.5, rel=0.03)


def test_leading_shape_kept():
    c, a = _curves(np.full((2, 3), 2.0))
    fit = fit_fermi(c, a, dt_s=0.6)
    assert fit.mbf.shape == (2, 3) and fit.ok.shape == (2, 3)


def test_model_matches_fine_grid_and_jacobian():
    c, a = _curves(np.array([2.0]), tau0=3.0, k=1.1, delay=0.7)
    model = FermiConvolution(a, dt_s=0.6, oversample=2, min_delay_s=-0.5, dtype=np.float64)
    p = np.array([[mbf_to_flow(2.0), 3.0, 1.1, 0.7]])
    pred, jac = model(p, grad=True)
    assert np.abs(pred[0] - c[0]).max() < 0.02 * c.max()
    eps = np.array([1e-7, 1e-5, 1e-5, 1e-5])
    for i in range(4):
        e = np.zeros((1, 4))
        e[0, i] = eps[i]
        fd = (model(p + e)[0] - model(p - e)[0])[0] / (2 * eps[i])
        assert np.abs(fd - jac[i, 0]).max() < 0.02 * np.abs(fd).max() + 1e-9


def test_resample_uniform():
    rng = np.random.default_rng(0)
    t = np.cumsum(rng.uniform(0.55, 0.65, 40))
    v = np.stack([2 * t + 1, 0.5 * t**2])
    grid, out = resample_uniform(t, v, dt_s=0.6)
    np.testing.assert_allclose(out[0], 2 * grid + 1, atol=1e-9)
    np.testing.assert_allclose(out[1], 0.5 * grid**2, atol=1e-6)
    _, lin = resample_uniform(t, v, dt_s=0.6, method="linear")
    np.testing.assert_allclose(lin[0], 2 * grid + 1, atol=1e-9)
    with pytest.raises(ValueError, match="increasing"):
        resample_uniform(t[::-1], v[:, ::-1])


def test_bad_input():
    c, a = _curves(np.array([2.0]))
    with pytest.raises(ValueError, match="share T"):
        fit_fermi(c[:, :-1], a, dt_s=0.6)
    with pytest.raises(ValueError, match="dt_s"):
        fit_fermi(c, a, dt_s=0.0)
    bad = c.copy()
    bad[0, 3] = np.nan
    with pytest.raises(ValueError, match="finite"):
        fit_fermi(bad, a, dt_s=0.6)
    with pytest.raises(ValueError, match="fewer than 5"):
        fit_fermi(c, a, dt_s=0.6, frame_mask=np.arange(c.shape[-1]) < 3)
    with pytest.raises(ValueError, match="init"):
        fit_fermi(c, a, dt_s=0.6, fix_delay=True)


def test_spillover_takes_blood_partial_volume_out_of_flow():
    """Endocardial pixels: a fraction of the LV blood (the AIF) added to the tissue curve."""
    mbf = np.array([1.0, 2.0, 3.5, 1.0, 2.0, 3.5])
    vb = np.array([0.0, 0.0, 0.0, 0.1, 0.2, 0.3])
    c, a = _curves(mbf)
    mixed = (1 - vb[:, None]) * c + vb[:, None] * a  # partial volume with the cavity
    plain = fit_fermi(mixed, a, dt_s=0.6)
    both = fit_fermi(mixed, a, dt_s=0.6, spillover=True)
    # the tissue part is (1 - vb) of the volume: its flow per volume of the pixel
    want = mbf * (1 - vb)
    assert np.all(np.abs(plain.mbf[3:] - want[3:]) / want[3:] > 0.2)  # read as flow
    np.testing.assert_allclose(both.mbf, want, rtol=0.05)
    # vb trades off a little against the delay (a Fermi foot looks like blood)
    np.testing.assert_allclose(both.vb, vb, atol=0.05)
    assert np.all(both.vb[3:] > 0.5 * vb[3:])
    # curves not marked keep vb = 0 and the plain fit
    some = fit_fermi(mixed, a, dt_s=0.6, spillover=vb > 0)
    np.testing.assert_array_equal(some.vb[:3], 0.0)
    np.testing.assert_allclose(some.mbf[:3], plain.mbf[:3], rtol=1e-4)  # float32 round-off
    np.testing.assert_allclose(some.mbf[3:], want[3:], rtol=0.05)


def test_grouped_spillover_on_marked_pixels_with_noise():
    rng = np.random.default_rng(1)
    n = 200
    c, a = _curves(np.full(n, 2.5))
    rim = np.arange(n) >= n // 2
    vb = np.where(rim, rng.uniform(0.05, 0.3, n), 0.0)
    mixed = c + vb[:, None] * a + rng.normal(0, 0.03, c.shape)
    kw = dict(groups=np.zeros(n, int), delay_groups=np.zeros(n, int), dt_s=0.6, core=~rim)
    plain, _, _ = fit_fermi_grouped(mixed, a, **kw)
    fixed, _, _ = fit_fermi_grouped(mixed, a, spillover=rim, **kw)
    err_plain = np.median(np.abs(plain.mbf[rim] - 2.5)) / 2.5
    err_fixed = np.median(np.abs(fixed.mbf[rim] - 2.5)) / 2.5
    assert err_plain > 0.3 and err_fixed < 0.1
    assert np.median(np.abs(fixed.vb[rim] - vb[rim])) < 0.03
    np.testing.assert_array_equal(fixed.mbf[~rim], plain.mbf[~rim])


def test_group_fits_take_the_blood_of_a_thin_wall_out():
    """Core curves of a thin (or slightly misaligned) wall hold some blood too: with
    group_blood the segment's fit reads its tissue's flow and bounds its pixels' shapes
    near the right one; a segment without blood keeps its fit."""
    rng = np.random.default_rng(2)
    n0, n1 = 400, 60
    c, a = _curves(np.r_[np.full(n0, 2.5), np.full(n1, 1.2)])
    vb = np.r_[np.zeros(n0), rng.uniform(0.04, 0.12, n1)]
    mixed = (1 - vb[:, None]) * c + vb[:, None] * a + rng.normal(0, 0.02, c.shape)
    kw = dict(groups=np.r_[np.zeros(n0, int), np.ones(n1, int)], fixed_delay_s=0.6, dt_s=0.6)
    pix_plain, plain, _ = fit_fermi_grouped(mixed, a, **kw)
    pix, blood, _ = fit_fermi_grouped(mixed, a, group_blood=True, **kw)
    want = 1.2 * (1 - vb[n0:].mean())  # the tissue's flow per volume of the pixels
    assert plain.mbf[1] > 3 * want  # measured 8.0 against 1.1: blood read as flow
    assert abs(blood.mbf[1] - want) / want < 0.1
    assert blood.vb[1] == pytest.approx(vb[n0:].mean(), abs=0.02)
    assert abs(blood.mbf[0] - 2.5) / 2.5 < 0.05 and blood.vb[0] < 0.01
    # the pixels (no blood term of their own here) start from and stay near its shape
    assert np.median(pix.mbf[n0:]) < 0.4 * np.median(pix_plain.mbf[n0:])


def test_per_curve_regressors_take_each_pools_blood_out():
    """Curves mixed with one of two pool curves (the AIF, an earlier 'RV' bolus) or
    neither: each marked curve takes its own regressor and reads its tissue part;
    converged curves leave the working set without mixing up the regressors."""
    mbf = np.tile([1.0, 2.0, 3.5], 4)
    c, a = _curves(mbf)
    rv = np.roll(a, -5) * 1.3  # bolus 3 s earlier
    rv[-5:] = rv[-6]
    which = np.repeat([-1, 0, 1, 1], 3)
    v = np.where(which < 0, 0.0, np.tile([0.1, 0.25, 0.4], 4))
    pools = np.stack([np.zeros_like(a), a, rv])  # row which + 1
    mixed = (1 - v[:, None]) * c + v[:, None] * pools[which + 1]
    fit = fit_fermi(mixed, a, dt_s=0.6, spillover=which, spill_curves=rv[None])
    np.testing.assert_allclose(fit.mbf, mbf * (1 - v), rtol=0.05)
    np.testing.assert_allclose(fit.vb, v, atol=0.05)
    np.testing.assert_array_equal(fit.vb[which < 0], 0.0)
    # with the AIF alone, the RV-mixed curves are misread
    wrong = fit_fermi(mixed, a, dt_s=0.6, spillover=which >= 0)
    rv_rows = which == 1
    assert np.median(np.abs(wrong.mbf[rv_rows] / (mbf * (1 - v))[rv_rows] - 1)) > 0.1


def test_spillover_index_errors():
    c, a = _curves(np.array([1.0, 2.0]))
    with pytest.raises(ValueError, match="-1..1"):
        fit_fermi(c, a, dt_s=0.6, spillover=np.array([0, 2]), spill_curves=a[None])
    with pytest.raises(ValueError, match="spill_curves"):
        fit_fermi(c, a, dt_s=0.6, spillover=np.array([0, 1]), spill_curves=a[None, :-1])
    with pytest.raises(ValueError, match="bool or an int"):
        fit_fermi(c, a, dt_s=0.6, spillover=np.array([0.5, 1.0]))


def test_slices_take_the_delay_of_all_their_curves():
    """A small slice's (a thin apical wall's) own mean curve is too noisy for a delay:
    fitted on its own, the delay moved the slice's MBF by up to 1.2 ml/min/g over ten
    noise draws; with the delay of all curves (``delay_group_window_s=0``) within 0.2."""
    n0, n1 = 600, 30
    lab = np.r_[np.zeros(n0, int), np.ones(n1, int)]
    c, a = _curves(np.full(n0 + n1, 2.5))
    err = {None: [], 0.0: []}
    for seed in range(10):
        noisy = c + np.random.default_rng(seed).normal(0, 0.1, c.shape)  # peak 0.65 mmol/l
        for w in err:
            _, grp, _ = fit_fermi_grouped(noisy, a, groups=lab, delay_groups=lab, dt_s=0.6,
                                          delay_group_window_s=w)
            err[w].append(abs(grp.mbf[1] - 2.5))
    assert max(err[None]) > 0.8 and max(err[0.0]) < 0.25


def test_slice_delays_within_a_window_of_the_shared_one():
    """A slice whose bolus truly comes 0.25 s later keeps its own delay within a window
    of the shared one (noise-free); with one shared delay its pixels, free within
    +-0.3 s of it, still read its flow."""
    n0, n1 = 600, 30
    lab = np.r_[np.zeros(n0, int), np.ones(n1, int)]
    c = np.r_[_curves(np.full(n0, 2.5))[0], _curves(np.full(n1, 2.5), delay=0.85)[0]]
    a = _curves(np.array([1.0]))[1]
    pix, grp, _ = fit_fermi_grouped(c, a, groups=lab, delay_groups=lab, dt_s=0.6,
                                    delay_group_window_s=0.3)
    np.testing.assert_allclose(grp.delay, [0.6, 0.85], atol=0.05)
    np.testing.assert_allclose(grp.mbf, 2.5, rtol=0.03)
    pix, grp, _ = fit_fermi_grouped(c, a, groups=lab, delay_groups=lab, dt_s=0.6,
                                    delay_group_window_s=0.0)
    assert grp.delay[1] == grp.delay[0] and grp.delay[0] == pytest.approx(0.6, abs=0.05)
    assert np.median(pix.mbf[n0:]) == pytest.approx(2.5, rel=0.03)
