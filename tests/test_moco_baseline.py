"""Pre-contrast block alignment: contrast-invariant offset, bolus arrival, pipeline."""

import numpy as np
import pytest
import torch
from heart_common import heart as _heart

from perfmoco.config import MocoConfig
from perfmoco.moco import networks
from perfmoco.moco.baseline import align_baseline_full_fov, baseline_length, block_length
from perfmoco.moco.pipeline import MotionCorrector
from perfmoco.moco.synthetic import synthetic_series
from perfmoco.moco.transforms import identity_grid


@pytest.mark.parametrize("similarity", ["mi", "ngf"])
def test_the_block_offset_of_a_phantom_series_is_found_to_a_fraction_of_a_pixel(similarity):
    """A breathing phantom's slice with the exact correction (every frame on the
    motion-free anatomy), its pre-contrast frames then moved by a known amount: the
    block search finds that move (here 0.08 mm off with ``mi``, 0.15 mm with ``ngf``).
    Over 54 such cases (18 slices of 11600-11605, moves up to 1.5 px) the median error
    was 0.64 mm with ``mi`` on the 2.5 mm crop (11 mm at worst) and 0.33 mm with ``ngf``
    on the 1.25 mm crop (0.9 mm at worst): ``ngf`` is the default."""
    from perfmoco.phantom import generate_phantom, warp

    ph = generate_phantom(seed=10335, motion="breathing", vendor="b")
    s = ph.study.slices[1]
    exact = warp(np.asarray(s.images, np.float32), ph.truth["s1_inverse_displacement"])
    t = exact.shape[0]
    move = np.zeros((t, 2, *exact.shape[1:]), np.float32)
    move[:24, 0], move[:24, 1] = 0.9, -0.6  # more frames than the block: it is found alone
    images = torch.from_numpy(warp(exact, move))
    eye = torch.eye(2, 3, dtype=torch.float64).expand(t, -1, -1)
    labels = ph.truth["s1_labels"]
    centre = tuple(float(v) for v in np.argwhere(labels == 7).mean(axis=0))
    lo, hi = float(images.min()), float(images.max())
    moved, found = align_baseline_full_fov(images, eye, centre, s.pixel_spacing_mm, (lo, hi),
                                           MocoConfig(baseline_similarity=similarity))
    assert found.applied and found.n_frames >= 6
    err_mm = (moved[0, :, 2].numpy() + (0.9, -0.6)) * np.asarray(s.pixel_spacing_mm)
    assert np.hypot(*err_mm) < 0.5


def test_baseline_length_is_the_frames_before_the_bolus_foot():
    t = 30
    frames = []
    gen = torch.Generator().manual_seed(3)
    for k in range(t):
        c = 0.0 if k < 9 else min(1.0, 0.25 * (k - 8))  # first enhanced frame: 9
        img = _heart(blood=0.3 + 0.6 * c, myo=0.45 + 0.2 * c, lung=0.05)
        frames.append(img + 0.01 * torch.randn(img.shape, generator=gen))
    crop = torch.stack(frames)
    disc = (identity_grid((64, 64)) - 31.5).norm(dim=0) < 24
    assert baseline_length(crop, disc) == 8
    assert baseline_length(crop[:5], disc) == 0  # too short to say
    flat = crop[:1].expand(t, -1, -1) + 0.01 * torch.randn(t, 64, 64, generator=gen)
    assert baseline_length(flat, disc) == 0  # no bolus at all: nothing is called pre-contrast


def test_pre_contrast_frames_left_off_the_first_ones_are_not_read_as_the_bolus():
    """A deep breather's pre-contrast frames 4-11 left 2 px from frames 0-3 (11699 b's
    basal slice: 3.5 mm) differ from them at the edges both ways; the bolus adds signal
    only. Read by the 99th percentile alone, the block ended at frame 3."""
    t = 30
    frames = []
    gen = torch.Generator().manual_seed(3)
    for k in range(t):
        c = 0.0 if k < 12 else min(1.0, 0.25 * (k - 11))  # first enhanced frame: 12
        shift = (2.0, 1.5) if 4 <= k < 12 else (0.0, 0.0)
        img = _heart(blood=0.3 + 0.6 * c, myo=0.45 + 0.2 * c, lung=0.05, shift=shift)
        frames.append(img + 0.01 * torch.randn(img.shape, generator=gen))
    disc = (identity_grid((64, 64)) - 31.5).norm(dim=0) < 24
    assert baseline_length(torch.stack(frames), disc) == 11


