"""The phantom against its own truth and against what real stress series look like."""

from __future__ import annotations

import numpy as np
import pytest
from phantom_common import LV, MYO, prefix, pull_back
from scipy import ndimage

from perfmoco.phantom import (
    LABELS,
    MOTION_KINDS,
    VENDORS,
    generate_phantom,
    label_names,
    truth_path,
    write_truth,
)
from perfmoco.quant.model import mbf_to_flow, tissue_curve

# ---------------------------------------------------------------- API and shapes


def test_study_layout_and_truth_keys(ph_a):
    study = ph_a.study
    study.validate(require_aif=True)
    assert study.mrd_header is None and study.study_id == "phantom-seed0"
    assert [s.slice_index for s in study.highres] == [0, 1, 2]
    aif = study.aif
    assert aif is not None and aif.slice_index == 3
    hr = study.highres[0]
    assert hr.shape == (160, 160) and hr.pixel_spacing_mm == pytest.approx((2.25, 2.25))
    assert aif.shape == (80, 80) and aif.pixel_spacing_mm == pytest.approx((4.5, 4.5))
    assert hr.saturation_time_s == pytest.approx(0.1, abs=0.02)
    assert aif.saturation_time_s == pytest.approx(0.025, abs=0.01)
    n_t = hr.n_dynamics
    assert 60 <= n_t <= 75
    for s in study.slices:
        p = prefix(s)
        assert s.n_dynamics == n_t and 2 <= s.pd_images.shape[0] <= 3
        assert s.pd_images.shape[1:] == s.shape and s.pd_times_s.shape == (s.pd_images.shape[0],)
        assert s.pd_times_s[-1] < s.times_s[0]
        assert s.geometry is not None
        assert np.allclose(np.linalg.norm(s.geometry.slice_dir), 1.0)
        ny, nx = s.shape
        tr = ph_a.truth
        assert tr[f"{p}_labels"].shape == (ny, nx)
        assert tr[f"{p}_myo_masks"].shape == (n_t, ny, nx)
        assert tr[f"{p}_motion_free"].shape == (n_t, ny, nx)
        for key in ("displacement", "inverse_displacement"):
            assert tr[f"{p}_{key}"].shape == (n_t, 2, ny, nx)
            assert tr[f"{p}_{key}"].dtype == np.float32
        assert tr[f"{p}_pd_displacement"].shape == (s.pd_images.shape[0], 2, ny, nx)
        np.testing.assert_array_equal(tr[f"{p}_times"], s.times_s)
        if p != "aif":
            assert tr[f"{p}_mbf"].shape == tr[f"{p}_aha"].shape == (ny, nx)
            assert tr[f"{p}_rv_insertion"].shape == (2, 2)
    assert ph_a.truth["aif_gd"].shape == (n_t,)
    assert 3.0 <= ph_a.truth["aif_gd"].max() <= 6.0
    assert set(np.unique(ph_a.truth["s0_labels"])) <= set(label_names)
    assert ph_a.seed == 0 and ph_a.motion == "breathing" and ph_a.vendor == "a"


def test_vendor_b_parameters(ph_b, ph_a):
    hr = ph_b.study.highres[0]
    assert hr.shape == (192, 192) and hr.pixel_spacing_mm[0] == pytest.approx(1.8)
    assert ph_b.study.aif.shape == (96, 96)
    assert hr.n_dynamics == 45
    ratio = np.median(ph_b.study.highres[1].pd_images) / np.median(ph_a.study.highres[1].pd_images)
    assert 4 < ratio < 25  # vendor b stores about ten times larger values


def test_reproducible_and_seed_dependent():
    a = generate_phantom(seed=7, n_dynamics=10)
    b = generate_phantom(seed=7, n_dynamics=10)
    c = generate_phantom(seed=8, n_dynamics=10)
    for sa, sb in zip(a.study.slices, b.study.slices):
        np.testing.assert_array_equal(sa.images, sb.images)
        np.testing.assert_array_equal(sa.pd_images, sb.pd_images)
    assert a.truth.keys() == b.truth.keys()
    for k in a.truth:
        np.testing.assert_array_equal(a.truth[k], b.truth[k])
    assert not np.array_equal(a.truth["s1_labels"], c.truth["s1_labels"])
    # anatomy, kinetics and timing do not depend on the motion scenario
    still = generate_phantom(seed=7, n_dynamics=10, motion="none")
    for key in ("s1_labels", "s1_mbf", "s1_times", "aif_gd", "s2_myo_gd"):
        np.testing.assert_array_equal(still.truth[key], a.truth[key])


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(motion="wobble"), "wobble"),
        (dict(vendor="c"), "'c'"),
        (dict(seed=-1), "-1"),
        (dict(seed=1.5), "1.5"),
        (dict(n_dynamics=5), "5"),
        (dict(n_dynamics=20.5), "20.5"),
        (dict(warp_order=2), "warp_order"),
        (dict(heart_scale=2.0), "heart_scale"),
        (dict(heart_scale=True), "heart_scale"),
    ],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        generate_phantom(**kwargs)


