"""Zero-filled (interpolated) series: the factor read from the spectrum, and MBF on them."""

from __future__ import annotations

import dataclasses
import warnings

import numpy as np
import pytest
from scipy import ndimage

from perfmoco.config import ConfigError, QuantConfig, load_config
from perfmoco.quant import core_pixels, quantify_study
from perfmoco.quant.resolution import interpolation_factor
from perfmoco.study import SliceRole

phantom = pytest.importorskip("perfmoco.phantom")


def zero_fill(images, factor: float, *, drop_side: bool = False):
    """Interpolate frames by zero-filling their k-space to ``factor`` times the matrix.

    ``drop_side`` also zeroes a quarter of k-space on one side of ky first (as
    partial-Fourier acquisition does), without interpolating when ``factor`` is 1.
    """
    a = np.asarray(images, np.float64)
    k = np.fft.fftshift(np.fft.fft2(a), axes=(-2, -1))
    y, x = a.shape[-2:]
    ny, nx = int(round(y * factor)), int(round(x * factor))
    out = np.zeros(a.shape[:-2] + (ny, nx), complex)
    oy, ox = (ny - y) // 2, (nx - x) // 2
    out[..., oy:oy + y, ox:ox + x] = k
    if drop_side:
        out[..., : oy + y // 4, :] = 0
    img = np.fft.ifft2(np.fft.ifftshift(out, axes=(-2, -1))) * (ny * nx) / (y * x)
    return np.abs(img).astype(np.float32)


def _key(s):
    return "aif" if s.role is SliceRole.AIF else f"s{s.slice_index}"


@pytest.fixture(scope="module")
def ph():
    return phantom.generate_phantom(seed=1, motion="none")


def test_factor_read_from_the_spectrum(ph):
    for s in ph.study.slices:
        assert interpolation_factor(s.images) == 1.0  # noisy, as acquired
        assert interpolation_factor(ph.noise_free[_key(s)]) == 1.0  # smooth, as acquired
        assert interpolation_factor(s.pd_images) == 1.0
        assert interpolation_factor(zero_fill(s.images, 2.0)) == pytest.approx(2.0, abs=0.1)
        assert interpolation_factor(zero_fill(s.images, 1.5)) == pytest.approx(1.5, abs=0.1)
        # a one-sided gap in k-space (partial Fourier) is not interpolation
        assert interpolation_factor(zero_fill(s.images, 1.0, drop_side=True)) == 1.0
    assert interpolation_factor(np.full((3, 32, 32), 5.0)) == 1.0  # flat
    assert interpolation_factor(np.full((3, 4, 4), 1.0)) == 1.0  # too small
    assert interpolation_factor(np.full((3, 32, 32), np.nan)) == 1.0


def test_core_pixels_in_acquired_pixels():
    yy, xx = np.mgrid[:80, :80]
    r = np.hypot(yy - 40, xx - 40)
    blood, myo = r < 12, (r >= 12) & (r < 24)
    labels = np.where(xx < 40, 1, 2)
    one = core_pixels(myo, blood, labels, 1.0)
    to_blood = ndimage.distance_transform_edt(~blood)
    np.testing.assert_array_equal(one, ndimage.binary_erosion(myo) & (to_blood >= 2.0))
    two = core_pixels(myo, blood, labels, 2.0)
    assert two.sum() < one.sum() and not (two & ~one).any()
    assert to_blood[two].min() >= 4.0
    # a wall too thin for the deeper core keeps the shallower one in that segment only
    thin = myo & ~((labels == 2) & (r >= 15))
    got = core_pixels(thin, blood, labels, 2.0)
    assert (got & (labels == 2)).sum() == (core_pixels(thin, blood, labels, 1.0)
                                           & (labels == 2)).sum()
    away = xx < 36  # segment 1 away from the cut
    np.testing.assert_array_equal(got & away, two & away)


def test_mbf_on_a_zero_filled_study(ph, monkeypatch):
    """Maps of a noise-free study delivered at twice its acquired matrix: with the
    distances in acquired pixels the core behind the study's delay fit keeps off the
    blood and the delay is right (0.431 s, truth 0.457 s); in display pixels it reads
    early (0.348 s; 0.135 s before the delay came from the core's interior).  The
    segments and pixels are within the targets either way: since the delay fit keeps
    off the RV (``pixels.delay_core``) an early delay no longer costs the display-pixel
    setting its segments (0.079 before), other biases of this phantom offsetting it."""
    import perfmoco.quant.grouped as grouped

    delays = []
    study_fit = grouped._study_delay_fit

    def record(*args, **kwargs):
        fit = study_fit(*args, **kwargs)
        delays.append(float(fit.delay[0]))
        return fit

    monkeypatch.setattr(grouped, "_study_delay_fit", record)
    tr = ph.truth
    study = ph.study.replace_slices([
        s.replace(images=zero_fill(ph.noise_free[_key(s)], 2.0),
                  pd_images=zero_fill(ph.noise_free[_key(s) + "_pd"], 2.0),
                  pixel_spacing_mm=tuple(v / 2.0 for v in s.pixel_spacing_mm))
        for s in ph.study.slices])
    pix, seg = {}, {}
    for setting in (0.0, 1.0):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            r = quantify_study(study, config=dataclasses.replace(QuantConfig(),
                                                                 interpolation=setting))
        errs = []
        for s, m in r.myocardium.items():
            t_mbf = tr[f"s{s}_mbf"]
            idx = [np.minimum(np.round(np.arange(n * 2) / 2.0).astype(int), n - 1)
                   for n in t_mbf.shape]  # the truth on the fine grid (nearest)
            fine, lab = t_mbf[np.ix_(*idx)], tr[f"s{s}_labels"][np.ix_(*idx)]
            both = m & (lab == 8)
            errs += list(np.abs(r.mbf_maps[s][both] - fine[both]) / fine[both])
        pix[setting] = np.median(errs)
        seg[setting] = np.median([abs(row["median"] - np.median(
            tr[f"s{row['slice']}_mbf"][tr[f"s{row['slice']}_aha"] == row["segment"]]))
            for row in r.segments])
    truth = float(tr["fermi_delay_s"])
    assert abs(delays[0] - truth) < 0.05 and delays[1] < truth - 0.08, (delays, truth)
    assert max(pix.values()) < 0.045
    assert max(seg.values()) < 0.1


def test_interpolation_setting_is_checked():
    assert load_config(overrides={"quant.interpolation": "2"}).quant.interpolation == 2.0
    with pytest.raises(ConfigError, match="quant.interpolation must be 0"):
        load_config(overrides={"quant.interpolation": "0.5"})


def test_factor_from_the_mrd_header(small_study):
    """A study whose high-resolution slices were zero-filled to twice the encoded
    matrix: the header's encodedSpace carries it through an MRD round trip, and it
    decides the factor even where the images show no band edge (here noise-free
    and flat); an encoding finer than the images is not trusted."""
    from perfmoco.io.mrd import images_to_study, study_to_images
    from perfmoco.io.mrd_header import build_header, parse_header
    from perfmoco.quant.resolution import series_interpolation

    hr = [s.replace(acquired_spacing_mm=tuple(2.0 * v for v in s.pixel_spacing_mm))
          for s in small_study.highres]
    study = small_study.replace_slices([*hr, small_study.aif])
    header = build_header(study)
    assert parse_header(header).encoding[0].encodedSpace.matrixSize.x == 20  # 40 / 2
    back = images_to_study(study_to_images(study), header)
    for s in back.highres:
        assert s.acquired_spacing_mm == pytest.approx(hr[0].acquired_spacing_mm)
        flat = s.replace(images=np.ones_like(s.images))
        assert series_interpolation(flat, 0.0) == pytest.approx(2.0)
        assert series_interpolation(flat, 1.0) == 1.0  # the setting wins
    assert series_interpolation(back.aif, 0.0) == 1.0  # its own encoding: as acquired
    finer = back.aif.replace(acquired_spacing_mm=(0.5, 0.5))
    assert series_interpolation(finer, 0.0) == interpolation_factor(finer.images) == 1.0


def test_pixel_distances_round_halves_up():
    """Distances scaled by a zero-filling factor round halves up, as a reader would: a
    blood pool's 2-acquired-pixel edge at a factor of 1.25 is 3 display pixels (Python's
    round takes 2.5 to 2, to the even neighbour)."""
    from perfmoco.quant.resolution import half_up
    from perfmoco.quant.signal import pools_and_edges

    assert [half_up(v) for v in (0.49, 0.5, 1.5, 2.5, 3.5, 4.0)] == [0, 1, 2, 3, 4, 4]
    pool = np.zeros((21, 21), bool)
    pool[10, 10] = True
    for scale, reach in ((1.0, 2), (1.25, 3), (1.75, 4)):  # 2.5 -> 3, 3.5 -> 4
        edge = pools_and_edges(pool, scale)
        assert edge[10].sum() == 2 * reach + 1, scale