def test_pre_contrast_frames_brightened_for_a_few_beats_are_not_read_as_the_bolus():
    """A deep breath carries the heart towards the surface coils: its frames come out
    brighter for a few beats, then dim again (11725 b's basal slice: frames 4-6 and
    11-13, up to 10 %). Contrast, once it has come, stays; read frame by frame, the
    block ended at frame 3."""
    t = 30
    frames = []
    gen = torch.Generator().manual_seed(3)
    for k in range(t):
        c = 0.0 if k < 16 else min(1.0, 0.25 * (k - 15))  # first enhanced frame: 16
        gain = 1.12 if k in (4, 5, 6, 11, 12, 13) else 1.0
        img = gain * _heart(blood=0.3 + 0.6 * c, myo=0.45 + 0.2 * c, lung=0.05)
        frames.append(img + 0.01 * torch.randn(img.shape, generator=gen))
    disc = (identity_grid((64, 64)) - 31.5).norm(dim=0) < 24
    assert baseline_length(torch.stack(frames), disc) == 15


def test_the_aif_slice_needs_closer_halves_before_its_block_is_moved():
    """Even and odd pre-contrast frames 2 mm apart (one pixel of a 2 mm grid, the
    block at +3 mm on average): within the high-resolution gate (2.5 mm), not
    within the AIF slice's (1.5 mm), whose pre-contrast frames carry less."""
    n_pre, t = 12, 40
    gen = torch.Generator().manual_seed(4)
    frames = []
    for k in range(t):
        c = 0.0 if k < n_pre else min(1.0, 0.25 * (k - n_pre + 1))
        shift = ((2.0 if k % 2 == 0 else 1.0), 0.0) if k < n_pre else (0.0, 0.0)
        # little pre-contrast contrast, as on the scanner; a strong bolus
        img = _heart(blood=0.40 + 1.5 * c, myo=0.46 + 0.3 * c, lung=0.3, shift=shift)
        frames.append(img + 0.01 * torch.randn(img.shape, generator=gen))
    images = torch.stack(frames)
    eye = torch.eye(2, 3, dtype=torch.float64).expand(t, -1, -1)
    cfg = MocoConfig()
    assert cfg.baseline_agreement_aif_mm < 2.0 < cfg.baseline_agreement_mm
    moved, hi = align_baseline_full_fov(images, eye, (31.5, 31.5), (2.0, 2.0), (0.0, 2.0), cfg)
    assert hi.applied and hi.n_frames >= 8
    np.testing.assert_allclose(hi.offset_mm, (3.0, 0.0), atol=0.7)  # the block's mean offset
    np.testing.assert_allclose(moved[:hi.n_frames, :, 2].numpy(), [[1.5, 0.0]] * hi.n_frames,
                               atol=0.35)  # pixels of the series
    kept, lo = align_baseline_full_fov(images, eye, (31.5, 31.5), (2.0, 2.0), (0.0, 2.0), cfg,
                                       aif=True)
    assert not lo.applied and "disagree" in lo.reason
    np.testing.assert_array_equal(kept.numpy(), eye.numpy())


