"""The slices' bolus delays: one for the study by default, a window where they truly differ."""

from __future__ import annotations

import dataclasses
import warnings

import numpy as np
import pytest
from phantom_common import prefix

from perfmoco.config import QuantConfig
from perfmoco.quant import quantify_study
from perfmoco.study import SliceRole

phantom = pytest.importorskip("perfmoco.phantom")


def _pixel_errors(ph, result):
    out = {}
    for s, m in result.myocardium.items():
        ok = m & (ph.truth[f"s{s}_labels"] == phantom.LABELS["lv_myocardium"])
        truth = ph.truth[f"s{s}_mbf"][ok]
        out[s] = float(np.median(np.abs(result.mbf_maps[s][ok] - truth) / truth))
    return out


def test_a_window_follows_slices_whose_delays_truly_differ():
    """Noise-free, motion-free phantom whose apical bolus comes 0.5 s after the basal:
    with one delay for the study (the default) the end slices' pixels, +-0.25 s from it,
    read up to 3.0 % off (median; 6.2 % apical before the pools were found without the
    coils' shading, the study's delay nearer the basal then); with the slices' delays
    within 0.3 s of it each slice within 2.5 % (1.1 / 1.9 / 2.0 %)."""
    ph = phantom.generate_phantom(seed=11931, motion="none", slice_delays_s=(-0.25, 0.0, 0.25))
    study = ph.study.replace_slices([
        s.replace(images=ph.noise_free[prefix(s)], pd_images=ph.noise_free[prefix(s) + "_pd"])
        for s in ph.study.slices])
    one, window = (_pixel_errors(ph, quantify_study(study, config=QuantConfig(
        slice_delay_window_s=w))) for w in (0.0, 0.3))
    ends_one, ends_window = max(one[0], one[2]), max(window[0], window[2])
    assert ends_one > 0.025 and ends_window < ends_one / 1.4
    assert max(window.values()) < 0.025 and one[1] < 0.03


def _blood_mixed(ph, fraction: float, slices=("s0", "s1", "s2")):
    """Noise-free, motion-free study with ``fraction`` of the LV blood's signal mixed
    into every myocardial pixel of ``slices`` (a ring off the wall)."""
    out = []
    for s in ph.study.slices:
        key = prefix(s)
        im = np.array(ph.noise_free[key], np.float64)
        if s.role is not SliceRole.AIF and key in slices:
            lab = ph.truth[f"{key}_labels"]
            myo = lab == phantom.LABELS["lv_myocardium"]
            blood = im[:, lab == phantom.LABELS["lv_blood"]].mean(axis=1)
            im[:, myo] = (1 - fraction) * im[:, myo] + fraction * blood[:, None]
        out.append(s.replace(images=im.astype(np.float32), pd_images=ph.noise_free[key + "_pd"]))
    return ph.study.replace_slices(out)


def test_blood_in_the_myocardial_mask_is_warned_of():
    """A fifth to a third of the LV blood's signal mixed into every myocardial pixel (a
    ring off the wall): the study's delay fit takes a near-exponential shape and the
    study is warned of (the clean study of ``test_quant_study`` gives no warning)."""
    ph = phantom.generate_phantom(seed=0, motion="none")
    with pytest.warns(UserWarning, match="near-exponential response"):
        r = quantify_study(_blood_mixed(ph, 0.3), config=QuantConfig())
    assert any("(all slices)" in w and "MBF may be overestimated" in w for w in r.warnings)
    assert all(not row["reliable"] and "looks like blood" in row["reason"]
               for row in r.segments)  # every slice's: the study's fit is the one


@pytest.mark.parametrize("fraction", [0.5, 0.7])
def test_a_slice_whose_mask_holds_blood_is_left_out_of_the_delay_fit(fraction):
    """Half or 70 % of the LV blood's signal in the apical slice's myocardium only: the
    basal and mid slices stay within the 3 % target.  At 70 % the study's delay fit turns
    near-exponential, the slices' own fits show the apical one is, and the delay is
    fitted again without it; the warning names that slice, not the study.  (Half did
    that too until the ring started at the cavity's edge: the pool as grown now takes
    the blood-bright wall, which keeps the core and the delay fit off it.)"""
    ph = phantom.generate_phantom(seed=0, motion="none")
    study = _blood_mixed(ph, fraction, slices=("s2",))
    if fraction > 0.6:
        with pytest.warns(UserWarning, match="near-exponential response"):
            r = quantify_study(study, config=QuantConfig())
        shape = [w for w in r.warnings if "near-exponential" in w]
        assert len(shape) == 1 and shape[0].startswith("slice 2")
        assert "(all slices)" not in shape[0]
        # that slice's segments are marked unreliable for it, the others are not
        for row in r.segments:
            assert ("looks like blood" in row["reason"]) == (row["slice"] == 2)
        assert not any(row["reliable"] for row in r.segments if row["slice"] == 2)
    else:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            r = quantify_study(study, config=QuantConfig())
    err = _pixel_errors(ph, r)
    assert max(err[0], err[1]) < 0.03


