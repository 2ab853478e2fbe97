"""AHA segment geometry on a hand-made ring; territories, levels, segment table."""

from __future__ import annotations

import numpy as np
import pytest

from perfmoco.quant.segments import (
    aha_segments,
    display_angle,
    segment_table,
    slice_levels,
    territory_of,
)

CY, CX = 40.0, 40.0


def _ring():
    yy, xx = np.mgrid[0:80, 0:80]
    r = np.hypot(yy - CY, xx - CX)
    return (r >= 12) & (r < 20)


def _point(angle_deg, radius=16.0):
    a = np.deg2rad(angle_deg)
    return int(round(CY - radius * np.sin(a))), int(round(CX + radius * np.cos(a)))


@pytest.mark.parametrize(
    ("level", "expect"),
    [
        # display angle relative to the anterior insertion (counter-clockwise) -> segment
        ("basal", {30: 2, 90: 3, 150: 4, 210: 5, 270: 6, 330: 1}),
        ("mid", {30: 8, 90: 9, 150: 10, 210: 11, 270: 12, 330: 7}),
        ("apical", {45: 14, 135: 15, 225: 16, 315: 13}),
    ],
)
@pytest.mark.parametrize("ant", [120.0, 35.0, 250.0])
def test_segments_on_hand_made_ring(level, expect, ant):
    ring = _ring()
    aha = aha_segments(ring, (CY, CX), ant, level=level)
    assert (aha[~ring] == 0).all()
    assert set(np.unique(aha[ring])) == set(expect.values())
    for rel, seg in expect.items():
        assert aha[_point(ant + rel)] == seg, (rel, seg)


def test_insertion_points_and_mirrored_display():
    ring = _ring()
    ins = np.array([_point(120.0, 20), _point(240.0, 20)], float)  # septum on the left
    by_points = aha_segments(ring, (CY, CX), ins, level="basal")
    by_angle = aha_segments(ring, (CY, CX), 120.0, level="basal")
    assert np.mean(by_points[ring] == by_angle[ring]) > 0.97
    assert by_points[_point(180.0)] in (2, 3)  # the septum lies between the insertions
    # a mirrored display (septum on the right): still 2, 3 between the insertion points
    mirrored = np.array([_point(60.0, 20), _point(300.0, 20)], float)
    aha = aha_segments(ring, (CY, CX), mirrored, level="basal")
    assert aha[_point(30.0)] == 2 and aha[_point(330.0)] == 3


def test_a_known_geometry_decides_the_direction_when_the_insertions_lie_opposite():
    """Apical insertions ~185 degrees apart (9965: 181): the points alone read it as
    mirrored; the geometry's answer, when there is one, wins."""
    ring = _ring()
    ins = np.array([_point(90.0, 20), _point(275.0, 20)], float)
    plain = aha_segments(ring, (CY, CX), ins, level="apical", mirrored=False)
    assert plain[_point(135.0)] == 14 and plain[_point(45.0)] == 13  # counter-clockwise
    guessed = aha_segments(ring, (CY, CX), ins, level="apical")
    assert guessed[_point(45.0)] == 14  # the points' test: clockwise (mirrored)
    flipped = aha_segments(ring, (CY, CX), ins, level="apical", mirrored=True)
    assert flipped[_point(45.0)] == 14 and flipped[_point(135.0)] == 13


def test_display_angle_convention():
    pts = np.array([[CY - 5, CX], [CY, CX - 5], [CY + 5, CX], [CY, CX + 5]])
    np.testing.assert_allclose(display_angle(pts, (CY, CX)), [90, 180, 270, 0])


def test_rectangular_pixels_keep_the_segments_angles_of_the_wall():
    """A round wall stored with 2 x 1 mm pixels (rows twice the columns' size: an ellipse
    on the pixel grid): each basal segment holds a sixth of the wall, and its boundaries
    lie at the patient's 60-degree angles, not the pixel grid's."""
    sy, sx = 2.0, 1.0
    yy, xx = np.mgrid[0:60, 0:120]
    cy, cx = 30.0, 60.0
    r = np.hypot((yy - cy) * sy, (xx - cx) * sx)  # mm
    ring = (r >= 24) & (r < 40)
    p = np.array([[cy - 16.0 / sy, cx + 16.0 / sx]])  # 45 degrees up-right, in mm
    np.testing.assert_allclose(display_angle(p, (cy, cx), (sy, sx)), [45.0])
    ant = 120.0
    aha = aha_segments(ring, (cy, cx), ant, level="basal", spacing_mm=(sy, sx))
    shares = np.bincount(aha[ring], minlength=7)[1:] / ring.sum()
    np.testing.assert_allclose(shares, 1 / 6, atol=0.01)
    on_grid = aha_segments(ring, (cy, cx), ant, level="basal")  # the pixel grid's angles
    grid_shares = np.bincount(on_grid[ring], minlength=7)[1:] / ring.sum()
    assert np.abs(grid_shares - 1 / 6).max() > 0.03
    # a point 31 mm out at the anterior insertion + 55 degrees: still segment 2
    a = np.deg2rad(ant + 55.0)
    y, x = int(round(cy - 31 * np.sin(a) / sy)), int(round(cx + 31 * np.cos(a) / sx))
    assert aha[y, x] == 2