def test_pipeline_moves_an_offset_pre_contrast_block_onto_the_reference():
    """Untrained (identity) networks: all motion is left to the refinement and this
    step.  The pre-contrast frames share an extra offset; the PCA-referenced
    refinement aligns them with each other but keeps part of that offset (all of
    it on the phantoms, where the pre-contrast frames carry less structure), the
    block alignment removes most of it; the PD frames stay where step 2 put them."""
    rng = np.random.default_rng(11)
    n = 40
    shift = rng.uniform(-0.8, 0.8, (n, 2))
    shift[:12] += (2.5, -1.5)  # the bolus reaches the RV at frame 13
    series, disp, _ = synthetic_series(n_dynamics=n, shape=(96, 104), spacing_mm=2.0,
                                       shift_px=shift, bolus_frame=12, seed=5)
    torch.manual_seed(0)
    models = {s: networks.RegNet(networks.default_spec(s)) for s in networks.STAGES}
    off = MotionCorrector(models, config=MocoConfig(baseline_align=False)).correct(series)
    on = MotionCorrector(models).correct(series)
    ref = on.reference_index
    want = disp[ref, :, 48, 52] - disp[:, :, 48, 52]
    err_off = np.linalg.norm(off.displacement[:10, :, 48, 52] - want[:10], axis=1)
    err_on = np.linalg.norm(on.displacement[:10, :, 48, 52] - want[:10], axis=1)
    # measured: 0.70 px without the block alignment (of the 2.9 px offset), 0.38 with it
    assert np.median(err_off) > 0.5
    assert np.median(err_on) < 0.6 * np.median(err_off)
    rest_on = np.linalg.norm(on.displacement[16:, :, 48, 52] - want[16:], axis=1)
    assert np.median(rest_on) < 0.3  # the other frames stay aligned
    # the PD frames are not moved with the block (their own search, moco.pd_align, finds
    # the same place either way; only step 3's non-rigid part may differ)
    np.testing.assert_allclose(on.pd_displacement[:, :, 48, 52],
                               off.pd_displacement[:, :, 48, 52], atol=0.3)


def test_a_pre_contrast_block_beyond_the_search_range_is_found_by_a_wider_search():
    """A deep breather's pre-contrast block ~15 mm off (beyond ``baseline_max_mm``, 8 mm,
    per axis): the first search ends on its edge, a second one of twice the range at
    the same step finds it (measured: 5.5 px left with the one search, 0.29 px now)."""
    rng = np.random.default_rng(11)
    n = 40
    shift = rng.uniform(-0.8, 0.8, (n, 2))
    shift[:12] += (7.3, -1.0)  # 14.6 mm at 2 mm pixels
    series, disp, _ = synthetic_series(n_dynamics=n, shape=(96, 104), spacing_mm=2.0,
                                       shift_px=shift, bolus_frame=12, seed=5)
    torch.manual_seed(0)
    models = {s: networks.RegNet(networks.default_spec(s)) for s in networks.STAGES}
    on = MotionCorrector(models).correct(series)
    want = disp[on.reference_index, :, 48, 52] - disp[:, :, 48, 52]
    err = np.linalg.norm(on.displacement[:10, :, 48, 52] - want[:10], axis=1)
    assert np.median(err) < 1.0


def test_smoothing_keeps_a_flat_image_and_takes_the_noise_down():
    from perfmoco.moco.baseline import smooth_frames as _smooth

    flat = torch.full((2, 40, 40), 3.0)
    assert torch.allclose(_smooth(flat, 1.5), flat)
    gen = torch.Generator().manual_seed(7)
    noise = torch.randn(1, 200, 200, generator=gen)
    # a Gaussian of SD s leaves 1 / (2 s sqrt(pi)) of white noise's SD
    assert abs(float(_smooth(noise, 2.0).std()) - 1.0 / (4.0 * np.pi**0.5)) < 0.02


@pytest.mark.parametrize(("mi_mm", "taken"), [
    ((5.5, 1.0), "ngf"),      # the two agree (within baseline_agreement_mm): the finer one
    ((1.0, -0.5), "mi"),      # they disagree and mutual information's is the smaller move
    ((9.0, 7.0), "ngf"),      # they disagree and the gradient fields' is the smaller move
    (None, "ngf"),            # mutual information found nothing it trusts
])
def test_a_large_block_offset_needs_a_second_witness(monkeypatch, mi_mm, taken):
    import perfmoco.moco.baseline as bl

    ngf = torch.tensor([6.0, 0.0], dtype=torch.float64) / bl.FINE_SPACING_MM
    mi = None if mi_mm is None else torch.tensor(mi_mm, dtype=torch.float64) / bl.SPACING_MM
    monkeypatch.setattr(bl, "_block_search",
                        lambda *a, **k: (mi, "" if mi is not None else "x", mi))
    d, spacing, geo = bl._confirmed((ngf, bl.FINE_SPACING_MM, "fine"), None, None, "coarse",
                                    10, 8, MocoConfig(), "s")
    assert (spacing, geo) == ((bl.FINE_SPACING_MM, "fine") if taken == "ngf"
                              else (bl.SPACING_MM, "coarse"))
    assert torch.equal(d, ngf if taken == "ngf" else mi)