def test_the_fits_that_set_the_delays_are_handed_back():
    """``delay_fits``: one fit of all curves (labels None) with one shared delay, or the
    delay groups' own fits under their labels."""
    from curve_common import FINE, aif_fine

    from perfmoco.quant.grouped import fit_fermi_grouped
    from perfmoco.quant.model import tissue_curve

    tf = np.arange(0, 43, FINE)  # continuous time, sampled every 0.6 s
    idx = np.round(np.arange(70) * 0.6 / FINE).astype(int)
    tis = tissue_curve(aif_fine(tf), dt_s=FINE, flow_per_s=0.04, tau0_s=4.0, k_per_s=1.0,
                       delay_s=0.6)
    c, aif = np.repeat(tis[idx][None], 40, axis=0), aif_fine(tf)[idx]
    lab = np.repeat([3, 7], 20)
    for window, labels in ((0.0, None), (None, [3, 7])):
        fits: list = []
        fit_fermi_grouped(c, aif, groups=lab, delay_groups=lab, dt_s=0.6,
                          delay_group_window_s=window, delay_fits=fits)
        (got, dfit), = fits
        assert (got is None and labels is None) or list(got) == labels
        assert dfit.tau0.shape == ((1,) if labels is None else (2,))
        np.testing.assert_allclose(dfit.delay, 0.6, atol=0.1)


def _one_slice_ahead(fraction: float):
    """Three slices' curves (F 0.04 /s, delay 0.6 s), ``fraction`` of a blood curve 2 s
    ahead of the AIF (the RV's) mixed into the third's: ``(group fit, delay_fits)``."""
    from curve_common import FINE, aif_fine

    from perfmoco.quant.grouped import fit_fermi_grouped
    from perfmoco.quant.messages import MIN_TAU0_S
    from perfmoco.quant.model import tissue_curve

    tf = np.arange(0, 43, FINE)
    idx = np.round(np.arange(70) * 0.6 / FINE).astype(int)
    tis = tissue_curve(aif_fine(tf), dt_s=FINE, flow_per_s=0.04, tau0_s=4.0, k_per_s=1.0,
                       delay_s=0.6)[idx]
    ahead = (1 - fraction) * tis + fraction * aif_fine(tf + 2.0)[idx]
    curves = np.concatenate([np.repeat(tis[None], 40, axis=0),
                             np.repeat(ahead[None], 20, axis=0)])
    lab = np.repeat([0, 1, 2], 20)
    fits: list = []
    _, gfit, _ = fit_fermi_grouped(curves, aif_fine(tf)[idx], groups=lab, delay_groups=lab,
                                   dt_s=0.6, delay_group_window_s=0.0, delay_fits=fits,
                                   min_tau0_s=MIN_TAU0_S)
    return gfit, fits


def test_a_slice_whose_curve_leads_the_aif_is_left_out_of_the_delay_fit():
    """A tenth of a blood curve that leads the AIF by 2 s (the RV's) in one slice's mean
    curve: its own fit sits on the delay grid's earliest delay, and so did the study's
    (-0.5 s against 0.6 s, the other slices' F 34 % low, as on fresh phantom 12294 a
    after the DL correction, whose apical mask held RV blood).  No myocardium gives such
    a fit: the slice is left out of the delay fit (F within 1 %) and named."""
    from perfmoco.quant.fermi import MIN_DELAY_S
    from perfmoco.quant.messages import implausible_shape

    gfit, fits = _one_slice_ahead(0.1)
    np.testing.assert_allclose(gfit.flow[:2], 0.04, rtol=0.01)
    (labels, own), (_, study) = fits
    assert list(labels) == [0, 1, 2] and float(own.delay[2]) <= MIN_DELAY_S + 1e-3
    np.testing.assert_allclose(study.delay, 0.6, atol=0.1)
    names = {0: "basal", 1: "mid", 2: "apical"}
    msgs: list[str] = []
    with pytest.warns(UserWarning, match="apical: the myocardium's mean curve"):
        implausible_shape(msgs, fits, names)  # (its shape is near-exponential too)
    assert len(msgs) == 1
    msgs = []  # a Fermi shape, but ahead of the AIF: named for that
    ahead = dataclasses.replace(own, tau0=np.full_like(own.tau0, 4.0))
    with pytest.warns(UserWarning, match="apical: .* 0.5 s or more before the AIF"):
        implausible_shape(msgs, [(labels, ahead)], names)
    assert len(msgs) == 1


