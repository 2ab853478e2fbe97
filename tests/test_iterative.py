"""Iterative (elastix) baseline: conventions against known translations."""

import builtins

import numpy as np
import pytest
from scipy import ndimage

from perfmoco.moco import iterative
from perfmoco.moco.transforms import warp
from perfmoco.study import SliceSeries

needs_itk = pytest.mark.skipif(
    not iterative.is_available(),
    reason="itk-elastix is not installed (pip install perfmoco[iterative])",
)


def _scene(n=64, seed=1):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:n, 0:n]
    tex = ndimage.gaussian_filter(rng.random((n, n)), 2) * 0.6
    body = ((yy - n / 2) ** 2 / (0.44 * n) ** 2 + (xx - n / 2) ** 2 / (0.4 * n) ** 2 < 1) * 0.4
    lv = (yy - 30) ** 2 + (xx - 34) ** 2 < 8**2
    myo = ((yy - 30) ** 2 + (xx - 34) ** 2 < 12**2) & ~lv
    return tex + body, lv, myo


def _moving_series(t=16, n=64, seed=1):
    """Frames whose content is moved by known shifts (``frame(p) = scene(p - s)``)."""
    rng = np.random.default_rng(seed)
    bg, lv, myo = _scene(n, seed)
    curve = np.exp(-((np.arange(t) - 4) ** 2) / 6)
    shifts = rng.uniform(-4, 4, (t, 2))
    frames = [
        ndimage.shift(
            bg + lv * (0.2 + 1.5 * curve[i]) + myo * (0.3 + 0.4 * curve[max(i - 1, 0)]),
            shifts[i], order=3, mode="nearest",
        )
        for i in range(t)
    ]
    im = np.stack(frames).astype(np.float32) + rng.normal(0, 0.01, (t, n, n)).astype(np.float32)
    pd = ndimage.shift(bg + lv * 0.8 + myo * 0.7, shifts[0], order=3, mode="nearest")
    series = SliceSeries(
        images=im, times_s=np.arange(t) * 0.8, pixel_spacing_mm=(2.0, 2.0),
        pd_images=pd[None].astype(np.float32),
    )
    return series, shifts


def test_missing_itk_gives_install_hint(monkeypatch):
    real_import = builtins.__import__

    def fake_import(name, *args, **kwargs):
        if name == "itk" or name.startswith("itk."):
            raise ImportError("No module named 'itk'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", fake_import)
    monkeypatch.delitem(__import__("sys").modules, "itk", raising=False)
    assert not iterative.is_available()
    series, _ = _moving_series(t=12)
    hint = r"pip install perfmoco\[iterative\]"
    with pytest.raises(iterative.IterativeUnavailableError, match=hint):
        iterative.correct_iterative(series)


@pytest.mark.iterative
@needs_itk
def test_elastix_convention_known_translation_on_a_crop():
    itk = iterative._itk()
    itk.MultiThreaderBase.SetGlobalDefaultNumberOfThreads(1)
    maps = iterative.load_parameter_maps()
    bg, lv, myo = _scene(96)
    fixed = bg + lv + 0.5 * myo
    s = np.array([3.0, -5.0])  # content moved by +s
    moving = ndimage.shift(fixed, s, order=3, mode="nearest")
    # fixed: a crop with its full-FOV origin; moving: the full FOV
    box = (slice(12, 76), slice(20, 84))
    reg = iterative._register(
        itk, iterative._image(itk, fixed[box], (12, 20)), iterative._image(itk, moving),
        maps["affine"],
    )
    h = iterative._affine_matrix(reg)
    d_affine = iterative._affine_field(h[None], fixed.shape)[0]
    d_tfx = iterative._field(itk, reg, fixed.shape)
    # pull-back: corrected(p) = moving(p + d) = fixed(p + d - s) -> d = s, in (y, x)
    np.testing.assert_allclose(d_affine[:, 20:70, 25:80].mean(axis=(1, 2)), s, atol=0.3)
    np.testing.assert_allclose(d_tfx, d_affine, atol=1e-3)  # ITK's own field agrees, full FOV