@pytest.mark.parametrize(("whole_mm", "kept"), [
    ((5.0, 1.0), True),    # mutual information's halves disagreed, its block agrees: moved
    ((1.9, 1.2), False),   # ... its block lies far from the move (13045 a): nothing moved
    (None, True),          # its search ended at the edge: no witness against the move
])
def test_a_large_block_offset_is_refuted_by_the_other_similaritys_whole_block(
        monkeypatch, whole_mm, kept):
    import perfmoco.moco.baseline as bl

    ngf = torch.tensor([6.0, 0.0], dtype=torch.float64) / bl.FINE_SPACING_MM
    mm_other = None if whole_mm is None else torch.tensor(whole_mm, dtype=torch.float64)
    whole = None if mm_other is None else mm_other / bl.SPACING_MM
    monkeypatch.setattr(bl, "_block_search", lambda *a, **k: (None, "halves disagree", whole))
    found = bl._confirmed((ngf, bl.FINE_SPACING_MM, "fine"), None, None, "coarse", 10, 8,
                          MocoConfig(), "s")
    assert (found is not None) == kept
    # the other way round, as the mutual-information fallback checks its move
    assert bl._refuted(ngf * bl.FINE_SPACING_MM, mm_other, MocoConfig(), "s", "x") == (not kept)
    # a move within CONFIRM_MM is never refuted
    small = torch.tensor([bl.CONFIRM_MM - 0.5, 0.0], dtype=torch.float64)
    assert not bl._refuted(small, torch.tensor([-8.0, 0.0], dtype=torch.float64), MocoConfig(),
                           "s", "x")


def test_a_pre_contrast_block_with_few_edges_lands_on_the_anatomy(monkeypatch):
    """11691 b's mid slice: before the bolus its heart shows almost no edges (blood and
    myocardium alike), and the gradient fields of the unsmoothed crops found the block
    7.5 mm off each way (mean residual over the true myocardium 5.1 mm; mutual
    information 0.2 mm). Smoothed first, and a move that large checked by mutual
    information, it lands within 1 mm.

    The crops centred where the LV is found on the stored dynamics (the pool of dynamic
    26, the LV's peak): found on them divided by the coils' profile
    (:mod:`perfmoco.anatomy.shading`) it is dynamic 31's, 9 mm further in the breath, and
    from crops centred there this block lands 1.35 mm off (0.38 from these; the whole
    series 1.07 against 0.99 mm; docs/quantification.md, thirtieth session)."""
    from scipy import ndimage

    import perfmoco.anatomy.shading as shading

    monkeypatch.setattr(shading, "flattened", lambda s: s.images)

    from perfmoco.config import Config
    from perfmoco.metrics import compose_displacement
    from perfmoco.phantom import generate_phantom
    from perfmoco.pipeline import stack_locations

    cfg = Config()
    ph = generate_phantom(seed=11691, motion="breathing", vendor="b")
    s = ph.study.slices[1]
    mc = MotionCorrector.load(device="cpu", config=cfg.moco)
    r = mc.correct(s, lv=stack_locations(ph.study, cfg)[1])
    res = compose_displacement(r.displacement, ph.truth["s1_displacement"])
    i = r.reference_index
    at = np.stack(np.mgrid[0:res.shape[2], 0:res.shape[3]]).astype(float) + res[i]
    myo = ndimage.map_coordinates((ph.truth["s1_labels"] == 8).astype(float), at, order=0) > 0
    resid = (res[:, :, myo] - res[i][:, myo][None]).mean(2) * np.asarray(s.pixel_spacing_mm)
    sig = np.asarray(s.images, float)[:, myo].mean(1)
    n = int(np.argmax(sig > sig[:3].mean() + 0.1 * (sig.max() - sig[:3].mean()))) - 1
    assert n >= 6
    assert np.hypot(*resid[:n].mean(0)) < 1.0


