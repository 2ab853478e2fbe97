"""The AIF's M0 without PD frames on its slice, calibrated on the high-resolution LV blood
(:mod:`perfmoco.quant.calibrate`): against the closed form and the phantom's truth."""

import warnings

import numpy as np
import pytest

from perfmoco.config import QuantConfig
from perfmoco.quant import quantify_study
from perfmoco.quant.calibrate import (
    AifCalibration,
    BloodReference,
    calibrate_aif_m0,
    tail_agreement,
)
from perfmoco.study import SliceRole

CFG = QuantConfig()


def _blood(t):
    """A first pass (gamma variate, peak 5 mmol/l near 14 s) on a slow recirculation tail."""
    u = np.clip(t - 8.0, 0.0, None)
    first = 5.0 * (u / 6.0) ** 3 * np.exp(3.0 * (1.0 - u / 6.0))
    return first + 0.6 * (1.0 - np.exp(-u / 8.0))


def _signal(gd, *, m0, eta, ts, t1=CFG.t1_blood_s):
    r1 = 1.0 / t1 + CFG.relaxivity * gd
    return m0 * (1.0 - eta * np.exp(-ts * r1))


def _reference(t, gd, name="slice 0", ts=0.1):
    return BloodReference(name, t, gd, _signal(gd, m0=1.0, eta=1.0, ts=ts))


@pytest.mark.parametrize("eta", [0.80, 0.92, 0.98])
def test_the_aif_m0_and_efficiency_come_back_from_its_tail(eta):
    """Closed form: an AIF slice (TS 25 ms, M0 800) whose efficiency the fit does not know;
    matching its tail to the blood's true [Gd] gives its M0 and efficiency back."""
    t = np.arange(70) * 0.9
    gd = _blood(t)
    sig = _signal(gd, m0=800.0, eta=eta, ts=0.025)
    cal = calibrate_aif_m0(sig, t, [_reference(t, gd)], n_base=8, ts_s=0.025, config=CFG)
    assert isinstance(cal, AifCalibration)
    assert cal.m0 == pytest.approx(800.0, rel=1e-4)
    assert cal.efficiency == pytest.approx(eta, abs=1e-4)
    assert cal.frames[0] > int(np.argmax(gd)) and cal.frames[1] == t.size - 1
    assert f"{cal.efficiency:.3f}" in cal.describe("aif")


def test_slices_that_disagree_are_averaged_and_their_spread_said():
    t = np.arange(70) * 0.9
    gd = _blood(t)
    sig = _signal(gd, m0=800.0, eta=0.9, ts=0.025)
    refs = [_reference(t, 1.1 * gd, "slice 0"), _reference(t, 0.9 * gd, "slice 1")]
    cal = calibrate_aif_m0(sig, t, refs, n_base=8, ts_s=0.025, config=CFG)
    assert cal.m0 == pytest.approx(800.0, rel=0.02)
    assert cal.spread == pytest.approx(0.1, abs=1e-6)
    assert "slice 0, slice 1" in cal.describe("aif") and "10%" in cal.describe("aif")


def test_no_calibration_without_a_tail_or_references_or_with_saturated_blood():
    t = np.arange(70) * 0.9
    gd = _blood(t)
    sig = _signal(gd, m0=800.0, eta=0.9, ts=0.025)
    short = calibrate_aif_m0(sig[:18], t[:18], [_reference(t, gd)], n_base=8, ts_s=0.025,
                             config=CFG)
    assert isinstance(short, str) and "after the first pass" in short
    none = calibrate_aif_m0(sig, t, [None], n_base=8, ts_s=0.025, config=CFG)
    assert isinstance(none, str) and "PD frames" in none
    # ten times the dose: the high-resolution blood stays near saturation in the tail
    hot = calibrate_aif_m0(sig, t, [_reference(t, 10 * gd, ts=0.3)], n_base=8, ts_s=0.025,
                           config=CFG)
    assert isinstance(hot, str)


