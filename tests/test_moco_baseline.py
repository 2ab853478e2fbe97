"""Pre-contrast block alignment: contrast-invariant offset, bolus arrival, pipeline."""

import numpy as np
import pytest
import torch

from perfmoco.config import MocoConfig
from perfmoco.moco import networks
from perfmoco.moco.baseline import align_baseline_full_fov, baseline_length, block_offset
from perfmoco.moco.pipeline import MotionCorrector
from perfmoco.moco.similarity import gradient_alignment, gradient_images, noise_sd
from perfmoco.moco.synthetic import synthetic_series
from perfmoco.moco.transforms import identity_grid


def _heart(n=64, *, blood, myo, lung, shift=(0.0, 0.0), noise=0.0, seed=0):
    """A ring (myocardium) around a disc (blood) beside a dark lung, in a body."""
    g = identity_grid((n, n)).double()
    y, x = g[0] - 31.5 - shift[0], g[1] - 31.5 - shift[1]
    r = torch.hypot(y, x * 0.9)
    img = torch.full((n, n), 0.4, dtype=torch.float64)
    img[torch.hypot(y + 4, x - 16) < 9] = lung
    img[(r >= 8) & (r < 12)] = myo
    img[r < 8] = blood
    gen = torch.Generator().manual_seed(seed)
    img = img + noise * torch.randn(n, n, generator=gen, dtype=torch.float64)
    # a little blur, as a real point-spread function
    k = torch.tensor([0.25, 0.5, 0.25], dtype=torch.float64)
    img = torch.nn.functional.conv2d(img[None, None], (k[:, None] * k[None])[None, None],
                                     padding=1)[0, 0]
    return img.float()


@pytest.mark.parametrize("similarity", ["mi", "ngf"])
@pytest.mark.parametrize("shift", [(1.3, -0.7), (-2.2, 0.4)])
def test_block_offset_finds_a_shift_between_different_contrasts(shift, similarity):
    # pre-contrast: blood darker than myocardium; late: blood much brighter (inverted edge)
    moving = _heart(blood=0.30, myo=0.45, lung=0.05, shift=shift, noise=0.02, seed=1)
    fixed = _heart(blood=0.95, myo=0.60, lung=0.05, noise=0.02, seed=2)
    disc = (identity_grid((64, 64)) - 31.5).norm(dim=0) < 24
    # ngf: told the images' noise (each pixel's SD before the point-spread blur)
    noise = (0.02, 0.02) if similarity == "ngf" else None
    d, interior = block_offset(moving, fixed, disc, max_px=4.0, similarity=similarity,
                               noise=noise)
    assert interior
    # moving(p + d) = fixed(p): the anatomy of ``moving`` sits at +shift; on these
    # near-binary images (a 3-tap blur) the gradients' interpolation costs ngf some
    # precision (0.23 px here; on phantom frames it is the finer one, test below)
    np.testing.assert_allclose(d.numpy(), shift, atol=0.2 if similarity == "mi" else 0.3)


def test_gradient_alignment_is_one_for_parallel_edges_of_either_polarity():
    img = _heart(blood=0.95, myo=0.60, lung=0.05)
    g = gradient_images(img)
    assert g.shape == (2, 64, 64)
    # a ramp's central differences are its slope; the edge rows and columns are 0
    ramp = gradient_images(torch.arange(5.0)[None].expand(4, -1) * 0.5)
    np.testing.assert_allclose(ramp[1, :, 1:-1].numpy(), 0.5)
    np.testing.assert_allclose(ramp[1, :, [0, -1]].numpy(), 0.0)
    np.testing.assert_allclose(ramp[0].numpy(), 0.0)
    edges = g.reshape(2, -1)[:, g.reshape(2, -1).norm(dim=0) > 0.05]  # on the edges only
    same = gradient_alignment(edges[None], edges, 0.0, 0.0)
    flipped = gradient_alignment(-3.0 * edges[None], edges, 0.0, 0.0)  # inverted, stronger
    np.testing.assert_allclose(same.numpy(), 1.0, atol=1e-6)
    np.testing.assert_allclose(flipped.numpy(), 1.0, atol=1e-6)
    across = torch.stack([edges[1], -edges[0]])  # every edge turned by 90 degrees
    assert float(gradient_alignment(across[None], edges, 0.0, 0.0)) < 1e-6
    # eps: a gradient small against it counts little (a flat region's noise)
    weak = gradient_alignment(0.01 * edges[None], edges, 0.1, 0.0)
    assert float(weak) < 0.02
    # the noise of an image, robustly from its neighbour differences (edges are few)
    gen = torch.Generator().manual_seed(0)
    flat = 0.5 + 0.03 * torch.randn(64, 64, generator=gen)
    disc = (identity_grid((64, 64)) - 31.5).norm(dim=0) < 24
    assert noise_sd(flat, disc) == pytest.approx(0.03, rel=0.1)
    noisy_heart = (_heart(blood=0.95, myo=0.60, lung=0.05)
                   + 0.03 * torch.randn(64, 64, generator=gen))
    assert noise_sd(noisy_heart, disc) == pytest.approx(0.03, rel=0.3)  # edges: a little more
    with pytest.raises(ValueError, match="similarity"):
        block_offset(img, img, torch.ones(64, 64, dtype=torch.bool), max_px=2.0,
                     similarity="ncc")


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


