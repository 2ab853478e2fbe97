"""Translation search of whole frames and its similarities (mutual information, gradient
fields), and the coarse search built on it."""

import numpy as np
import pytest
import torch
from heart_common import heart as _heart

from perfmoco.moco.blocksearch import block_offset, peak_prominence
from perfmoco.moco.similarity import gradient_alignment, gradient_images, noise_sd
from perfmoco.moco.transforms import identity_grid


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
    from perfmoco.moco.blocksearch import block_offsets

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


@pytest.mark.parametrize("similarity", ["ngf", "mi"])
def test_an_optimum_on_a_ridge_of_the_score_does_not_stand_out(similarity):
    """A pre-contrast mean with no edge but a straight one (a chest wall): its score
    against the late heart is a ridge along that edge, and wherever the search stops on it
    the optimum stands out of its 2.5-px ring by nothing; the heart with its blood pool,
    ring and lung is placed at a clear peak."""
    y = identity_grid((64, 64))[0]
    wall = (y > 48).float() * 0.4 + 0.2
    fixed = _heart(blood=0.95, myo=0.60, lung=0.05) * (y <= 48) + wall * (y > 48)
    place = _heart(blood=0.30, myo=0.45, lung=0.05, shift=(1.3, -0.7)) * (y <= 48)
    disc = (identity_grid((64, 64)) - 31.5).norm(dim=0) < 24
    kw = dict(max_px=6.0, similarity=similarity,
              noise=(0.01, 0.01) if similarity == "ngf" else None)
    share = {}
    for name, moving in (("ridge", wall), ("place", place + wall * (y > 48))):
        d, _ = block_offset(moving, fixed, disc, **kw)
        share[name] = peak_prominence(moving, fixed, disc, d, ring_px=2.5, **kw)
    assert share["ridge"] < 0.01
    assert share["place"] > 0.15
