"""Geometry of the motion correction: exact maths against known answers."""

import numpy as np
import pytest
import torch
from monai.networks.blocks import Warp

from perfmoco.moco.augment import random_affine
from perfmoco.moco.decompose import pca_reference, rpca
from perfmoco.moco.preprocess import histogram_equalise, robust_range
from perfmoco.moco.transforms import (
    CropGeometry,
    affine_crop_to_full,
    affine_to_displacement,
    compose_affine,
    compose_displacements,
    dense_crop_to_full,
    sample,
    warp,
)


def blob(shape, centre, sigma=6.0):
    yy, xx = np.mgrid[: shape[0], : shape[1]].astype(np.float64)
    return np.exp(-((yy - centre[0]) ** 2 + (xx - centre[1]) ** 2) / (2 * sigma**2))


def rotation_about(centre, angle, shift=(0.0, 0.0)):
    c, s = np.cos(angle), np.sin(angle)
    r = np.array([[c, -s], [s, c]])
    t = np.asarray(centre) - r @ np.asarray(centre) + np.asarray(shift)
    return np.concatenate([r, t[:, None]], axis=1)


def test_warp_known_translation_is_pull_back():
    shape = (64, 72)
    img = blob(shape, (30.0, 36.0))[None].astype(np.float32)
    d = np.zeros((1, 2) + shape, np.float32)
    d[:, 0], d[:, 1] = 2.5, -1.25  # corrected(p) = img(p + d)
    out = warp(img, d)
    expect = blob(shape, (30.0 - 2.5, 36.0 + 1.25))
    assert out.shape == (1, *shape) and out.dtype == np.float32
    assert np.abs(out[0] - expect).max() < 0.01  # linear interpolation of a smooth blob
    # integer shift: exact
    d[:, 0], d[:, 1] = 3.0, -2.0
    np.testing.assert_allclose(warp(img, d)[0, 10:50, 10:60], img[0, 13:53, 8:58], atol=1e-6)


def test_warp_matches_monai_warp():
    rng = np.random.default_rng(0)
    img = rng.random((3, 40, 48)).astype(np.float32)
    d = (3 * rng.standard_normal((3, 2, 40, 48))).astype(np.float32)
    ours = warp(img, d)
    theirs = Warp(mode="bilinear", padding_mode="border")(
        torch.from_numpy(img)[:, None], torch.from_numpy(d)
    )[:, 0].numpy()
    np.testing.assert_allclose(ours, theirs, atol=1e-5)


def test_warp_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="displacement"):
        warp(np.zeros((2, 8, 8), np.float32), np.zeros((2, 2, 8, 9), np.float32))


def test_affine_to_displacement_and_rotation_recovery():
    shape = (80, 80)
    m = rotation_about((39.5, 39.5), 0.3, shift=(2.0, -3.0))[None]
    d = affine_to_displacement(m, shape)
    yy, xx = np.mgrid[:80, :80]
    p = np.stack([yy, xx]).astype(np.float64)
    expect = np.einsum("pq,qyx->pyx", m[0, :, :2], p) + m[0, :, 2, None, None] - p
    np.testing.assert_allclose(d[0], expect, atol=1e-4)
    # moving = fixed o phi^-1; correcting with phi recovers fixed
    fixed = blob(shape, (35.0, 44.0), sigma=7)[None].astype(np.float32)
    inv = np.linalg.inv(np.vstack([m[0], [0, 0, 1]]))[:2][None]
    moving = warp(fixed, affine_to_displacement(inv, shape))
    recovered = warp(moving, d)
    assert np.abs(recovered - fixed)[0, 10:70, 10:70].max() < 0.02


def test_compose_equals_warping_twice_for_affine_fields():
    shape = (64, 64)
    m1 = rotation_about((31.5, 31.5), 0.1, (1.5, -2.0))[None]
    m2 = rotation_about((31.5, 31.5), -0.05, (-0.7, 1.1))[None]
    d1 = affine_to_displacement(m1, shape)
    d2 = affine_to_displacement(m2, shape)
    comp = compose_displacements(d1, d2)
    m12 = compose_affine(torch.tensor(m1), torch.tensor(m2)).numpy()
    exact = affine_to_displacement(m12, shape)
    inner = (slice(None), slice(None), slice(8, 56), slice(8, 56))
    np.testing.assert_allclose(comp[inner], exact[inner], atol=1e-3)  # bilinear is exact for affine
    img = blob(shape, (30.0, 34.0), sigma=8)[None].astype(np.float32)
    twice = warp(warp(img, d1), d2)
    once = warp(img, comp)
    assert np.abs(twice - once)[0, 8:56, 8:56].max() < 0.01