def test_public_constants():
    assert MOTION_KINDS == ("none", "breathing", "breathing+gasp", "mistrigger")
    assert VENDORS == ("a", "b")
    assert label_names[MYO] == "lv_myocardium"




@pytest.mark.parametrize("fixture", ["ph_a", "ph_b"])
def test_tissue_curves_give_true_mbf(fixture, request):
    """Refit F of the Fermi model per pixel from the truth curves and the AIF."""
    ph = request.getfixturevalue(fixture)
    tr = ph.truth
    dt = 0.05
    t_aif = tr["aif_times"]
    grid = np.arange(t_aif[0] - 20.0, tr["s2_times"][-1] + 1.0, dt)
    aif = np.interp(grid, t_aif, tr["aif_gd"], left=0.0)
    kw = dict(dt_s=dt, tau0_s=float(tr["fermi_tau0_s"]), k_per_s=float(tr["fermi_k_per_s"]),
              delay_s=float(tr["fermi_delay_s"]))
    unit = tissue_curve(aif, flow_per_s=1.0, **kw)
    for k in range(3):
        mbf = tr[f"s{k}_mbf"]
        myo = mbf > 0
        assert np.array_equal(myo, tr[f"s{k}_labels"] == MYO)
        curves = tr[f"s{k}_myo_gd"]  # (T, N), pixels in np.nonzero(myo) order
        b = np.interp(tr[f"s{k}_times"], grid, unit)
        flow = b @ curves / (b @ b)
        rel = flow / mbf_to_flow(mbf[myo]) - 1.0
        assert np.median(np.abs(rel)) < 0.03 and np.abs(rel).max() < 0.1
        # Fermi impulse response: h(0) = F, and the curve starts at zero
        assert np.all(curves[0] < 0.02)


def test_mbf_ranges(ph_a, ph_b):
    for ph in (ph_a, ph_b):
        vals = np.concatenate([ph.truth[f"s{k}_mbf"][ph.truth[f"s{k}_mbf"] > 0]
                               for k in range(3)])
        assert 2.4 <= np.median(vals) <= 3.6
        assert vals.min() >= 0.55 and vals.max() <= 4.2


def test_defects_in_some_seeds():
    lows = []
    for seed in range(8):
        ph = generate_phantom(seed=seed, n_dynamics=10, motion="none")
        mbf = ph.truth["s1_mbf"]
        lows.append(np.mean(mbf[mbf > 0] < 1.6))
    assert max(lows) > 0.05  # at least one seed has a clear defect
    assert min(lows) < 0.01  # and at least one is healthy at mid level


def test_aha_segments(ph_a, ph_b):
    for ph in (ph_a, ph_b):
        for k, allowed in enumerate((range(1, 7), range(7, 13), range(13, 17))):
            aha = ph.truth[f"s{k}_aha"]
            lab = ph.truth[f"s{k}_labels"]
            assert np.array_equal(aha > 0, lab == MYO)
            assert set(np.unique(aha[aha > 0])) == set(allowed)
            # anterior insertion: myocardium and RV touch there
            for y, x in ph.truth[f"s{k}_rv_insertion"]:
                iy, ix = int(round(y)), int(round(x))
                near = lab[iy - 2: iy + 3, ix - 2: ix + 3]
                assert MYO in near
                assert np.isin(near, [LABELS["rv_wall"], LABELS["rv_blood"]]).any()
            # segment 2 / 8 (antero-septal) is next to the RV, segment 5 / 11 is not
            if k < 2:
                rv = ndimage.binary_dilation(np.isin(lab, [LABELS["rv_wall"], LABELS["rv_blood"]]),
                                             iterations=2)
                assert (rv & (aha == 2 + 6 * k)).sum() > 5
                assert (rv & (aha == 5 + 6 * k)).sum() == 0