def test_a_block_whose_score_has_no_distinct_optimum_is_left(caplog):
    """13214 a's mid slice: its five pre-contrast frames show the heart with hardly an
    edge, and the gradient fields' score against the late mean rises gently along x to a
    plateau (0.03 of its range above its 2.5 mm ring). Even and odd frames agreed on that
    plateau's top and the block was moved 2.5 mm onto it, where the steps before had left
    it 0.7 mm off (after: 2.0 mm); mutual information, asked instead, found a plateau too
    and went 5 mm. No distinct optimum, no move."""
    import logging

    from perfmoco.config import Config
    from perfmoco.metrics import compose_displacement
    from perfmoco.phantom import generate_phantom
    from perfmoco.pipeline import stack_locations

    cfg = Config()
    ph = generate_phantom(seed=13214, motion="breathing", vendor="a")
    s = ph.study.slices[1]
    mc = MotionCorrector.load(device="cpu", config=cfg.moco)
    with caplog.at_level(logging.INFO, logger="perfmoco.moco.baseline"):
        r = mc.correct(s, lv=stack_locations(ph.study, cfg)[1])
    res = compose_displacement(r.displacement, ph.truth["s1_displacement"])
    i = r.reference_index
    myo = ph.truth["s1_labels"] == 8
    resid = (res[:, :, myo] - res[i][:, myo][None]).mean(2) * np.asarray(s.pixel_spacing_mm)
    assert np.hypot(*resid[:5].mean(0)) < 1.0
    assert "no distinct optimum" in caplog.text


def test_a_block_far_off_is_found_and_the_frames_still_with_it_follow():
    """The exact-corrected phantom slice of the test above with its frames before the LV's
    bolus (the block ends before the RV's) moved by 19 mm (beyond twice
    ``baseline_max_mm``, as a deep breather's block: 11991 a, mid slice, 16.9 mm): the
    third search finds the block's move, and the frames between the block and the LV's
    bolus, which sit with it, follow it (before: they were left where they were)."""
    from perfmoco.phantom import generate_phantom, warp

    ph = generate_phantom(seed=10335, motion="breathing", vendor="b")
    s = ph.study.slices[1]
    exact = warp(np.asarray(s.images, np.float32), ph.truth["s1_inverse_displacement"])
    lv = exact[:, ph.truth["s1_labels"] == 7].mean(axis=1)
    rise = (lv - lv[:5].mean()) / (lv.max() - lv[:5].mean())
    t, k = exact.shape[0], int(np.argmax(rise >= 0.2))  # the LV's bolus
    px = 19.0 / s.pixel_spacing_mm[0]
    move = np.zeros((t, 2, *exact.shape[1:]), np.float32)
    move[:k, 0] = px
    images = torch.from_numpy(warp(exact, move))
    eye = torch.eye(2, 3, dtype=torch.float64).expand(t, -1, -1)
    centre = tuple(float(v) for v in np.argwhere(ph.truth["s1_labels"] == 7).mean(axis=0))
    lo, hi = float(images.min()), float(images.max())
    moved, found = align_baseline_full_fov(images, eye, centre, s.pixel_spacing_mm, (lo, hi),
                                           MocoConfig())
    assert found.applied and 6 <= found.n_frames < k
    err_mm = (moved[:k, 0, 2].numpy() + px) * s.pixel_spacing_mm[0]
    assert np.max(np.abs(err_mm)) < 1.0  # the block and its followers
    assert np.allclose(moved[k:].numpy(), eye[k:].numpy())  # the frames on the anatomy stay


def test_a_short_block_takes_its_margin_frame():
    assert [block_length(n) for n in range(7)] == [0, 2, 3, 4, 4, 5, 6]


