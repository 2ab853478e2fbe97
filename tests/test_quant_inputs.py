"""Quantification of studies with problems in their data: a missing AIF slice or PD
frames, a late start, a flat AIF, unphysical signal, PD frames of another readout, no
saturation time, QC-flagged and lost dynamics, no PD frames with a known efficiency, one
slice's PD frames off."""

from __future__ import annotations

import dataclasses
import warnings

import numpy as np
import pytest

from perfmoco.config import QuantConfig
from perfmoco.quant import quantify_study
from perfmoco.study import SliceRole, StudyError

phantom = pytest.importorskip("perfmoco.phantom")


@pytest.fixture(scope="module")
def ph(ph_still):
    return ph_still


def test_missing_aif_slice_warns_and_flags(clean_study):
    study = clean_study.replace_slices([s for s in clean_study.slices
                                        if s.role is not SliceRole.AIF])
    with pytest.warns(UserWarning, match="no low-resolution AIF slice"):
        r = quantify_study(study, config=QuantConfig())
    assert any("AIF" in w for w in r.warnings)
    assert all(np.isfinite(m).all() for m in r.mbf_maps.values())


def test_missing_pd_frames_falls_back(clean_study):
    study = clean_study.replace_slices([
        s.replace(pd_images=np.zeros((0, *s.shape), np.float32), pd_times_s=np.zeros(0))
        for s in clean_study.slices])
    with pytest.warns(UserWarning, match="no PD frames"):
        r = quantify_study(study, config=QuantConfig())
    assert sum("no PD frames" in w for w in r.warnings) == 4
    assert sorted(r.mbf_maps) == [0, 1, 2]
    assert all(np.isfinite(m).all() for m in r.mbf_maps.values())


def test_a_scan_started_after_the_injection_is_named(ph, clean_study):
    """The AIF's bolus in the third dynamic leaves two baseline frames, which may hold its
    foot: the study says so (the clean study as a whole gives no warning)."""
    gd = ph.truth["aif_gd"]
    cut = int(np.argmax(gd > 0.05 * gd.max())) - 2
    study = clean_study.replace_slices([
        s.replace(images=s.images[cut:], times_s=s.times_s[cut:]) for s in clean_study.slices])
    with pytest.warns(UserWarning, match="pre-contrast frames"):
        r = quantify_study(study, config=QuantConfig())
    assert any("started after the injection" in w for w in r.warnings)
    # and every segment says its value is doubtful for it
    assert r.segments and all(not row["reliable"] and "pre-contrast frames" in row["reason"]
                              for row in r.segments)


def test_flat_aif_is_a_clear_error(clean_study):
    aif = clean_study.aif
    flat = np.repeat(aif.images[:1], aif.n_dynamics, axis=0)
    study = clean_study.replace_slices([
        s.replace(images=flat) if s.role is SliceRole.AIF else s for s in clean_study.slices])
    with pytest.raises(StudyError, match="AIF|LV blood pool"):
        quantify_study(study, config=QuantConfig())
    # a bolus too small to be real
    weak = aif.images[:1] + 1e-4 * (aif.images - aif.images[:1])
    study = clean_study.replace_slices([
        s.replace(images=weak) if s.role is SliceRole.AIF else s for s in clean_study.slices])
    with pytest.raises(StudyError):
        quantify_study(study, config=QuantConfig())


def test_unphysical_signal_is_flagged(clean_study):
    cfg = dataclasses.replace(QuantConfig(), pd_scale=0.2)  # M0 far too small: S/M0 > 1
    with pytest.warns(UserWarning):
        r = quantify_study(clean_study, config=cfg)
    assert any("flagged" in w or "M0" in w for w in r.warnings)
    assert any(r.flagged[k][r.myocardium[k]].mean() > 0.2 for k in r.flagged)