def test_block_offset_says_when_the_optimum_is_outside_the_range():
    moving = _heart(blood=0.30, myo=0.45, lung=0.05, shift=(6.0, 0.0))
    fixed = _heart(blood=0.95, myo=0.60, lung=0.05)
    disc = (identity_grid((64, 64)) - 31.5).norm(dim=0) < 24
    _, interior = block_offset(moving, fixed, disc, max_px=3.5)
    assert not interior
    # twice the coarse grid's reach at the same step finds it, inside the wider range
    d, interior = block_offset(moving, fixed, disc, max_px=3.5, reach=2)
    assert interior
    np.testing.assert_allclose(d.numpy(), (6.0, 0.0), atol=0.2)


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


def test_fast_mutual_information_ranks_shifts_as_monai_does():
    from monai.losses import GlobalMutualInformationLoss
    from scipy.stats import spearmanr

    from perfmoco.moco.similarity import mutual_information

    fixed = _heart(blood=0.95, myo=0.60, lung=0.05, noise=0.02, seed=2)
    disc = (identity_grid((64, 64)) - 31.5).norm(dim=0) < 24
    moving = torch.stack([
        _heart(blood=0.30, myo=0.45, lung=0.05, shift=(0.5 * k, -0.3 * k), noise=0.02, seed=k)
        for k in range(-4, 5)
    ])[:, disc]
    ours = mutual_information(moving, fixed[disc], 32).numpy()

    def unit(v):
        return (v - v.min(-1, keepdim=True).values) / (
            v.max(-1, keepdim=True).values - v.min(-1, keepdim=True).values)

    loss = GlobalMutualInformationLoss(num_bins=32, reduction="none")
    theirs = -loss(unit(moving)[:, None], unit(fixed[disc])[None, None].expand(9, 1, -1))
    assert int(np.argmax(ours)) == 4  # no shift
    assert spearmanr(ours, theirs.reshape(-1).numpy()).statistic > 0.9


def test_coarse_search_finds_a_large_move_to_the_reference_frame():
    """Frames 10-16 mm from the reference, some before the bolus (other contrast):
    the exhaustive search finds each translation (pull-back, full-FOV pixels)."""
    from perfmoco.moco.coarse import centre_shift_mm, coarse_translations

    shifts = [(7.0, -5.0), (-6.0, 4.5), (5.5, 6.0), (0.0, 0.0)]  # pixels of 2 mm; last: ref
    pre = [True, False, False, False]
    gen = torch.Generator().manual_seed(5)
    frames = []
    for sh, p in zip(shifts, pre):
        img = _heart(blood=0.40 if p else 0.95, myo=0.46 if p else 0.62, lung=0.05, shift=sh)
        frames.append(img + 0.01 * torch.randn(img.shape, generator=gen))
    images = torch.stack(frames)
    maps, found = coarse_translations(images, torch.tensor([0, 1, 2]), 3, (31.5, 31.5),
                                      (2.0, 2.0), (0.0, 1.0), max_mm=25.0, radius_mm=40.0)
    assert found.all()
    np.testing.assert_allclose(maps[:, :, :2].numpy(), np.eye(2)[None].repeat(3, 0), atol=1e-9)
    np.testing.assert_allclose(maps[:, :, 2].numpy(), shifts[:3], atol=0.5)
    # how far each map puts the LV centre from where the reference's map puts it
    eye = torch.eye(2, 3, dtype=torch.float64)[None]
    all_maps = torch.cat([maps, eye])
    np.testing.assert_allclose(centre_shift_mm(all_maps, 3, (31.5, 31.5), (2.0, 2.0)).numpy(),
                               2.0 * np.hypot(*np.array(shifts).T), atol=1.0)


