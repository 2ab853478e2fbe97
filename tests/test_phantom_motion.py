"""Phantom motion against its truth: warps, inverses, masks, magnitudes, sliding."""

from __future__ import annotations

import numpy as np
import pytest
from phantom_common import MYO, PREFIXES, prefix, pull_back
from scipy import ndimage

from perfmoco.phantom import LABELS, generate_phantom

# ---------------------------------------------------------------- motion truth


@pytest.mark.parametrize("fixture", ["ph_a", "ph_b"])
def test_warping_motion_free_reproduces_moved(fixture, request):
    ph = request.getfixturevalue(fixture)
    for s in ph.study.slices:
        p = prefix(s)
        tr = ph.truth
        clean = ph.noise_free[p]
        warped = pull_back(tr[f"{p}_motion_free"], tr[f"{p}_displacement"])
        scale = float(clean.max())
        assert np.abs(warped - clean).max() < 1e-4 * scale
        # the noisy images are the clean ones plus Rician noise of the stated SD
        sd = float(tr["aif_noise_sd" if p == "aif" else "noise_sd"])
        bright = clean > 10 * sd
        resid = (s.images - clean)[bright]
        assert abs(resid.std() / sd - 1.0) < 0.1
        assert abs(resid.mean()) < 0.1 * sd
        pd_clean = ph.noise_free[f"{p}_pd"]
        assert np.abs(s.pd_images - pd_clean)[pd_clean > 10 * sd].std() < 1.2 * sd


def test_cubic_warp_moves_the_same_anatomy_without_the_bilinear_blur():
    """``warp_order=3`` moves each frame by a cubic B-spline: the same study and truth,
    the frames the motion-free images warped with order 3; bilinear warping smooths a
    frame by an amount that depends on its sub-pixel shift, the B-spline much less."""
    from perfmoco.phantom import warp

    lin = generate_phantom(seed=11, n_dynamics=12)
    cub = generate_phantom(seed=11, n_dynamics=12, warp_order=3)
    tr = cub.truth
    for key in ("s1_displacement", "s1_labels", "s1_mbf"):
        np.testing.assert_array_equal(tr[key], lin.truth[key])
    np.testing.assert_allclose(cub.noise_free["s1"],
                               warp(tr["s1_motion_free"], tr["s1_displacement"], order=3),
                               atol=1e-3 * float(tr["s1_motion_free"].max()))
    # sharpness (mean squared gradient) relative to the motion-free frames
    def sharp(im):
        return float(np.mean(np.diff(im, axis=-1) ** 2))
    ref = sharp(tr["s1_motion_free"])
    assert sharp(lin.noise_free["s1"]) < 0.97 * ref < sharp(cub.noise_free["s1"])


@pytest.mark.parametrize("fixture", ["ph_a", "ph_b"])
def test_inverse_displacement(fixture, request):
    ph = request.getfixturevalue(fixture)
    for p in PREFIXES:
        d = ph.truth[f"{p}_displacement"]
        inv = ph.truth[f"{p}_inverse_displacement"]
        ny, nx = d.shape[2:]
        iy, ix = np.mgrid[0:ny, 0:nx].astype(np.float64)
        errs = []
        for t in range(0, d.shape[0], 5):
            cy, cx = iy + inv[t, 0], ix + inv[t, 1]
            back = np.stack([ndimage.map_coordinates(d[t, c], [cy, cx], order=1,
                                                     mode="nearest") for c in range(2)])
            errs.append(np.hypot(*(inv[t] + back))[8:-8, 8:-8])
        errs = np.concatenate([e.ravel() for e in errs])
        assert np.percentile(errs, 99) < 0.25 and errs.max() < 1.0


@pytest.mark.parametrize("fixture", ["ph_a", "ph_b"])
def test_myo_masks_follow_displacement(fixture, request):
    ph = request.getfixturevalue(fixture)
    for p in PREFIXES:
        lab = ph.truth[f"{p}_labels"]
        d = ph.truth[f"{p}_displacement"]
        masks = ph.truth[f"{p}_myo_masks"]
        ref = pull_back(np.broadcast_to((lab == MYO).astype(np.float32), masks.shape), d)
        clear = np.abs(ref - 0.5) > 1e-3  # exact ties may round either way
        np.testing.assert_array_equal(masks[clear], ref[clear] > 0.5)
        assert masks.sum((1, 2)).min() > 0.7 * (lab == MYO).sum()


