"""Motion QC: frames unlike both neighbours (mistriggers) are found, smooth contrast is not."""

import numpy as np
import torch

from perfmoco.moco.qc import temporal_outliers


def _series(t_n=30, size=64, seed=0):
    """A bright ring (myocardium) whose contrast rises and falls like a bolus, plus noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size] - (size - 1) / 2.0
    t = np.arange(t_n)
    bolus = np.exp(-0.5 * ((t - 12) / 4.0) ** 2)

    def ring(scale):
        r = np.hypot(yy, xx) / scale
        return ((r > 8) & (r < 14)).astype(float)

    frames = 0.2 + bolus[:, None, None] * ring(1.0)[None] + 0.5 * (np.hypot(yy, xx) < 8) * (
        np.roll(bolus, -2)[:, None, None])
    return frames + rng.normal(0, 0.02, frames.shape), ring


def test_mistriggered_frames_are_flagged_and_no_others():
    frames, ring = _series()
    bolus_t = np.exp(-0.5 * ((np.arange(30) - 12) / 4.0) ** 2)
    for t in (5, 20):  # heart caught at another phase: the ring 25 % smaller
        frames[t] += bolus_t[t] * (ring(0.75) - ring(1.0)) + 0.3 * (ring(0.75) - ring(1.0))
    flags, score = temporal_outliers(torch.from_numpy(frames), window_sigma_px=12.0, ratio=1.6)
    assert set(np.flatnonzero(flags)) == {5, 20}, np.round(score, 2)


def test_smooth_contrast_change_is_not_flagged():
    frames, _ = _series(seed=1)
    flags, score = temporal_outliers(torch.from_numpy(frames), window_sigma_px=12.0, ratio=1.6)
    assert not flags.any(), np.round(score, 2)
    assert np.median(score) < 1.2


def test_short_series_has_no_outliers():
    flags, score = temporal_outliers(torch.zeros(3, 8, 8), window_sigma_px=3.0, ratio=1.6)
    assert flags.shape == (3,) and not flags.any()