def _without_aif_pd(study):
    aif = study.aif
    bare = aif.replace(pd_images=np.zeros((0, *aif.shape), np.float32), pd_times_s=np.zeros(0))
    return study.replace_slices([bare if s is aif else s for s in study.slices])


def test_a_noisy_study_without_aif_pd_frames_reads_the_true_aif(ph_still):
    """The phantom's noisy motion-free study, PD frames taken off its AIF slice and no
    efficiency set: the calibrated AIF's peak and area within 5 % of the truth, the
    efficiency within 0.02 of the AIF sequence's true one, no segment marked for it."""
    tr = ph_still.truth
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        r = quantify_study(_without_aif_pd(ph_still.study), config=QuantConfig())
    assert r.aif_gd.max() == pytest.approx(tr["aif_gd"].max(), rel=0.05)
    true_u = np.interp(r.aif_times_s, tr["aif_times"], tr["aif_gd"])
    assert r.aif_gd.sum() == pytest.approx(true_u.sum(), rel=0.05)
    assert r.saturation_efficiency["aif"] == pytest.approx(
        float(tr["aif_saturation_efficiency"]), abs=0.02)
    assert any("calibrated on the LV blood" in w for w in r.warnings)
    assert not any("saturation_efficiency" in row["reason"] for row in r.segments)


def test_a_series_too_short_for_a_tail_stays_unreliable_and_says_why(ph_still, clean_study):
    """Cut after the AIF's peak: no tail to calibrate on, so the baseline and the default
    efficiency give M0 as before, every segment is marked, and the message says why."""
    n = int(np.argmax(ph_still.truth["aif_gd"])) + 8
    cut = _without_aif_pd(clean_study.replace_slices([
        s.replace(images=s.images[:n], times_s=s.times_s[:n]) for s in clean_study.slices]))
    assert cut.aif.role is SliceRole.AIF
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        r = quantify_study(cut, config=QuantConfig())
    assert any("after the first pass" in w and "no PD frames" in w for w in r.warnings)
    assert all(not row["reliable"] and "quant.saturation_efficiency_aif" in row["reason"]
               for row in r.segments)


def test_an_aif_off_the_high_resolution_blood_after_the_first_pass_is_named():
    """Closed form: the AIF's own [Gd] against the blood's, 1.1x agrees (None), 1.3x and
    1/1.3x are named with their ratio."""
    t = np.arange(70) * 0.9
    gd = _blood(t)
    sig = _signal(gd, m0=800.0, eta=0.9, ts=0.025)
    refs = [_reference(t, gd)]
    assert tail_agreement(1.1 * gd, sig, t, refs, n_base=8) is None
    for f in (1.3, 1 / 1.3):
        msg = tail_agreement(f * gd, sig, t, refs, n_base=8)
        assert msg is not None and f"reads {f:.2f} x" in msg
    assert tail_agreement(1.5 * gd, sig[:18], t[:18], refs, n_base=8) is None  # no tail


def test_aif_pd_frames_that_do_not_read_as_its_m0_are_named(clean_study, clean_result):
    """The AIF slice's PD frames at 0.7 of its M0 (another readout than the dynamics'; the
    high-resolution slices' right): its [Gd] reads about 1.5x the LV blood's after the
    first pass; the study says so and marks every segment (the AIF's scale or the slices'
    is off: MBF either way); ``clean_result``, right, says nothing (no warning)."""
    aif = clean_study.aif
    dark = clean_study.replace_slices([s.replace(pd_images=s.pd_images * 0.7) if s is aif
                                       else s for s in clean_study.slices])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        r = quantify_study(dark, config=QuantConfig())
    said = [w for w in r.warnings if "after the first pass" in w and "reads" in w]
    assert len(said) == 1
    assert 1.4 < float(said[0].split("reads ")[1].split(" x")[0]) < 1.7
    assert all(not row["reliable"] and "LV blood" in row["reason"] for row in r.segments)
    assert not any("after the first pass" in w for w in clean_result.warnings)
