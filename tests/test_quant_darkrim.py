"""A dark rim along the endocardium: the phantom's artefact, its detection and its flags."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from perfmoco.config import QuantConfig
from perfmoco.phantom.darkrim import dark_rim, rim_profile
from perfmoco.phantom.params import LABELS
from perfmoco.quant import quantify_study
from perfmoco.quant.darkrim import dark_rim_segments
from perfmoco.quant.segments import segment_table


def _ring_series(seed: int = 0, t_n: int = 40):
    """A hand-made slice: LV cavity (radius 10 px), a 5 px myocardial ring in six
    60-degree segments (1-6 counter-clockwise from +x), gamma-variate blood, Fermi-like
    tissue; noise SD 0.02 of a pre-contrast level of 1."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:64, :64] - 32.0
    r, ang = np.hypot(yy, xx), np.mod(np.degrees(np.arctan2(-yy, xx)), 360.0)
    cavity, myo = r < 10, (r >= 10) & (r < 15)
    aha = np.where(myo, 1 + (ang // 60).astype(int), 0)
    t = np.arange(t_n, dtype=float)
    blood = np.where(t > 8, ((t - 8) / 4) ** 2 * np.exp(-(t - 8) / 2), 0.0)
    blood = 3.0 * blood / blood.max()
    tissue = 0.8 * (1 - np.exp(-np.clip(t - 10, 0, None) / 4))
    im = np.ones((t_n, 64, 64))
    im[:, cavity] += blood[:, None]
    im[:, myo] += tissue[:, None]
    return im, myo, aha, cavity, blood, tissue, r, rng


def test_dark_rim_segments_finds_the_fall_not_a_defect():
    im, myo, aha, cavity, blood, tissue, r, rng = _ring_series()
    inner = myo & (r < 11.5)
    rim = inner & (aha == 2)
    im[:, rim] -= 0.2 * blood[:, None]  # falls below 1 while the blood peaks
    # segment 5: a severe defect, late and little enhancement but no fall
    defect = myo & (aha == 5)
    late = 0.15 * (1 - np.exp(-np.clip(np.arange(40) - 14, 0, None) / 8))
    im[:, defect] += (late - tissue)[:, None]
    im += rng.normal(0.0, 0.02, im.shape)
    found, pixels = dark_rim_segments(im, myo, aha, cavity, n_base=8)
    assert set(found) == {2}
    assert 0.1 < found[2] < 0.5
    assert pixels.sum() > 0 and (aha[pixels] == 2).all()
    # no rim: nothing found, noise or not
    clean, *_ = _ring_series(seed=1)
    clean += np.random.default_rng(2).normal(0.0, 0.02, clean.shape)
    assert dark_rim_segments(clean, myo, aha, cavity, n_base=8)[0] == {}


def test_a_ring_with_a_gap_is_searched_along_the_lv_pool():
    """Where a pool took part of the wall the ring encloses nothing: the LV pool given
    says where the cavity is (without it nothing could be found)."""
    im, myo, aha, cavity, blood, tissue, r, rng = _ring_series()
    im[:, myo & (r < 11.5) & (aha == 2)] -= 0.2 * blood[:, None]
    im += rng.normal(0.0, 0.02, im.shape)
    gap = myo & (aha == 5) & (np.abs(np.mgrid[:64, :64][1] - 32) < 2)  # columns 31-33
    open_ring = myo & ~gap
    assert dark_rim_segments(im, open_ring, aha * open_ring, cavity, n_base=8)[0] == {}
    found, _ = dark_rim_segments(im, open_ring, aha * open_ring, cavity, n_base=8,
                                 cavity=cavity)
    assert set(found) == {2}


def test_a_dark_rim_is_not_counted_as_failed_fits():
    """A thin wall's rim is a third of its segment or more: its flagged pixels do not
    make the segment "unreliable: its pixel fits failed"; they stay out of its median."""
    aha = np.zeros((10, 10), int)
    aha[2:8, 2:8] = 1
    mbf = np.where(aha > 0, 3.0, 0.0)
    rim = np.zeros_like(aha, bool)
    rim[2:5, 2:8] = True  # half of the segment
    mbf[rim] = 1.0
    kw = dict(valid={0: (aha > 0) & ~rim}, flagged={0: rim})
    as_failed = segment_table({0: mbf}, {0: aha}, max_flagged=0.4, **kw)[0]
    assert not as_failed["reliable"] and "fits failed" in as_failed["reason"]
    row = segment_table({0: mbf}, {0: aha}, max_flagged=0.4, artefact={0: rim}, **kw)[0]
    assert row["reliable"] and row["median"] == 3.0 and row["flagged_share"] == 0.0


def test_dark_rim_segments_needs_a_baseline():
    im, myo, aha, cavity, blood, *_ = _ring_series()
    im[:, myo] -= 0.5 * blood[:, None]
    found, pixels = dark_rim_segments(im, myo, aha, cavity, n_base=3)
    assert found == {} and not pixels.any()


def test_rim_profile_and_phantom_rim(ph_still):
    tr = ph_still.truth
    labels = tr["s1_labels"]
    prof = rim_profile(labels, tuple(tr["spacing_mm"]), 4.0)
    myo = labels == LABELS["lv_myocardium"]
    assert (prof[~myo] == 0).all() and prof.max() > 0.6
    assert 0 < (prof > 0).sum() < myo.sum()  # the inner part of the wall only
    ph = dark_rim(ph_still, 0.6)
    aif = [s for s in ph.study.slices if s.role.value == "aif"][0]
    aif0 = [s for s in ph_still.study.slices if s.role.value == "aif"][0]
    assert np.array_equal(aif.images, aif0.images)
    s1, s1_0 = ph.study.highres[1], ph_still.study.highres[1]
    assert np.array_equal(s1.pd_images, s1_0.pd_images)
    diff = s1_0.images - s1.images
    assert (diff[:, ~myo] == 0).all()  # motion-free: only the wall is touched
    peak = int(tr["lv_peak_dynamic"]) - 1
    rim = prof > 0.6
    assert diff[peak][rim].mean() > 0.1 * s1_0.images[:5][:, rim].mean()
    assert np.abs(diff[:3]).max() < 1e-3 * s1_0.images.max()  # nothing before the bolus
    with pytest.raises(ValueError):
        dark_rim(ph_still, 1.5)


def test_quantify_names_and_flags_a_dark_rim(ph_still):
    tr = ph_still.truth
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        base = quantify_study(ph_still.study, config=QuantConfig())
        r = quantify_study(dark_rim(ph_still, 0.6).study, config=QuantConfig())
    assert not any("dark rim" in m for m in base.warnings)
    named = [m for m in r.warnings if "dark rim" in m]
    assert named and "not a perfusion defect" in named[0]
    # the segment table says which segments, how deep (the cohort's dark_rim column)
    assert 0 < sum(row["dark_rim"] > 0.05 for row in r.segments) < len(r.segments) + 1
    assert all(row["dark_rim"] == 0 for row in base.segments)
    flagged, inner = [], []
    for s, m in r.myocardium.items():
        prof = rim_profile(tr[f"s{s}_labels"], tuple(tr["spacing_mm"]), 4.0)
        ring = m & (prof > 0.6)
        flagged.append(r.flagged[s][ring].mean())
        inner.append(base.flagged[s][ring].mean())
    assert np.mean(flagged) > 0.5 > np.mean(inner) + 0.3
