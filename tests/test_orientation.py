"""Display orientation from the MRD geometry: networks and AHA segments for any layout."""

import dataclasses
import itertools
import warnings

import numpy as np
import pytest

from perfmoco.anatomy import find_blood_pools
from perfmoco.config import QuantConfig
from perfmoco.metrics._common import warp_series
from perfmoco.moco.pipeline import WEIGHTS_DIR, MotionCorrector
from perfmoco.moco.preprocess import locate_lv
from perfmoco.orientation import (
    Orientation,
    canonical_orientation,
    is_mirrored,
    orientation_from_anatomy,
)
from perfmoco.quant import quantify_study
from perfmoco.study import SliceGeometry


def _neg(v):
    return tuple(-x for x in v)


# stored layouts of a standard-display slice: (image op, matching geometry op)
LAYOUTS = {
    "fliplr": (lambda a: a[..., ::-1],
               lambda g: dataclasses.replace(g, read_dir=_neg(g.read_dir))),
    "flipud": (lambda a: a[..., ::-1, :],
               lambda g: dataclasses.replace(g, phase_dir=_neg(g.phase_dir))),
    "transpose": (lambda a: np.swapaxes(a, -1, -2),
                  lambda g: dataclasses.replace(g, read_dir=g.phase_dir, phase_dir=g.read_dir)),
    "rot90": (lambda a: np.rot90(a, 1, axes=(-2, -1)),
              lambda g: dataclasses.replace(g, read_dir=g.phase_dir, phase_dir=_neg(g.read_dir))),
    "rot180": (lambda a: a[..., ::-1, ::-1],
               lambda g: dataclasses.replace(g, read_dir=_neg(g.read_dir),
                                             phase_dir=_neg(g.phase_dir))),
}
MIRRORED = {"fliplr": True, "flipud": True, "transpose": True, "rot90": False, "rot180": False}


def _stored(series, name):
    img_op, geo_op = LAYOUTS[name]
    return series.replace(images=np.ascontiguousarray(img_op(series.images)),
                          pd_images=np.ascontiguousarray(img_op(series.pd_images)),
                          geometry=geo_op(series.geometry))


def test_phantom_slices_are_on_the_standard_display(ph_a):
    for s in ph_a.study.slices:
        assert canonical_orientation(s.geometry).identity
        assert is_mirrored(s.geometry) is False


@pytest.mark.parametrize("name", sorted(LAYOUTS))
def test_any_stored_layout_is_brought_back_exactly(ph_a, name):
    s = ph_a.study.highres[0]
    st = _stored(s, name)
    o = canonical_orientation(st.geometry)
    assert np.array_equal(o.apply(st.images), s.images)
    assert np.array_equal(o.undo_images(s.images), st.images)
    assert o.proper is not MIRRORED[name]
    assert is_mirrored(st.geometry) is MIRRORED[name]


def test_unknown_or_non_short_axis_geometry_leaves_images_alone():
    assert canonical_orientation(None).identity
    assert is_mirrored(None) is None
    axial = SliceGeometry()  # the default header: read x, phase y, an axial slice
    assert canonical_orientation(axial).identity
    assert is_mirrored(axial) is None
    broken = SliceGeometry(read_dir=(1.0, 0.0, 0.0), phase_dir=(1.0, 0.0, 0.0))
    assert canonical_orientation(broken).identity


@pytest.mark.parametrize("k", range(4))
def test_without_geometry_a_rotated_slice_is_turned_back_by_its_blood_pools(ph_a, k):
    """No geometry: the RV-left-of-LV rule undoes any 90-degree rotation exactly."""
    s = ph_a.study.highres[1]
    rotated = np.ascontiguousarray(np.rot90(s.images, k, axes=(-2, -1)))
    pools = find_blood_pools(rotated, times_s=s.times_s, spacing_mm=s.pixel_spacing_mm)
    o = orientation_from_anatomy(pools.lv_centre, np.argwhere(pools.rv_mask).mean(axis=0))
    assert o.proper
    assert np.array_equal(o.apply(rotated), s.images)


def test_anatomy_orientation_turns_the_rv_left_and_never_mirrors():
    for rv, lv in [((20, 10), (20, 30)), ((5, 30), (20, 30)), ((20, 50), (20, 30)),
                   ((35, 28), (20, 30)), ((12, 14), (20, 30))]:
        o = orientation_from_anatomy(lv, rv)
        assert o.proper
        img = np.zeros((50, 60))
        img[rv], img[lv] = 2.0, 1.0
        out = o.apply(img)
        (ry, rx), (ly, lx) = np.argwhere(out == 2.0)[0], np.argwhere(out == 1.0)[0]
        assert lx - rx >= abs(ly - ry)  # the RV is left of the LV, within 45 degrees
    assert orientation_from_anatomy((20, 30), (20, 30)).identity
    assert orientation_from_anatomy((20, 30), (np.nan, 3.0)).identity


