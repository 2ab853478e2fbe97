"""quantify_curves (``perfmoco quantify``): known MBF from synthetic [Gd] curves, the
cavity's blood taken out of a ring's pixels, and bad input."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from perfmoco.quant import quantify_curves
from perfmoco.quant.model import mbf_to_flow, tissue_curve


def test_quantify_curves_known_mbf_and_errors():
    dt, n = 0.6, 60
    t = np.arange(n) * dt
    s = np.clip((t - 5) / 4, 0, None)
    aif = 4.0 * s**3 * np.exp(3 * (1 - s))
    mbf = np.array([[1.0, 2.0], [3.0, 0.0]])
    tis = tissue_curve(aif, dt_s=dt, flow_per_s=mbf_to_flow(mbf), tau0_s=4.0, k_per_s=1.0,
                       delay_s=0.6)
    mask = mbf > 0
    out = quantify_curves(np.moveaxis(tis, -1, 0), aif, dt_s=dt, mask=mask)
    assert out.shape == (2, 2) and out[1, 1] == 0
    np.testing.assert_allclose(out[mask], mbf[mask], rtol=0.05)
    half = quantify_curves(np.moveaxis(tis, -1, 0), aif, dt_s=dt, mask=mask, hematocrit=0.5)
    np.testing.assert_allclose(half[mask], mbf[mask] / 2, rtol=0.05)
    with pytest.raises(ValueError, match=r"\(T, Y, X\)"):
        quantify_curves(tis[0], aif, dt_s=dt)
    with pytest.raises(ValueError, match="aif_gd"):
        quantify_curves(np.moveaxis(tis, -1, 0), aif[:-1], dt_s=dt)
    bad = np.moveaxis(tis, -1, 0).copy()
    bad[3, 0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        quantify_curves(bad, aif, dt_s=dt)
    with pytest.raises(ValueError, match="hematocrit"):
        quantify_curves(np.moveaxis(tis, -1, 0), aif, dt_s=dt, hematocrit=1.2)
    with pytest.raises(ValueError, match="flat"):
        quantify_curves(np.moveaxis(tis, -1, 0), np.zeros(n), dt_s=dt)
    # curves a research user may hand in that are not [Gd] in mmol/l, or no mask
    good = np.moveaxis(tis, -1, 0)
    for args, kw, match in (
            ((good[:0], aif[:0]), {}, "holds no data"),
            ((good[:, :0], aif), {}, "holds no data"),
            ((good * 1e-4, aif * 1e-4), {}, r"not \[Gd\] in mmol/l"),  # mol/l
            ((good * 1e300, aif * 1e300), {}, r"not \[Gd\] in mmol/l"),
            ((good * 1e3, aif), {}, r"not \[Gd\] in mmol/l"),
            ((good.astype(complex), aif), {}, "complex"),
            ((good, aif), {"mask": np.where(mask, 1.0, np.nan)}, "0/1 only"),
            ((good, aif), {"mask": np.where(mask, 1.0, 0.5)}, "0/1 only")):
        with pytest.raises(ValueError, match=match):
            quantify_curves(*args, dt_s=dt, **kw)
    np.testing.assert_array_equal(  # a mask of 0/1 numbers reads as its bools
        quantify_curves(good, aif, dt_s=dt, mask=mask.astype(np.uint8)), out)



def _ring_grid():
    """A gamma-variate AIF on a 0.6 s grid and a 40 x 40 grid about a cavity's centre."""
    dt, n = 0.6, 70
    t = np.arange(n) * dt
    s = np.clip((t - 5) / 4, 0, None)
    aif = 5.0 * s**3 * np.exp(3 * (1 - s))
    yy, xx = np.mgrid[:40, :40] - 19.5
    return dt, aif, yy, xx, np.hypot(yy, xx)