def _short_phantom_block(move_px, *, aif: bool = False):
    """A breathing phantom slice with the exact correction, cut to start two frames
    before its block's margin frame (a scan started shortly before the bolus), those
    three frames then moved by ``move_px``: ``(images, found n, pixel spacing)``."""
    from perfmoco.phantom import generate_phantom, warp

    ph = generate_phantom(seed=10335, motion="breathing", vendor="b")
    key, s = ("aif", ph.study.aif) if aif else ("s1", ph.study.slices[1])
    exact = warp(np.asarray(s.images, np.float32), ph.truth[f"{key}_inverse_displacement"])
    eye = torch.eye(2, 3, dtype=torch.float64).expand(exact.shape[0], -1, -1)
    centre = tuple(float(v) for v in np.argwhere(ph.truth[f"{key}_labels"] == 7).mean(axis=0))
    rng = (float(exact.min()), float(exact.max()))
    _, full = align_baseline_full_fov(torch.from_numpy(exact), eye, centre, s.pixel_spacing_mm,
                                      rng, MocoConfig(), aif=aif)
    exact = exact[full.n_frames - 2:]
    move = np.zeros((exact.shape[0], 2, *exact.shape[1:]), np.float32)
    move[:3, 0], move[:3, 1] = move_px
    return torch.from_numpy(warp(exact, move)), centre, s.pixel_spacing_mm, rng


def test_a_short_pre_contrast_block_is_moved_where_both_similarities_agree():
    """Two pre-contrast frames and the margin frame, 2.6 mm off: no halves to compare, the
    gradient fields' offset is taken where mutual information's agrees with it.  On fresh
    phantoms cut to start five dynamics before the AIF's bolus (13089-13094 a/b) the first
    five frames of the high-resolution slices sat 1.56 mm off the reference on average
    after the correction without this, 0.85 mm with it."""
    images, centre, spacing, rng = _short_phantom_block((0.9, -0.6))
    eye = torch.eye(2, 3, dtype=torch.float64).expand(images.shape[0], -1, -1)
    moved, found = align_baseline_full_fov(images, eye, centre, spacing, rng, MocoConfig())
    assert found.applied and found.n_frames == 3
    err_mm = (moved[:3, :, 2].numpy() + (0.9, -0.6)) * np.asarray(spacing)
    assert np.hypot(*err_mm.T).max() < 0.7
    torch.testing.assert_close(moved[3:], eye[3:])


def test_a_short_block_the_similarities_place_apart_is_left(monkeypatch):
    import perfmoco.moco.baseline as bl

    offsets = {"ngf": torch.tensor([2.0, 0.0], dtype=torch.float64) / bl.FINE_SPACING_MM,
               "mi": torch.tensor([-1.0, 1.0], dtype=torch.float64) / bl.SPACING_MM}
    monkeypatch.setattr(bl, "_block_search",
                        lambda crop, disc, n, n_late, spacing, sim, *a, **k:
                        (offsets[sim], "", offsets[sim]))
    fine = lambda: ("fine", None, None)  # noqa: E731
    why = bl._short_block(fine, None, None, "coarse", 2, 8, MocoConfig(), "s")
    assert isinstance(why, str) and "apart" in why
    offsets["mi"] = torch.tensor([1.0, 0.5], dtype=torch.float64) / bl.SPACING_MM  # 1.1 mm off
    d, spacing, geo = bl._short_block(fine, None, None, "coarse", 2, 8, MocoConfig(), "s")
    assert (spacing, geo) == (bl.FINE_SPACING_MM, "fine") and torch.equal(d, offsets["ngf"])


def test_the_aif_slices_short_block_is_left_to_follow_a_tissue_slice():
    images, centre, spacing, rng = _short_phantom_block((0.3, -0.2), aif=True)
    eye = torch.eye(2, 3, dtype=torch.float64).expand(images.shape[0], -1, -1)
    moved, found = align_baseline_full_fov(images, eye, centre, spacing, rng, MocoConfig(),
                                           aif=True)
    assert not found.applied and found.reason == "too few pre-contrast frames"
    assert torch.equal(moved, eye)