def test_territories_and_levels():
    assert [territory_of(s) for s in (1, 2, 3, 4, 5, 6)] == [
        "LAD", "LAD", "RCA", "RCA", "LCX", "LCX"]
    assert [territory_of(s) for s in (13, 14, 15, 16)] == ["LAD", "LAD", "RCA", "LCX"]
    assert slice_levels(3) == ["basal", "mid", "apical"]
    assert slice_levels(1) == ["mid"]
    assert slice_levels(6) == ["basal", "basal", "mid", "mid", "apical", "apical"]
    with pytest.raises(ValueError, match="segment"):
        territory_of(18)
    with pytest.raises(ValueError, match="level"):
        aha_segments(_ring(), (CY, CX), 0.0, level="base")


def test_segment_table_statistics():
    ring = _ring()
    aha = aha_segments(ring, (CY, CX), 120.0, level="basal")
    mbf = np.where(ring, aha.astype(np.float32) / 2.0, 0.0)
    valid = ring.copy()
    valid[_point(150.0)] = False
    rows = segment_table({0: mbf}, {0: aha}, valid={0: valid}, fit_mbf={(0, 2): 1.1})
    assert [r["segment"] for r in rows] == [1, 2, 3, 4, 5, 6]
    for r in rows:
        assert r["median"] == pytest.approx(r["segment"] / 2.0)
        assert r["sd"] == pytest.approx(0.0, abs=1e-6)
        assert r["n"] + r["n_flagged"] == int((aha == r["segment"]).sum())
    assert sum(r["n_flagged"] for r in rows) == 1
    assert rows[1]["fit"] == 1.1 and np.isnan(rows[0]["fit"])
    assert [r["name"] for r in rows[:3]] == ["basal anterior", "basal anteroseptal",
                                             "basal inferoseptal"]


def test_segment_table_marks_unreliable_segments():
    """A segment is unreliable when its median's standard error is too large, most of its
    fits failed, or it has too few pixels; the standard error is the median's."""
    ring = _ring()
    aha = aha_segments(ring, (CY, CX), 120.0, level="basal")
    rng = np.random.default_rng(0)
    mbf = np.zeros(ring.shape)
    for seg, sd in ((1, 0.3), (2, 8.0), (3, 0.3), (4, 0.3), (5, 0.3), (6, 0.3)):
        sel = aha == seg
        mbf[sel] = 3.0 + sd * rng.standard_normal(sel.sum())
    flagged = np.zeros(ring.shape, bool)
    s3 = np.flatnonzero(aha == 3)
    flagged.flat[s3[: int(0.6 * s3.size)]] = True  # 60 % of segment 3's fits failed
    valid = ring.copy()
    valid.flat[np.flatnonzero(aha == 4)[3:]] = False  # segment 4: 3 usable pixels
    rows = segment_table({0: mbf}, {0: aha}, valid={0: valid}, flagged={0: flagged})
    by = {r["segment"]: r for r in rows}
    assert [s for s in by if not by[s]["reliable"]] == [2, 3, 4]
    assert np.isnan(by[1]["below"])  # no threshold asked for
    # each says why, in words; a reliable one says nothing
    assert by[2]["reason"].startswith("standard error of the median")
    assert by[3]["reason"] == "60% of its pixel fits failed"
    assert by[4]["reason"] == "3 pixels used (fewer than 5)"
    assert by[1]["reason"] == by[5]["reason"] == ""
    assert by[3]["flagged_share"] == pytest.approx(0.6, abs=0.05)
    for seg, sd in ((1, 0.3), (2, 8.0), (5, 0.3)):  # ~1.2533 sd / sqrt(n) for normal pixels
        expect = 1.2533 * sd / np.sqrt(by[seg]["n"])
        assert by[seg]["se"] == pytest.approx(expect, rel=0.45)
    assert by[2]["se"] > 0.5 > by[1]["se"]
    # the thresholds are the caller's (quant.segment_max_se / segment_max_flagged)
    loose = segment_table({0: mbf}, {0: aha}, valid={0: valid}, flagged={0: flagged},
                          max_se=10.0, max_flagged=0.7)
    assert [r["segment"] for r in loose if not r["reliable"]] == [4]
    # most of the slice's fits failed: all its segments are suspect, even those whose
    # own pixels passed (segments 1 and 2 here: 40 % each)
    broad = np.zeros(ring.shape, bool)
    for seg, share in ((1, 0.4), (2, 0.4), (3, 0.6), (4, 0.6), (5, 0.6), (6, 0.6)):
        idx = np.flatnonzero(aha == seg)
        broad.flat[idx[: int(round(share * idx.size))]] = True
    rows = segment_table({0: mbf}, {0: aha}, flagged={0: broad}, max_se=10.0, max_flagged=0.7)
    assert broad[ring].mean() < 0.7 and all(r["reliable"] for r in rows)
    rows = segment_table({0: mbf}, {0: aha}, flagged={0: broad}, max_se=10.0, max_flagged=0.5)
    assert broad[ring].mean() > 0.5 and not any(r["reliable"] for r in rows)
    assert all(r["reason"].endswith("of its slice's pixel fits failed") for r in rows)
    assert {r["segment"]: r["flagged_share"] for r in rows}[1] == pytest.approx(0.4, abs=0.05)