def test_anatomy_sizes(ph_a):
    sp = float(ph_a.truth["spacing_mm"][0])
    areas = [(ph_a.truth[f"s{k}_labels"] == MYO).sum() * sp**2 for k in range(3)]
    assert 1400 < areas[0] < 2500 and 1400 < areas[1] < 2500  # real: about 1,900 mm^2
    assert areas[2] < areas[1]
    lab = ph_a.truth["s0_labels"]
    for name in ("fat", "chest_wall", "lung", "liver", "spine", "aorta", "lv_blood", "rv_blood",
                 "rv_wall", "lv_myocardium"):
        assert (lab == LABELS[name]).sum() > 10, name


def test_texture_not_flat(ph_a):
    mf = ph_a.truth["s0_motion_free"][0]
    lab = ph_a.truth["s0_labels"]
    liver = ndimage.binary_erosion(lab == LABELS["liver"], iterations=3)
    cv = mf[liver].std() / mf[liver].mean()
    assert 0.01 < cv < 0.3


# ---------------------------------------------------------------- realism (paper-notes figures)


@pytest.mark.parametrize("fixture", ["ph_a", "ph_b"])
def test_intensity_ratios_match_real_series(fixture, request):
    """LV/myo before contrast 0.93-1.36, LV peak/myo pre 2.7-5.3, myo peak/myo pre 1.8-2.9."""
    ph = request.getfixturevalue(fixture)
    for k in (0, 1):  # basal and mid, as measured
        s = ph.study.highres[k]
        lab = ph.truth[f"s{k}_labels"]
        d = ph.truth[f"s{k}_displacement"]
        moved = pull_back(np.broadcast_to(lab.astype(np.float32), s.images.shape), d)
        lv_lab = ndimage.binary_erosion(lab == LV, iterations=2).astype(np.float32)
        lv = pull_back(np.broadcast_to(lv_lab, s.images.shape), d) > 0.5
        myo = ph.truth[f"s{k}_myo_masks"] & (np.rint(moved) == MYO)
        lv_curve = np.array([s.images[t][lv[t]].mean() for t in range(s.n_dynamics)])
        myo_curve = np.array([s.images[t][myo[t]].mean() for t in range(s.n_dynamics)])
        myo_pre = myo_curve[:5].mean()
        assert 0.93 <= lv_curve[:5].mean() / myo_pre <= 1.36
        assert 2.7 <= lv_curve.max() / myo_pre <= 5.3
        assert 1.8 <= myo_curve.max() / myo_pre <= 2.9


def test_realism_figures(ph_a, ph_none):
    from perfmoco.phantom import REAL_FIGURES, realism_figures

    fig = realism_figures(ph_a, slice_index=0)
    assert set(fig) == set(REAL_FIGURES)
    for key in ("lv_pre_over_myo_pre", "lv_peak_over_myo_pre", "myo_peak_over_myo_pre",
                "lv_peak_dynamic"):
        _, lo, hi = REAL_FIGURES[key]
        assert lo <= fig[key] <= hi, (key, fig[key])
    assert 1400 < fig["myo_area_mm2"] < 2500
    assert realism_figures(ph_none)["excursion_mm"] == 0.0
    with pytest.raises(ValueError, match="3"):
        realism_figures(ph_a, slice_index=3)


def test_timing_is_realistic(ph_a):
    hr = ph_a.study.highres[1]
    rr = np.diff(hr.times_s)
    assert 0.5 < np.median(rr) < 0.7  # stress heart rate 86-120 bpm
    assert rr.std() > 0.002  # beat-to-beat jitter
    lv = ph_a.truth["s1_motion_free"][:, ph_a.truth["s1_labels"] == LV].mean(1)
    peak = int(np.argmax(lv)) + 1
    assert 19 <= peak <= 33
    assert abs(peak - int(ph_a.truth["lv_peak_dynamic"])) <= 1
    aif_t, s0_t = ph_a.truth["aif_times"], ph_a.truth["s0_times"]
    assert np.all(aif_t < s0_t) and np.all(s0_t - aif_t < 0.3)  # same heartbeat