def test_the_rvs_early_blood_in_the_septum_does_not_set_the_delay():
    """A tenth of the RV blood's signal in the septal pixels within 4 px of the RV (its
    partial volume, or a resampled moving heart's): the RV's bolus comes seconds before
    the LV's, and with those pixels in the study's delay fit the delay read early and the
    pixels far from the RV 14-15 % off; the delay fit takes the core off the RV
    (``pixels.delay_core``), and they stay within the 3 % target."""
    from scipy import ndimage

    ph = phantom.generate_phantom(seed=0, motion="none")
    out = []
    for s in ph.study.slices:
        key = prefix(s)
        im = np.array(ph.noise_free[key], np.float64)
        if s.role is not SliceRole.AIF:
            lab = ph.truth[f"{key}_labels"]
            rv = lab == phantom.LABELS["rv_blood"]
            near = ((lab == phantom.LABELS["lv_myocardium"])
                    & (ndimage.distance_transform_edt(~rv) <= 4.0))
            im[:, near] = 0.9 * im[:, near] + 0.1 * im[:, rv].mean(axis=1)[:, None]
        out.append(s.replace(images=im.astype(np.float32), pd_images=ph.noise_free[key + "_pd"]))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        r = quantify_study(ph.study.replace_slices(out), config=QuantConfig())
    for s, m in r.myocardium.items():
        lab = ph.truth[f"s{s}_labels"]
        far = (m & (lab == phantom.LABELS["lv_myocardium"])
               & (ndimage.distance_transform_edt(lab != phantom.LABELS["rv_blood"]) > 8))
        truth = ph.truth[f"s{s}_mbf"][far]
        assert np.median(np.abs(r.mbf_maps[s][far] - truth) / truth) < 0.03


def test_a_slice_with_few_pixels_off_the_rv_keeps_its_whole_core_for_the_delay():
    from perfmoco.quant.pixels import delay_core

    rv = np.zeros((20, 20), bool)
    rv[5:15, 15:17] = True
    myo = np.zeros_like(rv)
    myo[5:15, 5:15] = True  # columns 5-14 beside the RV: 15 - column pixels from it
    core = np.ones(int(myo.sum()), bool)
    # columns 5-11: 4 px or more; of those the core's interior (rows 6-13, columns 6-11)
    assert delay_core(core, myo, rv).sum() == 8 * 6
    # 6 display px or more (columns 5-9); their interior 2 px in (rows 7-12, columns
    # 7-9: 18) fewer than 10 acquired pixels' worth (22.5): all of them
    assert delay_core(core, myo, rv, scale=1.5).sum() == 10 * 5
    # 8 display px: 30 pixels, fewer than 10 acquired pixels' worth (40): the whole core
    assert (delay_core(core, myo, rv, scale=2.0) == core).all()
    thin = np.zeros_like(rv)
    thin[5:15, 12:15] = True  # a wall within 3 px of the RV: nothing off it
    core = np.ones(int(thin.sum()), bool)
    core[:4] = False
    assert (delay_core(core, thin, rv) == core).all()


def test_a_slice_ahead_of_the_aif_is_left_out_even_where_the_study_fit_looks_right():
    """2 % of a blood curve 2 s ahead of the AIF in one slice's curves: the study's fit
    keeps a Fermi shape and a delay inside the grid (0.18 s against 0.6 s) but the other
    slices' F read 20 % low; that slice's own fit is ahead of the AIF (fresh 12280 a after
    the DL correction: its apical slice's own -0.5 s, every segment 0.45-0.62 low), so
    it is left out (F within 1 %)."""
    from perfmoco.quant.messages import MIN_TAU0_S

    gfit, fits = _one_slice_ahead(0.02)
    np.testing.assert_allclose(gfit.flow[:2], 0.04, rtol=0.01)
    (labels, own), (_, study) = fits
    assert list(labels) == [0, 1, 2] and float(own.tau0[2]) > MIN_TAU0_S
    np.testing.assert_allclose(study.delay, 0.6, atol=0.1)