def test_segment_share_below_a_threshold_counts_every_fitted_pixel():
    """``below``: the share of a segment's fitted pixels, the subendocardial ones too (not
    only ``valid``), whose neighbourhood median is under the threshold: a defect region
    counts, single noisy pixels and failed fits do not."""
    ring = _ring()
    yy, xx = np.mgrid[0:80, 0:80]
    inner = ring & (np.hypot(yy - CY, xx - CX) < 15)  # a subendocardial layer, 3 px deep
    aha = aha_segments(ring, (CY, CX), 120.0, level="mid")
    mbf = np.where(ring, 3.0, 0.0)
    defect = inner & (aha == 8)
    mbf[defect] = 1.0
    valid = ring & ~inner  # the median's pixels leave the layer out
    lone = np.flatnonzero(aha == 7)[::25][:3]  # three isolated pixels reading low
    mbf.flat[lone] = 1.0
    flagged = np.zeros(ring.shape, bool)
    flagged.flat[np.flatnonzero(aha == 9)[:5]] = True
    mbf.flat[np.flatnonzero(aha == 9)[:5]] = 0.5  # failed fits reading low: not counted
    rows = segment_table({0: mbf}, {0: aha}, valid={0: valid}, flagged={0: flagged}, below=2.0)
    by = {r["segment"]: r for r in rows}
    share = defect.sum() / (aha == 8).sum()
    assert by[8]["below"] == pytest.approx(share, abs=0.1) and share > 0.25
    assert by[8]["median"] == pytest.approx(3.0)
    assert by[7]["below"] == 0.0 and by[9]["below"] == 0.0


def test_neighbourhood_median_uses_only_the_pixels_given():
    from perfmoco.quant.segments import neighbourhood_median

    v = np.array([[1.0, 9.0, 1.0], [1.0, 1.0, 100.0], [5.0, 5.0, 5.0]])
    ok = np.array([[True, True, True], [True, True, False], [False, False, False]])
    m = neighbourhood_median(v, ok)
    assert np.isnan(m[1, 2]) and np.isnan(m[2]).all()
    assert m[1, 1] == 1.0 and m[0, 1] == 1.0  # 100 and the 5s are not among its pixels


def test_a_segment_whose_core_is_one_spot_is_read_from_all_its_pixels():
    from perfmoco.quant import segment_pixels

    # three 60-degree segments of 40 pixels each, their angles spread over the arc
    segments = np.repeat([1, 2, 3], 40)
    angles = np.concatenate([np.linspace(a, a + 59, 40) for a in (0.0, 60.0, 120.0)])
    fitted = np.ones(120, bool)
    core = np.zeros(120, bool)
    core[:12] = True  # segment 1: 12 core pixels in one spot (0-17 degrees)
    core[40:80:3] = True  # segment 2: a thin core along the whole arc (14 pixels)
    core[80:120:8] = True  # segment 3: 5 core pixels along its arc, fewer than 10
    use = segment_pixels(fitted, core, segments, angles)
    assert use[:40].all()  # the spot stands for nothing: all fitted pixels
    assert np.array_equal(use[40:80], core[40:80])  # the thin core is kept
    assert use[80:].all()
    fitted[100:] = False  # only fitted pixels are ever used
    assert not segment_pixels(fitted, core, segments, angles)[100:].any()
    # without angles only the count decides
    plain = segment_pixels(np.ones(120, bool), core, segments)
    assert np.array_equal(plain[:40], core[:40]) and plain[80:].all()