def _centroid_excursion_mm(ph, k):
    masks = ph.truth[f"s{k}_myo_masks"]
    spacing = ph.truth["spacing_mm"]
    peak = int(ph.truth["lv_peak_dynamic"]) - 1
    win = masks[max(peak - 7, 0): peak + 8]
    yy, xx = np.mgrid[0:masks.shape[1], 0:masks.shape[2]]
    n = win.sum((1, 2))
    c = np.stack([(win * yy).sum((1, 2)) / n, (win * xx).sum((1, 2)) / n], 1) * spacing
    return float(np.max(np.linalg.norm(c[:, None] - c[None], axis=-1)))


def test_motion_magnitude(ph_a, ph_b, ph_none):
    # real first-pass LV excursions: 10.9 mm median, 27.5 mm at most
    for ph in (ph_a, ph_b):
        exc = [_centroid_excursion_mm(ph, k) for k in range(3)]
        assert 2.0 < max(exc) < 32.0
    for p in PREFIXES:
        assert not np.any(ph_none.truth[f"{p}_displacement"])
        assert not np.any(ph_none.truth[f"{p}_inverse_displacement"])
        assert not np.any(ph_none.truth[f"{p}_pd_displacement"])
    assert _centroid_excursion_mm(ph_none, 1) == 0.0


@pytest.mark.parametrize("fixture", ["ph_a", "ph_b"])
def test_displacement_does_not_fold(fixture, request):
    ph = request.getfixturevalue(fixture)
    for p in PREFIXES:
        d = ph.truth[f"{p}_displacement"].astype(np.float64)
        jac = ((1 + np.gradient(d[:, 0], axis=1)) * (1 + np.gradient(d[:, 1], axis=2))
               - np.gradient(d[:, 0], axis=2) * np.gradient(d[:, 1], axis=1))
        assert jac.min() > 0.3


def test_chest_wall_moves_less_than_heart(ph_a):
    lab = ph_a.truth["s1_labels"]
    mag = np.hypot(*np.moveaxis(ph_a.truth["s1_displacement"], 1, 0))  # (T, Y, X)
    heart = mag[:, lab == MYO].mean(1)
    wall = mag[:, lab == LABELS["chest_wall"]].mean(1)
    big = heart > np.percentile(heart, 75)
    assert np.all(wall[big] < 0.6 * heart[big])


def test_aif_slice_moves_with_the_base(ph_a):
    """Same physical motion (mm) at the same anatomical point of both grids."""
    tr = ph_a.truth
    lab0 = tr["s0_labels"]
    yy, xx = np.nonzero(lab0 == MYO)
    cy, cx = yy.mean(), xx.mean()  # LV centre, high-res pixels
    sp0, spa = float(tr["spacing_mm"][0]), float(tr["aif_spacing_mm"][0])
    n0, na = lab0.shape[0], tr["aif_labels"].shape[0]
    ay = (cy - (n0 - 1) / 2) * sp0 / spa + (na - 1) / 2
    ax = (cx - (n0 - 1) / 2) * sp0 / spa + (na - 1) / 2
    d0 = tr["s0_displacement"][:, :, int(round(cy)), int(round(cx))] * sp0
    da = np.stack([ndimage.map_coordinates(tr["aif_displacement"][t, c], [[ay], [ax]], order=1)[0]
                   for t in range(d0.shape[0]) for c in range(2)]).reshape(-1, 2) * spa
    assert np.abs(d0 - da).max() < 1.5  # mm


def test_mistrigger_deforms_few_frames():
    ph = generate_phantom(seed=3, motion="mistrigger", n_dynamics=30)
    mis = ph.truth["mistriggered"]
    assert 1 <= mis.sum() <= 6
    area = ph.truth["s1_myo_masks"].sum((1, 2)).astype(float)
    lv = ndimage.binary_fill_holes(ph.truth["s1_myo_masks"][0]).sum() - area[0]
    assert lv > 0
    # the cavity of a mistriggered frame is clearly smaller
    cav = np.array([ndimage.binary_fill_holes(m).sum() for m in ph.truth["s1_myo_masks"]]) - area
    assert cav[mis].max() < 0.85 * np.median(cav[~mis])


# ---------------------------------------------------------------- kinetics and anatomy truth