def test_unphysical_signal_is_flagged_with_denormals_flushed(clean_study):
    """The same with denormals flushed to zero (as the networks run: a correction that
    failed to switch it off again, or another library that switches it on): LAPACK's SVD of
    the saturated curves returned NaN there, and the study failed with "curves and aif
    must be finite"; the denoising now leaves such curves as they are."""
    import torch

    cfg = dataclasses.replace(QuantConfig(), pd_scale=0.2)
    torch.set_flush_denormal(True)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            r = quantify_study(clean_study, config=cfg)
    finally:
        torch.set_flush_denormal(False)
    assert any(r.flagged[k][r.myocardium[k]].mean() > 0.2 for k in r.flagged)


def test_pd_frames_of_another_readout_are_named(ph, clean_study, clean_result):
    """PD frames read out with a lower flip angle are darker than the dynamics' M0 (here
    by half): the measured saturation efficiency says so, and the warning names the
    setting; with the protocol's ratio set, the efficiency and the maps are the truth's."""
    dark = clean_study.replace_slices([s.replace(pd_images=s.pd_images * 0.5)
                                       for s in clean_study.slices])
    with pytest.warns(UserWarning, match="quant.pd_scale"):
        r = quantify_study(dark, config=QuantConfig())
    assert r.saturation_efficiency["highres"] < 0.6
    assert any("PD frames do not read as the dynamics' M0" in w for w in r.warnings)
    assert all(not row["reliable"] and "quant.pd_scale" in row["reason"] for row in r.segments)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fixed = quantify_study(dark, config=dataclasses.replace(QuantConfig(), pd_scale=2.0))
    assert abs(fixed.saturation_efficiency["highres"]
               - float(ph.truth["saturation_efficiency"])) < 0.02
    for k in range(3):
        m = fixed.myocardium[k]
        np.testing.assert_allclose(fixed.mbf_maps[k][m], clean_result.mbf_maps[k][m],
                                   rtol=1e-3, atol=1e-3)
    assert not any("quant.pd_scale" in row["reason"] for row in fixed.segments)


def test_one_slice_whose_pd_frames_are_off_is_named(ph, monkeypatch):
    """One slice's PD frames 20 % darker than its M0 (a PD frame off the heart, say): its
    MBF had read ~1.3 ml/min/g high, silently (the study's mean efficiency hid it).
    Named by its efficiency against the other slices', its segments marked unreliable,
    kept out of the study's delay fit; the other slices read as without it."""
    def segment_truth(truth, row):
        sl = row["slice"]
        return float(np.median(truth[f"s{sl}_mbf"][truth[f"s{sl}_aha"] == row["segment"]]))

    import perfmoco.quant.study as study_module

    seen = {}
    real = study_module.fit_fermi_grouped

    def spy(*a, **kw):  # which pixels the study's delay fit takes
        seen["slice"] = np.asarray(kw["groups"]) // 1000
        seen["delay_core"] = np.asarray(kw["delay_core"], bool)
        return real(*a, **kw)

    monkeypatch.setattr(study_module, "fit_fermi_grouped", spy)
    odd = ph.study.replace_slices([s.replace(pd_images=s.pd_images * 0.8)
                                   if s.slice_index == 1 else s for s in ph.study.slices])
    with pytest.warns(UserWarning, match="its M0 is low"):
        r = quantify_study(odd, config=QuantConfig())
    assert not seen["delay_core"][seen["slice"] == 1].any()
    assert seen["delay_core"][seen["slice"] != 1].any()
    assert abs(r.saturation_efficiency["highres"]  # the sequence's: of the other slices
               - float(ph.truth["saturation_efficiency"])) < 0.02
    named = [w for w in r.warnings if "saturation efficiency" in w]
    assert len(named) == 1 and named[0].startswith("slice 1 (highres)")
    for row in r.segments:
        off = abs(row["median"] - segment_truth(ph.truth, row))
        if row["slice"] == 1:
            assert not row["reliable"] and "M0" in row["reason"]
        else:
            assert off < 0.5, (row, off)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        plain = quantify_study(ph.study, config=QuantConfig())
    assert not any("the other slices'" in w for w in plain.warnings)