@pytest.mark.parametrize("fixture", ["ph_a", "ph_b"])
def test_rv_bolus_before_lv(fixture, request):
    ph = request.getfixturevalue(fixture)
    mf = ph.truth["aif_motion_free"]  # short TS: blood is not saturated
    lab = ph.truth["aif_labels"]
    rv = mf[:, ndimage.binary_erosion(lab == LABELS["rv_blood"])].mean(1)
    lv = mf[:, ndimage.binary_erosion(lab == LV)].mean(1)
    assert 2 <= int(np.argmax(lv)) - int(np.argmax(rv)) <= 8  # pulmonary transit, 2-5 s


def test_signal_inverts_to_gd_with_baseline_subtraction(ph_none):
    """The quant contract: ideal-SR inversion with PD and TS, minus baseline R1, gives r [Gd]."""
    from perfmoco.config import QuantConfig
    from perfmoco.quant.model import signal_to_r1

    relax = QuantConfig().relaxivity
    for s in ph_none.study.highres:
        k = s.slice_index
        lab = ph_none.truth[f"s{k}_labels"]
        inner = ndimage.binary_erosion(lab == MYO, iterations=1)
        sig = ph_none.truth[f"s{k}_motion_free"][:, inner]
        m0 = ph_none.noise_free[f"s{k}_pd"][:, inner].mean(0)
        r1 = signal_to_r1(sig, ts_s=s.saturation_time_s, m0=m0)
        gd = (r1 - r1[:3].mean(0)) / relax
        true = ph_none.truth[f"s{k}_myo_gd"][:, inner[lab == MYO]]
        peak = true.mean(1).argmax()
        err = np.abs(gd[peak] - true[peak]) / true[peak].mean()
        assert np.median(err) < 0.05 and np.percentile(err, 90) < 0.2


def test_pd_frames_unsaturated(ph_a):
    for s in ph_a.study.highres:
        lab = ph_a.truth[f"s{s.slice_index}_labels"]
        myo = lab == MYO
        pd = ph_a.noise_free[f"s{s.slice_index}_pd"][0][myo].mean()
        pre = ph_a.noise_free[f"s{s.slice_index}"][0][myo].mean()
        assert pd > 2.5 * pre


def test_write_phantom_round_trip(tmp_path):
    files = pytest.importorskip("perfmoco.io.files")
    from perfmoco.phantom import write_phantom

    ph = generate_phantom(seed=4, n_dynamics=10)
    study_path, truth_file = write_phantom(ph, tmp_path / "out.h5")
    assert study_path.is_file() and truth_file == tmp_path / "out.truth.npz"
    back = files.read_study(study_path)
    assert len(back.slices) == 4
    for s in ph.study.slices:
        b = next(x for x in back.slices if x.slice_index == s.slice_index)
        assert b.role is s.role
        np.testing.assert_allclose(b.images, s.images, rtol=1e-6)
        np.testing.assert_allclose(b.times_s, s.times_s, atol=1e-4)  # 2.5 ms ticks survive
        assert b.saturation_time_s == pytest.approx(s.saturation_time_s)


def test_write_truth_round_trip(ph_none, tmp_path):
    out = tmp_path / "study.h5"
    written = write_truth(ph_none, out)
    assert written == truth_path(out) == tmp_path / "study.truth.npz"
    with np.load(written) as z:
        assert set(z.files) == set(ph_none.truth)
        np.testing.assert_array_equal(z["s1_mbf"], ph_none.truth["s1_mbf"])


def test_slice_truth_renders_the_phantoms_masks_and_scores_its_exact_correction(ph_a):
    """The motion-free myocardium moved by the true field is the phantom's mask of every
    frame (same rendering), and the phantom's own inverse field scores Dice ~1 and a
    centroid residual ~0 with the once-rendered masks on every slice, the AIF slice too."""
    from perfmoco.metrics import true_masks_corrected
    from perfmoco.moco.data import slice_truth
    from perfmoco.moco.evaluate import truth_metrics
    from perfmoco.moco.result import MocoResult
    from perfmoco.moco.transforms import warp
    from perfmoco.study import SliceRole

    for s in ph_a.study.slices:
        t = slice_truth(ph_a.truth, s)
        rendered = true_masks_corrected(t["motion_free_mask"], None, t["displacement"]) > 0.5
        np.testing.assert_array_equal(rendered, t["myo_masks"])
        prefix = "aif" if s.role is SliceRole.AIF else f"s{s.slice_index}"
        inv = ph_a.truth[f"{prefix}_inverse_displacement"]
        exact = MocoResult(warp(s.images, inv), inv, s.n_dynamics - 10,
                           np.zeros(s.n_dynamics, bool), s.pd_images,
                           np.zeros((0, 2, *s.shape), np.float32))
        m = truth_metrics(exact, t, s)
        assert m["dice"] > 0.99 and m["dice_peak"] > 0.99, (prefix, m)
        assert m["centroid_mm"] < 0.1, (prefix, m)
        assert m["dice_none"] < 0.95