def test_crop_geometry_round_trip_and_affine_mapping_exact():
    geo = CropGeometry.from_spacing(
        (70.3, 81.7), 32, crop_spacing_mm=1.8, pixel_spacing_mm=(2.4, 1.5)
    )
    grid = geo.grid()
    assert grid.shape == (2, 32, 32)
    q = geo.to_crop(grid.double())
    np.testing.assert_allclose(q[0].numpy(), np.arange(32)[:, None].repeat(32, 1), atol=1e-4)
    # centre of the crop sits at centre_yx
    centre = grid[:, 15:17, 15:17].mean(dim=(1, 2)).numpy()
    np.testing.assert_allclose(centre, (70.3, 81.7), atol=1e-4)
    # an affine found on the crop, mapped to full FOV: H M H^-1 p == H(M(H^-1 p))
    mc = torch.tensor(rotation_about((15.5, 15.5), 0.2, (1.0, -2.0))[None])
    mf = affine_crop_to_full(mc, geo)[0]
    p = torch.tensor([[10.0, 50.0], [120.0, 3.0]], dtype=torch.float64)  # (2 coords, 2 points)
    lhs = mf[:, :2] @ p + mf[:, 2:]
    qp = geo.to_crop(p)
    mq = mc[0, :, :2] @ qp + mc[0, :, 2:]
    h = geo.homogeneous()
    rhs = h[:2, :2] @ mq + h[:2, 2:]
    np.testing.assert_allclose(lhs.numpy(), rhs.numpy(), atol=1e-9)


def test_dense_crop_to_full_scales_and_zeroes_outside():
    geo = CropGeometry((40.0, 50.0), 24, (1.5, 0.5))
    d = torch.zeros(1, 2, 24, 24)
    d[:, 0], d[:, 1] = 2.0, -4.0  # crop pixels
    full = dense_crop_to_full(d, geo, (90, 100), taper_px=0)
    assert full.shape == (1, 2, 90, 100)
    np.testing.assert_allclose(full[0, :, 40, 50].numpy(), (3.0, -2.0), atol=1e-5)  # x scale
    assert float(full[0, :, 5, 5].abs().max()) == 0.0
    tapered = dense_crop_to_full(d, geo, (90, 100), taper_px=4)
    np.testing.assert_allclose(tapered[0, :, 40, 50].numpy(), (3.0, -2.0), atol=1e-5)
    assert float(tapered[0, 0, 58, 50].abs()) < 1e-6  # at and beyond the crop border: 0
    assert 0 < float(tapered[0, 0, 56, 50]) < 3.0  # inside the fade band


def test_sample_zero_padding_outside_fov():
    img = torch.ones(1, 10, 10)
    coords = torch.full((1, 2, 2, 2), -5.0)
    assert float(sample(img, coords, padding="zeros").abs().max()) == 0.0
    assert float(sample(img, coords, padding="border").min()) == 1.0


def test_histogram_equalise_is_monotone_and_flat():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(3, 64, 64, generator=g) ** 3
    y = histogram_equalise(x)
    assert y.shape == x.shape and float(y.min()) >= 0 and float(y.max()) <= 1
    for t in range(3):
        order = torch.argsort(x[t].flatten())
        assert bool((torch.diff(y[t].flatten()[order]) >= -1e-6).all())
        assert abs(float(y[t].mean()) - 0.5) < 0.03  # equalised: roughly uniform


def test_robust_range_ignores_outliers():
    x = torch.rand(4, 32, 32)
    x[0, 0, 0] = 1e6
    lo, hi = robust_range(x)
    assert 0 <= lo < hi <= 1.0


def test_pca_and_rpca_recover_low_rank():
    g = torch.Generator().manual_seed(1)
    low = (torch.randn(30, 2, generator=g) @ torch.randn(2, 400, generator=g)).reshape(30, 20, 20)
    np.testing.assert_allclose(pca_reference(low, components=2).numpy(), low.numpy(), atol=1e-4)
    sparse = (torch.rand(30, 20, 20, generator=g) < 0.03).float() * 8
    l_hat, s_hat = rpca(low + sparse)
    assert float((l_hat - low).norm() / low.norm()) < 0.01
    assert float((s_hat - sparse).norm() / sparse.norm()) < 0.02


def test_random_affine_ranges():
    g = torch.Generator().manual_seed(0)
    m = random_affine(200, 128, max_shift_px=20, max_rotation_rad=0.8, p=0.5, generator=g)
    ang = torch.atan2(m[:, 1, 0], m[:, 0, 0])
    assert float(ang.abs().max()) <= 0.8 + 1e-6
    ident = (ang == 0).float().mean()
    assert 0.3 < float(ident) < 0.7  # p = 0.5
