"""The bolus's first-pass frames: found by their contrast's pace, moved as a group."""

import numpy as np
import torch
from heart_common import heart

from perfmoco.config import MocoConfig
from perfmoco.moco.blocksearch import group_offset
from perfmoco.moco.firstpass import fast_contrast
from perfmoco.moco.firstpass_align import align_first_pass_full_fov
from perfmoco.moco.ncc import gaussian_window
from perfmoco.moco.refine import REFINE_SPACING_MM, refine_crop
from perfmoco.moco.transforms import identity_grid


def _bolus_series(t=40, arrival=10, **kw):
    frames = []
    for k in range(t):
        c = min(1.0, max(0.0, 0.25 * (k - arrival + 1)))  # blood: 0 -> 1 over four frames
        late = max(0.0, k - arrival - 4) / (t - arrival)
        frames.append(heart(blood=0.2 + 0.7 * c - 0.3 * late, myo=0.3 + 0.2 * late, lung=0.05,
                            seed=k, noise=0.01, **kw))
    return torch.stack(frames)


def test_the_frames_whose_contrast_changes_fastest_are_the_first_pass():
    crop = _bolus_series()
    win = gaussian_window(64, 64, 12.0)
    fast = fast_contrast(crop, win, 0.08)
    assert fast is not None
    found = torch.nonzero(fast).flatten().tolist()
    assert 10 in found and 11 in found  # the blood's steepest rise
    assert set(found) <= set(range(8, 15))  # nothing before the bolus or in the slow tail
    flat = crop[:1].expand(40, -1, -1) + 0.01 * torch.randn(40, 64, 64)
    assert fast_contrast(flat, win, 0.08) is None  # noise alone has no pace
    assert fast_contrast(crop, win, 0.0) is None and fast_contrast(crop[:4], win, 0.08) is None


def test_one_offset_of_frames_of_different_contrast_is_found():
    """The frames' blood darker than, as bright as or brighter than their myocardium, the
    fixed image's brighter: their edges' directions agree all the same, and the shared
    move is found (a whole pixel's: the drawn heart's edges fall on pixel centres)."""
    fixed = heart(blood=0.6, myo=0.2, lung=0.05)
    frames = torch.stack([heart(blood=b, myo=0.3, lung=0.05, shift=(1.0, -2.0))
                          for b in (0.1, 0.3, 0.8, 1.0, 0.9)])
    disc = (identity_grid((64, 64)) - 31.5).norm(dim=0) < 24
    d, inside = group_offset(frames, fixed, disc, max_px=3.0, noise=(0.002, 0.002))
    assert inside
    assert np.allclose(d.numpy(), (1.0, -2.0), atol=0.15)  # the 0.3 frame alone: 0.4 px off
    far, inside = group_offset(frames, fixed, disc, max_px=0.4, noise=(0.002, 0.002))
    assert not inside  # beyond the range: on its edge, not to be trusted


def _phantom_slice():
    from perfmoco.phantom import generate_phantom, warp

    ph = generate_phantom(seed=10335, motion="breathing", vendor="b")
    s = ph.study.slices[0]
    exact = warp(np.asarray(s.images, np.float32), ph.truth["s0_inverse_displacement"])
    centre = tuple(float(v) for v in np.argwhere(ph.truth["s0_labels"] == 7).mean(axis=0))
    return exact, centre, s.pixel_spacing_mm


def _first_pass(images, centre, spacing):
    t = images.shape[0]
    eye = torch.eye(2, 3, dtype=torch.float64).expand(t, -1, -1)
    _, crop = refine_crop(images, eye, centre, spacing, (float(images.min()),
                                                         float(images.max())))
    win = gaussian_window(64, 64, MocoConfig().refine_window_mm / REFINE_SPACING_MM)
    return torch.nonzero(fast_contrast(crop, win, MocoConfig().first_pass_rate)).flatten()


def _moved(images, centre, spacing):
    from perfmoco.phantom import warp

    t = images.shape[0]
    eye = torch.eye(2, 3, dtype=torch.float64).expand(t, -1, -1)
    rng = (float(images.min()), float(images.max()))
    return eye, align_first_pass_full_fov(torch.from_numpy(images), eye, centre, spacing, rng,
                                          MocoConfig()), warp


def test_first_pass_frames_moved_as_a_group_are_brought_back():
    """A phantom's slice with the exact correction (every frame on the motion-free
    anatomy), its first-pass frames then moved by a known 0.8 px: the group's offset is
    found to a fraction of a pixel, and no other frame moves."""
    from perfmoco.phantom import warp

    exact, centre, spacing = _phantom_slice()
    idx = _first_pass(torch.from_numpy(exact), centre, spacing).numpy()
    assert 4 <= len(idx) <= 10
    move = np.zeros((exact.shape[0], 2, *exact.shape[1:]), np.float32)
    move[idx, 0], move[idx, 1] = 0.5, -0.6
    eye, (matrix, n), _ = _moved(warp(exact, move), centre, spacing)
    assert n >= 4
    changed = torch.nonzero((matrix - eye).abs().amax(dim=(1, 2)) > 0).flatten().numpy()
    assert set(changed) <= set(idx) and len(changed) == n
    err_mm = (matrix[changed, :, 2].numpy() + (0.5, -0.6)) * np.asarray(spacing)
    assert np.hypot(*err_mm.T).max() < 0.35


def test_first_pass_frames_that_disagree_are_left_where_they_are():
    """Even and odd first-pass frames moved 1.5 px apart: one offset would suit neither
    half, and the halves' searches say so; nothing moves."""
    from perfmoco.phantom import warp

    exact, centre, spacing = _phantom_slice()
    idx = _first_pass(torch.from_numpy(exact), centre, spacing).numpy()
    move = np.zeros((exact.shape[0], 2, *exact.shape[1:]), np.float32)
    move[idx[0::2], 1], move[idx[1::2], 1] = 0.75, -0.75
    eye, (matrix, n), _ = _moved(warp(exact, move), centre, spacing)
    assert n == 0 and torch.equal(matrix, eye)