def test_only_a_slice_the_others_outvote_is_named():
    from perfmoco.quant.messages import odd_slice_efficiency

    def named(*effs):
        msgs: list[str] = []
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return odd_slice_efficiency(msgs, {k: (f"slice {k}", v) for k, v in enumerate(effs)})

    assert named(0.67, 0.775, 0.776) == {0}
    assert named(0.775, 0.776, 0.84) == {2}
    assert named(0.69, 0.78, 0.87) == set()  # evenly spread: no majority to go by
    assert named(0.70, 0.76, 0.82) == set()  # the others disagree too
    assert named(0.76, 0.79, 0.80) == set()  # within the spread
    assert named(0.67, 0.775, float("nan")) == set()  # two measured
    assert named(0.60, 0.70, 0.775, 0.776) == set()  # two off: at most one named, if any


def test_a_missing_saturation_time_is_named(clean_study, clean_result):
    """Headers without the saturation time: the defaults (here the phantom's own, 100 /
    25 ms) are used, and the settings are named, since [Gd] scales with them."""
    bare = clean_study.replace_slices([s.replace(saturation_time_s=None)
                                       for s in clean_study.slices])
    with pytest.warns(UserWarning, match="quant.saturation_time_highres_s"):
        r = quantify_study(bare, config=QuantConfig())
    assert any("100 ms" in w and "25 ms (quant.saturation_time_aif_s)" in w for w in r.warnings)
    for k in range(3):
        m = r.myocardium[k]
        np.testing.assert_allclose(r.mbf_maps[k][m], clean_result.mbf_maps[k][m], atol=1e-6)


def test_qc_frames_are_excluded(ph, clean_study):
    t_n = clean_study.highres[0].n_dynamics
    bad = np.zeros(t_n, bool)
    bad[[30, 31]] = True
    hit = clean_study.replace_slices([
        s.replace(images=s.images + np.where(bad[:, None, None], 500.0, 0.0).astype(np.float32))
        if s.slice_index == 1 and s.role is SliceRole.HIGHRES else s
        for s in clean_study.slices])
    r = quantify_study(hit, config=QuantConfig(), qc={1: bad})
    ref = quantify_study(clean_study, config=QuantConfig())
    m = r.myocardium[1] & ref.myocardium[1]
    assert np.median(np.abs(r.mbf_maps[1][m] - ref.mbf_maps[1][m])) < 0.1
    assert r.flagged[1][r.myocardium[1]].mean() < 0.2
    with pytest.raises(ValueError, match="qc flags"):
        quantify_study(clean_study, config=QuantConfig(), qc={1: bad[:-1]})


def test_motion_fields_that_do_not_fit_their_slice_are_a_clear_error(clean_study):
    """A displacement of fewer frames than the slice's dynamics (or PD frames), of
    another matrix, or naming a slice the study lacks: a ValueError that says which
    (fewer frames had failed deep inside as a numpy broadcasting error, a PD field of
    one frame for three had been taken silently)."""
    s = clean_study.highres[0]
    t_n, p_n, shape = s.n_dynamics, s.pd_images.shape[0], s.images.shape[1:]
    fine = np.zeros((t_n, 2, *shape), np.float32)
    for kw, match in (
            (dict(displacements={s.slice_index: fine[:-3]}),
             rf"displacements of slice {s.slice_index} must have shape \({t_n}, 2"),
            (dict(displacements={s.slice_index: fine[:, :, :-5]}), "got"),
            (dict(displacements={99: fine}), "names slice 99"),
            (dict(pd_displacements={s.slice_index: fine[:1]}),
             rf"pd_displacements of slice {s.slice_index} must have shape \({p_n}, 2")):
        with pytest.raises(ValueError, match=match):
            quantify_study(clean_study, config=QuantConfig(), **kw)


