"""Walls thicker and thinner than the usual: the phantom's wall_scale and the myocardium."""

from __future__ import annotations

import pytest

from perfmoco.anatomy import find_blood_pools, segment_myocardium
from perfmoco.phantom import LABELS, generate_phantom


def test_phantom_wall_scale_thickens_the_wall_alone():
    usual = generate_phantom(seed=5, motion="none", n_dynamics=30)
    thick = generate_phantom(seed=5, motion="none", n_dynamics=30, wall_scale=2.0)
    for k in range(3):
        a, b = (p.truth[f"s{k}_labels"] for p in (usual, thick))
        assert ((a == LABELS["lv_blood"]) == (b == LABELS["lv_blood"])).mean() > 0.999
        assert 1.8 < (b == LABELS["lv_myocardium"]).sum() / (a == LABELS["lv_myocardium"]).sum()
    for bad in (0.3, 3.0, True):
        with pytest.raises(ValueError, match="wall_scale"):
            generate_phantom(seed=5, wall_scale=bad)


def test_a_hypertrophied_wall_is_taken_whole():
    """~25 mm walls (2.5x the usual): the mask had stopped at an 18 mm limit."""
    ph = generate_phantom(seed=12691, motion="none", wall_scale=2.5)
    s = ph.study.highres[0]
    pools = find_blood_pools(s.images, times_s=s.times_s, spacing_mm=s.pixel_spacing_mm)
    myo = segment_myocardium(s.images, pools, spacing_mm=s.pixel_spacing_mm)
    truth = ph.truth["s0_labels"] == LABELS["lv_myocardium"]
    assert (myo & truth).sum() / truth.sum() > 0.9
    assert (myo & truth).sum() / myo.sum() > 0.9