def test_quantify_curves_takes_the_cavity_blood_out_of_endocardial_pixels():
    """A myocardial ring around the LV cavity; the pixels touching the cavity also
    hold 10-30 % of its blood, the AIF itself.  Fitted with a blood fraction (the
    default) they read the true MBF; without it, tens of % high."""
    dt, aif, yy, xx, r = _ring_grid()
    ring, cavity = (r >= 7) & (r < 12), r < 7
    rim = ndimage.binary_dilation(cavity, np.ones((3, 3), bool)) & ring
    true = 2.0 + 1.5 * (xx > 0)  # ml/min/g, two halves
    vb = np.where(rim, 0.1 + 0.2 * (yy > 0), 0.0)
    gd = tissue_curve(aif, dt_s=dt, flow_per_s=mbf_to_flow(true), tau0_s=5.0, k_per_s=0.9,
                      delay_s=0.5) + vb[..., None] * aif
    gd = np.moveaxis(gd, -1, 0)
    err_with = np.abs(quantify_curves(gd, aif, dt_s=dt, mask=ring) / true - 1)
    err_without = np.abs(quantify_curves(gd, aif, dt_s=dt, mask=ring, spillover=False) / true - 1)
    assert np.nanmedian(err_without[rim]) > 0.2
    assert np.nanmedian(err_with[rim]) < 0.03
    assert np.nanmedian(err_with[ring & ~rim]) < 0.03
    # a mask without a hole has no cavity: nothing changes
    blob = r < 12
    np.testing.assert_array_equal(quantify_curves(gd, aif, dt_s=dt, mask=blob),
                                  quantify_curves(gd, aif, dt_s=dt, mask=blob, spillover=False))


def test_quantify_curves_takes_blood_in_every_pixel_of_a_ring_out_of_its_start():
    """Every pixel of a ring holds 8 % blood (a thin or slightly misaligned wall): the mean
    curve's fit takes it out as blood volume, so the pixels (which start from it and keep
    its shape within a factor 2) read near the true flow (59 % high before); without
    blood nothing changes."""
    dt, aif, yy, xx, r = _ring_grid()
    ring = (r >= 7) & (r < 12)
    noise = np.random.default_rng(0).normal(0.0, 0.02, (aif.size, *r.shape))
    for vb, most in ((0.08, 0.3), (0.0, 0.03)):
        gd = tissue_curve(aif, dt_s=dt, flow_per_s=mbf_to_flow(2.5), tau0_s=5.0, k_per_s=0.9,
                          delay_s=0.5) + vb * aif
        gd = np.broadcast_to(gd, (*r.shape, aif.size))
        err = quantify_curves(np.moveaxis(gd, -1, 0) + noise, aif, dt_s=dt, mask=ring) / 2.5 - 1
        assert abs(np.nanmedian(err[ring])) < most, (vb, np.nanmedian(err[ring]))


def test_quantify_curves_rim_in_acquired_pixels():
    """[Gd] maps delivered at twice the acquired matrix (each acquired pixel shown as
    2 x 2): the cavity's blood reaches two *acquired* pixels into the wall, so with
    ``interpolation=2`` both layers fit their blood fraction; taken as acquired
    pixels (1) the second layer reads tens of % high."""
    dt, aif, _, _, r = _ring_grid()
    ring, cavity = (r >= 7) & (r < 13), r < 7
    d = ndimage.distance_transform_cdt(~cavity, metric="chessboard")
    vb = np.where(ring & (d == 1), 0.2, np.where(ring & (d == 2), 0.1, 0.0))
    gd = tissue_curve(aif, dt_s=dt, flow_per_s=mbf_to_flow(np.full(r.shape, 2.5)), tau0_s=5.0,
                      k_per_s=0.9, delay_s=0.5) + vb[..., None] * aif
    up = np.ones((2, 2))
    gd2 = np.stack([np.kron(f, up) for f in np.moveaxis(gd, -1, 0)])
    ring2, second = np.kron(ring, up).astype(bool), np.kron(ring & (d == 2), up).astype(bool)
    err = {f: np.abs(quantify_curves(gd2, aif, dt_s=dt, mask=ring2, interpolation=f) / 2.5 - 1)
           for f in (1.0, 2.0)}
    assert np.nanmedian(err[1.0][second]) > 0.1
    assert np.nanmedian(err[2.0][second]) < 0.03
    assert np.nanmedian(err[2.0][ring2]) < np.nanmedian(err[1.0][ring2])
    with pytest.raises(ValueError, match="interpolation must be 0"):
        quantify_curves(gd2, aif, dt_s=dt, mask=ring2, interpolation=0.5)
