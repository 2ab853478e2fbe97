"""Phantom variants as other sites and patients present them: heart size, tight field of view."""

from __future__ import annotations

import numpy as np
import pytest
from phantom_common import MYO, prefix
from scipy import ndimage

from perfmoco.phantom import generate_phantom
from perfmoco.phantom.fov import fov_corner


def test_heart_scale_makes_the_heart_larger_and_nothing_else():
    """A larger heart: the LV myocardium's area grows with the square of the scale and
    its ring's mean radius with the scale; the body, timing and MBF draws stay the same."""
    small, big = (generate_phantom(seed=3, motion="none", n_dynamics=12, heart_scale=h)
                  for h in (1.0, 1.3))
    for k in ("s0", "s1", "s2"):
        a, b = (p.truth[f"{k}_labels"] == MYO for p in (small, big))
        assert 1.3**2 * 0.85 < b.sum() / a.sum() < 1.3**2 * 1.15

        def ring_radius(m):
            yx = np.argwhere(m)
            return np.linalg.norm(yx - yx.mean(axis=0), axis=1).mean()

        assert 1.3 * 0.93 < ring_radius(b) / ring_radius(a) < 1.3 * 1.07
    for key in ("fermi_tau0_s", "healthy_mbf", "s0_times", "noise_sd"):
        np.testing.assert_array_equal(small.truth[key], big.truth[key])
    assert small.study.slices[0].shape == big.study.slices[0].shape


def test_slice_delays_move_only_their_slices_bolus():
    """Slices whose bolus delays truly differ: the apical myocardium's curve arrives later
    by the delay given, the basal slice and the AIF slice stay as they were."""
    base, late = (generate_phantom(seed=3, motion="none", n_dynamics=40, slice_delays_s=d)
                  for d in (None, (0.0, 0.0, 0.6)))
    np.testing.assert_array_equal(late.truth["slice_delays_s"], [0.0, 0.0, 0.6])
    np.testing.assert_array_equal(base.truth["slice_delays_s"], 0.0)
    for k in ("s0", "aif"):
        np.testing.assert_array_equal(base.noise_free[k], late.noise_free[k])
    # the wall's core (its edge pixels hold some blood, whose bolus stays where it was)
    m = ndimage.binary_erosion(base.truth["s2_labels"] == MYO)
    t = base.truth["s2_times"] - base.truth["s2_times"][0]

    a, b = (p.noise_free["s2"][:, m].mean(1) for p in (base, late))
    shifts = np.arange(0.0, 1.21, 0.05)  # the late curve as the first one moved later
    misfit = [np.sum((b - np.interp(t - d, t, a)) ** 2) for d in shifts]
    assert shifts[int(np.argmin(misfit))] == pytest.approx(0.6, abs=0.1)
    with pytest.raises(ValueError, match="slice_delays_s"):
        generate_phantom(seed=3, slice_delays_s=(0.0, 3.0, 0.0))


@pytest.mark.parametrize("corner", ["top-right", "bottom-left"])
def test_fov_corner_cuts_close_to_the_heart_and_keeps_patient_positions(ph_a, corner):
    """A tight field of view as a site stores it: the heart 10 mm from two new edges,
    every truth array cut alike, and each kept pixel at the same patient position."""
    cut = fov_corner(ph_a, 10.0, corner)
    for s0, s1 in zip(ph_a.study.slices, cut.study.slices):
        p = prefix(s0)
        ys, xs = np.nonzero(ph_a.truth[f"{p}_myo_masks"].any(axis=0))
        m = int(round(10.0 / s0.pixel_spacing_mm[0]))
        ny, nx = s0.shape
        if corner == "top-right":
            y0, x0 = max(0, ys.min() - m), 0
            want = (ny - y0, min(nx, xs.max() + 1 + m))
        else:
            y0, x0 = 0, max(0, xs.min() - m)
            want = (min(ny, ys.max() + 1 + m), nx - x0)
        assert s1.shape == want
        np.testing.assert_array_equal(s1.images, s0.images[:, y0:y0 + want[0], x0:x0 + want[1]])
        assert s1.pd_images.shape[1:] == want
        for key in (f"{p}_myo_masks", f"{p}_displacement", f"{p}_labels"):
            assert cut.truth[key].shape[-2:] == want
        assert cut.noise_free[p].shape[-2:] == want
        for yx in ((3, 5), (want[0] - 1, want[1] - 2)):
            np.testing.assert_allclose(
                _patient_mm(s1.geometry, want, s1.pixel_spacing_mm, yx),
                _patient_mm(s0.geometry, (ny, nx), s0.pixel_spacing_mm, (yx[0] + y0, yx[1] + x0)),
                atol=1e-6)


def _patient_mm(geo, shape, spacing_mm, yx):
    """Patient position of pixel ``yx`` (MRD: ``position`` is the matrix's centre)."""
    off = [(v - (n - 1) / 2) * sp for v, n, sp in zip(yx, shape, spacing_mm)]
    return (np.asarray(geo.position) + off[0] * np.asarray(geo.phase_dir)
            + off[1] * np.asarray(geo.read_dir))