@pytest.mark.iterative
@needs_itk
def test_bspline_field_known_translation():
    itk = iterative._itk()
    itk.MultiThreaderBase.SetGlobalDefaultNumberOfThreads(1)
    maps = iterative.load_parameter_maps()
    bg, lv, myo = _scene(64)
    fixed = bg + lv + 0.5 * myo
    s = np.array([-1.5, 1.0])
    moving = ndimage.shift(fixed, s, order=3, mode="nearest")
    reg = iterative._register(
        itk, iterative._image(itk, fixed), iterative._image(itk, moving), maps["bspline"]
    )
    d = iterative._field(itk, reg, fixed.shape)
    np.testing.assert_allclose(d[:, 16:48, 16:48].mean(axis=(1, 2)), s, atol=0.3)


@pytest.mark.iterative
@needs_itk
def test_correct_iterative_recovers_known_translations():
    series, shifts = _moving_series(t=16)
    res = iterative.correct_iterative(series, threads=1)
    t, ny, nx = series.images.shape
    assert res.displacement.shape == (t, 2, ny, nx)
    assert res.displacement.dtype == np.float32
    assert res.corrected.shape == (t, ny, nx)
    assert res.reference_index == t - 10
    assert res.qc.shape == (t,) and res.qc.dtype == bool
    want = shifts - shifts[res.reference_index]  # aligned to the reference frame
    got = res.displacement[:, :, 20:44, 20:44].mean(axis=(2, 3))
    np.testing.assert_allclose(got, want, atol=0.35)
    # the reference frame keeps its acquired geometry (the PCA steps would move it too)
    np.testing.assert_allclose(got[res.reference_index], 0.0, atol=0.05)
    # the originals are resampled once, with the returned field
    np.testing.assert_allclose(res.corrected, warp(series.images, res.displacement), atol=1e-5)
    # PD frame: affine to the corrected first dynamic, which sits at the reference position
    assert res.pd_displacement.shape == (1, 2, ny, nx)
    np.testing.assert_allclose(
        res.pd_displacement[0, :, 20:44, 20:44].mean(axis=(1, 2)), want[0], atol=0.5
    )


def test_iterative_fields_are_anchored_to_the_reference_frame_with_the_pd_frames():
    """The PCA steps move every frame, the reference too; that shared move is undone
    in the dynamics' and the PD frames' fields alike."""
    ny, nx, t = 48, 52, 4
    yy, xx = np.mgrid[0:ny, 0:nx].astype(np.float32)
    th = np.deg2rad(3.0)
    cy, cx = 24.0, 26.0
    # shared pull-back map: rotation about the centre plus a (1.2, 1.2) px shift
    ry = np.cos(th) * (yy - cy) - np.sin(th) * (xx - cx) + cy + 1.2 - yy
    rx = np.sin(th) * (yy - cy) + np.cos(th) * (xx - cx) + cx + 1.2 - xx
    shared = np.stack([ry, rx])[None].astype(np.float32)
    disp = np.repeat(shared, t, axis=0)
    disp[1] += np.array([0.8, -0.5], np.float32)[:, None, None]  # frame 1 really moved
    pd = shared.copy()
    d, p = iterative._anchored(disp, pd, 2, (cy, cx), (2.0, 2.0))
    inner = (slice(None), slice(None), slice(12, -12), slice(12, -12))
    np.testing.assert_allclose(d[inner][2], 0.0, atol=0.02)
    np.testing.assert_allclose(p[inner][0], 0.0, atol=0.02)
    moved = d[inner][1].mean(axis=(1, 2))
    assert np.hypot(*moved) == pytest.approx(np.hypot(0.8, -0.5), abs=0.05)


@needs_itk
def test_itk_loads_without_its_swig_deprecation_notes():
    """``--method iterative`` printed "sys:1: DeprecationWarning: builtin type swigvarlink
    has no __module__ attribute" at every exit (Python's note on itk's SWIG types, given at
    shutdown, after the import's own filter had ended)."""
    import subprocess
    import sys

    run = subprocess.run(
        [sys.executable, "-W", "default", "-c",
         "import numpy as np; from perfmoco.moco.iterative import _itk; itk = _itk(); "
         "itk.image_from_array(np.zeros((8, 8), np.float32)); itk.ParameterObject.New(); "
         "print('loaded')"],
        capture_output=True, text=True, timeout=300, check=False)
    assert run.returncode == 0 and "loaded" in run.stdout
    assert "swig" not in run.stderr, run.stderr