def test_tic_smoothness_on_the_noise_free_frames_separates_motion_from_noise(ph_a):
    """With the phantom's noise-free frames in the truth, ``truth_metrics`` also scores the
    TIC smoothness of those frames under the correction's field: the exact correction takes
    the motion's share out (far more than the noisy figure can show, whose floor is the
    image noise), and no correction leaves it as it was."""
    from perfmoco.moco.data import slice_truth
    from perfmoco.moco.evaluate import truth_metrics
    from perfmoco.moco.result import MocoResult
    from perfmoco.moco.transforms import warp

    s = ph_a.study.slices[1]
    t = slice_truth(ph_a.truth, s)
    t["noise_free"] = ph_a.noise_free[f"s{s.slice_index}"]
    inv = ph_a.truth[f"s{s.slice_index}_inverse_displacement"]
    qc, no_pd = np.zeros(s.n_dynamics, bool), np.zeros((0, 2, *s.shape), np.float32)
    exact = truth_metrics(MocoResult(warp(s.images, inv), inv, s.n_dynamics - 10, qc,
                                     s.pd_images, no_pd), t, s)
    # (seed 0 moves little: dice 0.80 uncorrected; what stays is the bolus's own curvature)
    assert exact["tic_noise_free"] < 0.6 * exact["tic_noise_free_none"], exact
    assert exact["tic_noise_free"] < 0.6 * exact["tic"], exact  # the noisy one's floor
    # the noise caps the noisy figure's improvement below the noise-free one's
    assert (exact["tic_none"] / exact["tic"]
            < exact["tic_noise_free_none"] / exact["tic_noise_free"]), exact
    zero = np.zeros_like(inv)
    none = truth_metrics(MocoResult(s.images, zero, s.n_dynamics - 10, qc, s.pd_images, no_pd),
                         t, s)
    assert none["tic_noise_free"] == pytest.approx(none["tic_noise_free_none"], rel=1e-3)
    assert "tic_noise_free" not in truth_metrics(
        MocoResult(s.images, zero, s.n_dynamics - 10, qc, s.pd_images, no_pd),
        slice_truth(ph_a.truth, s), s)


def test_tic_roi_margin_counts_the_series_own_pixels():
    """``tic_margin_px`` sets the TIC ROI's margin beyond the myocardium: a smooth
    (linear) uptake inside 2 pixels of the ring scores 0, noisy tissue 3-10 pixels
    beyond it enters with the paper's 10 pixels (as 10 pixels of a low-resolution
    AIF slice reach the liver and chest wall)."""
    from perfmoco.moco.evaluate import truth_metrics
    from perfmoco.moco.result import MocoResult
    from perfmoco.study import SliceRole, SliceSeries

    t_n, n = 20, 64
    yy, xx = np.mgrid[:n, :n]
    r = np.hypot(yy - 32, xx - 32)
    ring = (r >= 10) & (r <= 14)
    rng = np.random.default_rng(0)
    images = np.where(r <= 16.5, np.linspace(0, 1, t_n)[:, None, None] * (1 + r / 20),
                      rng.uniform(0, 1, (t_n, n, n))).astype(np.float32)
    s = SliceSeries(images=images, times_s=np.arange(t_n, dtype=float), slice_index=0,
                    role=SliceRole.HIGHRES, pixel_spacing_mm=(2.0, 2.0))
    res = MocoResult(images, np.zeros((t_n, 2, n, n), np.float32), t_n - 10,
                     np.zeros(t_n, bool), np.zeros((0, n, n), np.float32),
                     np.zeros((0, 2, n, n), np.float32))
    truth = {"myo_masks": np.broadcast_to(ring, (t_n, n, n)).copy(), "peak_index": 10}
    near = truth_metrics(res, truth, s, tic_margin_px=2.0)
    far = truth_metrics(res, truth, s)
    assert near["tic"] < 1e-6, near
    assert far["tic"] > 0.1, far
