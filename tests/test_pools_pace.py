"""Blood pools of series sampled every other beat (slow hearts, 2-RR protocols)."""

from __future__ import annotations

import numpy as np
import pytest
from phantom_common import prefix

from perfmoco.anatomy import find_blood_pools

phantom = pytest.importorskip("perfmoco.phantom")


@pytest.mark.parametrize("step", [2, 3])
def test_the_lv_is_found_in_series_sampled_every_other_beat(step):
    """Phantom 11976 b (a frame every 0.55 s) kept every 2nd / 3rd frame (1.1 / 1.65 s):
    the LV, not the aorta, is found on every slice. Its timing rules counted frames, so
    the LV's lead over the RV (~2 s) fell short of a 'pulmonary transit' of 2 frames and
    the aorta, which fills a frame later, was taken instead (every slice, step 2)."""
    ph = phantom.generate_phantom(seed=11976, motion="none", vendor="b")
    lv_blood = phantom.LABELS["lv_blood"]
    for s in ph.study.highres:
        key = prefix(s)
        im, t = ph.noise_free[key][::step], s.times_s[::step]
        assert np.median(np.diff(t)) > 1.0
        pools = find_blood_pools(im, times_s=t, spacing_mm=s.pixel_spacing_mm)
        labels = ph.truth[f"{key}_labels"][pools.lv_mask]
        assert np.mean(labels == lv_blood) > 0.8, key