@pytest.mark.parametrize("orient", [Orientation(*f) for f in
                                    itertools.product((False, True), repeat=3)])
def test_undone_field_moves_stored_pixels_as_the_standard_field_moves_standard_ones(orient):
    rng = np.random.default_rng(1)
    yy, xx = np.mgrid[0:24, 0:30].astype(np.float32)
    img = np.sin(yy / 3.0) + np.cos(xx / 4.0) + 0.1 * yy * xx / 30.0
    stored = img[None]  # a stored (1, 24, 30) frame
    std = orient.apply(stored)
    d_std = rng.uniform(-2, 2, (1, 2, 1, 1)).astype(np.float32) * np.ones(
        (1, 2, *std.shape[1:]), np.float32)
    d_std[:, 0] += 0.05 * np.arange(std.shape[1], dtype=np.float32)[:, None]  # not uniform
    want = orient.undo_images(warp_series(std, d_std))
    got = warp_series(stored, orient.undo_field(d_std))
    inner = (slice(None), slice(4, -4), slice(4, -4))  # away from the clamped border
    np.testing.assert_allclose(got[inner], want[inner], atol=1e-4)


@pytest.mark.skipif(not (WEIGHTS_DIR / "dense.pt").is_file(), reason="no shipped weights")
def test_motion_correction_does_not_depend_on_the_stored_layout(ph_a):
    mc = MotionCorrector.load(device="cpu")
    s = ph_a.study.highres[1]
    ref = mc.correct(s)
    img_op, _ = LAYOUTS["fliplr"]
    got = mc.correct(_stored(s, "fliplr"))
    np.testing.assert_allclose(got.corrected, img_op(ref.corrected), atol=1e-3 * s.images.max())
    want_d = img_op(ref.displacement).copy()
    want_d[:, 1] *= -1.0  # x components change sign with the flip
    np.testing.assert_allclose(got.displacement, want_d, atol=1e-3)
    assert got.reference_index == ref.reference_index
    assert np.array_equal(got.qc, ref.qc)
    # an LV location given in the stored layout (process_study's stack check) is mapped too
    loc = locate_lv(s)
    stored_loc = loc._replace(centre_yx=(loc.centre_yx[0], s.shape[1] - 1 - loc.centre_yx[1]))
    given = mc.correct(_stored(s, "fliplr"), lv=stored_loc)
    np.testing.assert_allclose(given.displacement, want_d, atol=1e-3)


@pytest.mark.skipif(not (WEIGHTS_DIR / "dense.pt").is_file(), reason="no shipped weights")
def test_motion_correction_of_a_rotated_slice_without_geometry(ph_a):
    """A bare series (no geometry) stored rotated by 90 degrees is corrected as the
    standard one: turned by its blood pools (before: Dice 0.84 instead of 0.90)."""
    mc = MotionCorrector.load(device="cpu")
    s = ph_a.study.highres[1]
    ref = mc.correct(s)
    rot = s.replace(images=np.ascontiguousarray(np.rot90(s.images, 1, axes=(-2, -1))),
                    pd_images=np.ascontiguousarray(np.rot90(s.pd_images, 1, axes=(-2, -1))),
                    geometry=None)
    got = mc.correct(rot)
    np.testing.assert_allclose(got.corrected, np.rot90(ref.corrected, 1, axes=(-2, -1)),
                               atol=1e-3 * s.images.max())
    # a field rotated with its image: (dy, dx) -> (-dx, dy)
    want = np.rot90(ref.displacement, 1, axes=(-2, -1))
    want = np.stack([-want[:, 1], want[:, 0]], axis=1)
    np.testing.assert_allclose(got.displacement, want, atol=1e-3)


def test_aha_segments_follow_a_mirrored_layout(ph_none):
    ph = ph_none
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mirrored = ph.study.replace_slices([_stored(s, "fliplr") for s in ph.study.slices])
        r = quantify_study(mirrored, config=QuantConfig())
    img_op, _ = LAYOUTS["fliplr"]
    agree = []
    for sl, aha in r.aha.items():
        truth = img_op(ph.truth[f"s{sl}_aha"])
        both = (aha > 0) & (truth > 0)
        agree.append(np.mean(aha[both] == truth[both]))
    assert np.mean(agree) >= 0.9  # the target; the unmirrored layout reaches it too