@pytest.mark.parametrize("scale", [1, 2])
def test_the_delay_comes_from_the_cores_interior_not_its_blood_tinged_edge(scale):
    """A ring whose core's edge pixels hold 6 % of the LV's blood (a resampled moving
    heart's partial volume, 1 px deeper than the core's margin reaches): the study's
    delay fitted on the whole core reads the blood's earlier rise and every clean
    pixel's MBF with it; from the core's interior (``pixels.delay_core``) they are
    within 3 % of the truth.  Zero-filled images (``scale`` 2: every distance in
    display pixels doubled): the interior one acquired pixel in, as deep as the edge."""
    from scipy import ndimage

    from perfmoco.quant.grouped import fit_fermi_grouped
    from perfmoco.quant.model import mbf_to_flow, tissue_curve
    from perfmoco.quant.pixels import delay_core

    dt, n = 0.7, 60
    t = np.arange(n) * dt
    u = np.clip((t - 6.0) / 4.0, 0, None)
    aif = 5.0 * u**3 * np.exp(3.0 * (1.0 - u))
    c = 20 * scale
    yy, xx = np.mgrid[0 : 2 * c, 0 : 2 * c]
    r = np.hypot(yy - c, xx - c) / scale
    myo = (r >= 8) & (r < 14)
    core2d = (r >= 9) & (r < 13)  # the core: off the cavity and the epicardium
    edge = (core2d & ~ndimage.binary_erosion(core2d, iterations=scale))[myo]
    tissue = tissue_curve(aif, dt_s=dt, flow_per_s=mbf_to_flow(3.0), tau0_s=5.0, k_per_s=0.8,
                          delay_s=0.6)
    curves = np.repeat(tissue[None], int(myo.sum()), 0)
    curves[edge] += 0.06 * aif  # the blood rises earlier and sharper
    core = core2d[myo]
    groups = np.zeros(core.size, int)
    err = {}
    interior = delay_core(core, myo, np.zeros_like(myo), scale=scale)
    assert interior.any() and not (interior & edge).any()  # one acquired pixel in
    for name, dcore in (("core", core), ("interior", interior)):
        pix, _, _ = fit_fermi_grouped(curves, aif, groups=groups, delay_groups=groups, dt_s=dt,
                                      core=core, delay_core=dcore, delay_group_window_s=0.0)
        err[name] = abs(float(np.median(pix.mbf[~edge])) / 3.0 - 1)
    assert err["interior"] < 0.03
    assert err["core"] > 2 * err["interior"]


def test_a_group_without_delay_core_curves_keeps_the_studys_delay():
    """With a window, a delay group none of whose curves is in the delay core (a slice
    whose M0 is off: the study leaves its [Gd] out of the delay) keeps the study's delay
    instead of fitting its own within the window (its curves here 1.2 s late): its pixels
    then at most their own window (0.3 s) past the study's (before: 0.8 s past)."""
    from curve_common import FINE, aif_fine

    from perfmoco.quant.grouped import fit_fermi_grouped
    from perfmoco.quant.model import tissue_curve

    tf = np.arange(0, 43, FINE)
    idx = np.round(np.arange(70) * 0.6 / FINE).astype(int)
    curves = [tissue_curve(aif_fine(tf), dt_s=FINE, flow_per_s=0.04, tau0_s=4.0, k_per_s=1.0,
                           delay_s=d)[idx] for d in (0.6, 0.6, 1.8)]
    c = np.repeat(np.array(curves), 20, axis=0)
    lab = np.repeat([0, 1, 2], 20)
    for dcore, late in ((lab < 2, False), (np.ones(60, bool), True)):
        fit, _, _ = fit_fermi_grouped(c, aif_fine(tf)[idx], groups=lab, delay_groups=lab,
                                      dt_s=0.6, delay_group_window_s=0.5, delay_core=dcore)
        d0, d2 = float(np.median(fit.delay[lab == 0])), float(np.median(fit.delay[lab == 2]))
        assert d2 > d0 + 0.45 if late else d2 < d0 + 0.35
    one = np.zeros(20, int)  # one delay group (one slice) with a window: its own fit
    fit, _, _ = fit_fermi_grouped(c[:20], aif_fine(tf)[idx], groups=one, delay_groups=one,
                                  dt_s=0.6, delay_group_window_s=0.5)
    assert np.median(fit.delay) == pytest.approx(0.6, abs=0.1)