def test_coarse_search_looks_twice_as_far_for_a_frame_beyond_its_range():
    """A deep breather's frame 30 mm from the reference (11772 a's apical slice: the
    reference frame at one end of the breath, frames at the other 21-30 mm away). The
    search's first range (+-25 mm a side) ends short of it; it is searched again over
    twice the range, and found."""
    from perfmoco.moco.coarse import coarse_translations

    shifts = [(2.0, 15.0), (-3.0, 5.0), (0.0, 0.0)]  # pixels of 2 mm; last: ref
    gen = torch.Generator().manual_seed(5)
    frames = []
    for sh in shifts:
        img = _heart(blood=0.95, myo=0.62, lung=0.05, shift=sh, n=96)
        frames.append(img + 0.01 * torch.randn(img.shape, generator=gen))
    maps, found = coarse_translations(torch.stack(frames), torch.tensor([0, 1]), 2,
                                      (31.5, 31.5), (2.0, 2.0), (0.0, 1.0), max_mm=25.0,
                                      radius_mm=40.0)
    assert found.all()
    np.testing.assert_allclose(maps[:, :, 2].numpy(), shifts[:2], atol=0.5)


def test_a_search_is_trusted_where_it_extends_the_networks_move():
    """The network under-reaches large moves (11772 a: 3.4 px where the frame was
    14.9 px off); a search the other way, or much further still, is not used."""
    from perfmoco.moco.coarse import agrees

    net = torch.tensor([[1.1, 3.2], [1.1, 3.2], [1.1, 3.2], [1.1, 3.2], [1.1, 3.2]])
    found = torch.tensor([[-2.8, 14.6], [1.0, 3.0], [-1.1, -3.2], [6.0, -1.0], [5.0, 20.0]])
    assert agrees(net, found).tolist() == [True, True, False, False, False]


def test_mutual_information_is_that_of_the_linear_parzen_joint_histogram():
    from perfmoco.moco.similarity import mutual_information

    rng = np.random.default_rng(4)
    fixed = rng.uniform(0, 1, 300)
    moving = np.stack([fixed ** 2 + 0.1 * rng.normal(size=300), rng.uniform(-1, 2, 300)])
    bins = 8

    def weights(v):  # independent: each value split between its two nearest bin centres
        x = (v - v.min()) / (v.max() - v.min()) * (bins - 1)
        w = np.zeros((v.size, bins))
        for i, xi in enumerate(x):
            lo = min(int(np.floor(xi)), bins - 2)
            w[i, lo], w[i, lo + 1] = 1 - (xi - lo), xi - lo
        return w

    want = []
    for m in moving:
        joint = weights(m).T @ weights(fixed) / fixed.size
        outer = joint.sum(1, keepdims=True) * joint.sum(0, keepdims=True)
        nz = joint > 0
        want.append(float((joint[nz] * np.log(joint[nz] / outer[nz])).sum()))
    got = mutual_information(torch.from_numpy(moving), torch.from_numpy(fixed), bins).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-10)
    assert got[0] > got[1]


def test_offsets_of_many_frames_at_once_are_those_of_each_frame():
    from perfmoco.moco.baseline import block_offsets

    fixed = _heart(blood=0.95, myo=0.60, lung=0.05, noise=0.02, seed=2)
    shifts = [(1.3, -0.7), (-2.2, 0.4), (0.0, 2.9), (6.0, 0.0)]
    moving = torch.stack([_heart(blood=0.30, myo=0.45, lung=0.05, shift=s, noise=0.02, seed=k)
                          for k, s in enumerate(shifts)])
    disc = (identity_grid((64, 64)) - 31.5).norm(dim=0) < 24
    d, interior = block_offsets(moving, fixed, disc, max_px=4.0, chunk=3)
    for k in range(len(shifts)):
        dk, ik = block_offset(moving[k], fixed, disc, max_px=4.0)
        np.testing.assert_array_equal(d[k].numpy(), dk.numpy())
        assert bool(interior[k]) == ik
    np.testing.assert_allclose(d[:3].numpy(), shifts[:3], atol=0.2)
    assert interior[:3].all() and not interior[3]


def test_smoothing_keeps_a_flat_image_and_takes_the_noise_down():
    from perfmoco.moco.baseline import _smooth

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
    monkeypatch.setattr(bl, "_block_search", lambda *a, **k: (mi, "" if mi is not None else "x"))
    d, spacing, geo = bl._confirmed((ngf, bl.FINE_SPACING_MM, "fine"), None, None, "coarse",
                                    10, 8, MocoConfig(), "s")
    assert (spacing, geo) == ((bl.FINE_SPACING_MM, "fine") if taken == "ngf"
                              else (bl.SPACING_MM, "coarse"))
    assert torch.equal(d, ngf if taken == "ngf" else mi)


def test_a_pre_contrast_block_with_few_edges_lands_on_the_anatomy():
    """11691 b's mid slice: before the bolus its heart shows almost no edges (blood and
    myocardium alike), and the gradient fields of the unsmoothed crops found the block
    7.5 mm off each way (mean residual over the true myocardium 5.1 mm; mutual
    information 0.2 mm). Smoothed first, and a move that large checked by mutual
    information, it lands within 1 mm."""
    from scipy import ndimage

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