def test_lost_dynamics_and_pd_frames_are_left_out_whatever_the_correction(clean_study,
                                                                         clean_result):
    """Dynamics 35-37 of every slice and a PD frame of slice 0 lost (all NaN, as another
    program leaves them): with no motion correction (which flags nothing) the fits leave
    the lost dynamics out and M0 comes from the other PD frames; MBF reads as without
    the loss (it had read 30 % low, slice 0's 7x high). Lost in the AIF's first pass
    (14-16, its peak in 21), the study says so."""
    from perfmoco.pipeline import process_study

    slices = []
    for s in clean_study.slices:
        im, pd = s.images.copy(), s.pd_images.copy()
        im[[35, 36, 37]] = np.nan
        if s.slice_index == 0:
            pd[1] = np.nan
        slices.append(s.replace(images=im, pd_images=pd))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        r = process_study(clean_study.replace_slices(slices), method="none")
    assert r.study.highres[0].pd_images.shape[0] == clean_study.highres[0].pd_images.shape[0] - 1
    assert all(m.qc[[35, 36, 37]].all() for m in r.moco)  # said QC-flagged: so they are
    assert any("PD frames [1] without any: left out" in m for m in r.messages)
    for k, m in clean_result.mbf_maps.items():
        want = float(np.median(m[m > 0]))
        got = r.quant.mbf_maps[k]
        assert float(np.median(got[got > 0])) == pytest.approx(want, rel=0.05), k
    aif = clean_study.aif
    im = aif.images.copy()
    im[[14, 15, 16]] = np.nan
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        r = process_study(clean_study.replace_slices(
            [aif.replace(images=im) if s is aif else s for s in clean_study.slices]),
            method="none")
    assert any("lost dynamics [14, 15, 16] fall in the AIF's first pass" in m
               for m in r.messages), r.messages
    assert all(not row["reliable"] and "first pass" in row["reason"] for row in r.quant.segments)


def test_slice_indices_of_33_and_more_read_as_the_first_ones(clean_study, clean_result):
    """MRD's ``slice`` counter runs to 65535: a study whose slices are numbered 40-43 reads
    as numbered 0-3 (segment labels are int16: ``1000 * 40`` had overflowed them, and the
    study had failed with "Python integer 40000 out of bounds for int16")."""
    far = clean_study.replace_slices([s.replace(slice_index=s.slice_index + 40)
                                      for s in clean_study.slices])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        r = quantify_study(far, config=QuantConfig())
    assert sorted(r.mbf_maps) == [k + 40 for k in sorted(clean_result.mbf_maps)]
    for k, m in clean_result.mbf_maps.items():
        np.testing.assert_allclose(r.mbf_maps[k + 40], m, atol=1e-4)
    assert {row["slice"] for row in r.segments} == {k + 40 for k in clean_result.mbf_maps}


def test_an_aif_without_pd_frames_takes_the_site_efficiency_else_a_calibrated_one(
        ph, clean_study, clean_result):
    """PD frames on the high-resolution slices but not on the AIF slice: at its short TS
    the baseline M0 hangs on the saturation efficiency (default 1: the AIF read 0.35 mmol/l
    at its peak against 3.5 on 12928 a).  With the protocol's efficiency set, that one is
    used; without, M0 is calibrated on the high-resolution LV blood
    (tests/test_quant_calibrate.py): both AIFs right, no segment marked for it.  Without
    any PD frames each slice's segments say that their own scale is not known."""
    aif, eta = clean_study.aif, float(ph.truth["aif_saturation_efficiency"])
    bare = aif.replace(pd_images=np.zeros((0, *aif.shape), np.float32), pd_times_s=np.zeros(0))
    study = clean_study.replace_slices([bare if s is aif else s for s in clean_study.slices])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        r = quantify_study(study, config=QuantConfig())
        set_ = quantify_study(study, config=QuantConfig(saturation_efficiency_aif=eta))
    assert any("calibrated" in w for w in r.warnings)
    assert not any("calibrated" in w for w in set_.warnings)
    peak = clean_result.aif_gd.max()
    for res in (r, set_):
        assert not any("saturation_efficiency" in row["reason"] for row in res.segments)
        assert res.aif_gd.max() == pytest.approx(peak, rel=0.05)
    none = clean_study.replace_slices([
        s.replace(pd_images=np.zeros((0, *s.shape), np.float32), pd_times_s=np.zeros(0))
        for s in clean_study.slices])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        r = quantify_study(none, config=QuantConfig(saturation_efficiency_aif=eta))
    assert all("quant.saturation_efficiency_highres" in row["reason"]
               and "saturation_efficiency_aif" not in row["reason"] for row in r.segments)
