"""The reference frame nearer the median breathing position (after step 1), and rebasing."""

from types import SimpleNamespace

import numpy as np
import torch

from perfmoco.config import MocoConfig
from perfmoco.moco.reference import REFERENCE_GAIN_MM, middle_reference, rebase


def _maps(shifts_px):
    """Pull-back translations (T, 2, 3): frame t holds the anatomy shifted by ``shifts_px[t]``."""
    m = torch.zeros(len(shifts_px), 2, 3, dtype=torch.float64)
    m[:, 0, 0] = m[:, 1, 1] = 1.0
    m[:, :, 2] = torch.as_tensor(np.asarray(shifts_px, np.float64))
    return m


def _sc(t, ref, search=4, spacing=2.0):
    series = SimpleNamespace(pixel_spacing_mm=(spacing, spacing))
    return SimpleNamespace(config=MocoConfig(reference_search=search), t_dyn=t, ref=ref,
                           series=series, centre_yx=(40.0, 50.0))


def test_a_reference_at_the_end_of_deep_breathing_moves_to_the_middle():
    t = 60
    y = 6.0 * (1 + np.cos(2 * np.pi * np.arange(t) / 8.0))  # 0..12 px, median ~6
    m = _maps(np.stack([y, 0.3 * y], 1))
    ref = 48  # y = 12: the deep end
    assert y[ref] == y.max()
    new = middle_reference(_sc(t, ref), m, torch.zeros(t, dtype=torch.bool))
    assert abs(new - ref) <= 4
    assert abs(y[new] - np.median(y)) < 2.5  # a mid-breath frame (2 mm pixels)
    # off, or flagged frames only, or shallow breathing: it stays
    assert middle_reference(_sc(t, ref, search=0), m, torch.zeros(t, dtype=torch.bool)) == ref
    bad = torch.ones(t, dtype=torch.bool)
    bad[ref] = False
    assert middle_reference(_sc(t, ref), m, bad) == ref
    shallow = _maps(np.stack([y, 0.3 * y], 1) * (0.9 * REFERENCE_GAIN_MM / 2.0 / 12.0))
    assert middle_reference(_sc(t, ref), shallow, torch.zeros(t, dtype=torch.bool)) == ref


def test_rebased_maps_send_the_new_reference_to_itself_and_keep_every_frame_aligned():
    rng = np.random.default_rng(3)
    t = 12
    m = torch.zeros(t, 2, 3, dtype=torch.float64)
    ang = rng.uniform(-0.1, 0.1, t)
    sc = rng.uniform(0.95, 1.05, t)
    m[:, 0, 0] = m[:, 1, 1] = torch.as_tensor(sc * np.cos(ang))
    m[:, 0, 1] = torch.as_tensor(-sc * np.sin(ang))
    m[:, 1, 0] = torch.as_tensor(sc * np.sin(ang))
    m[:, :, 2] = torch.as_tensor(rng.uniform(-5, 5, (t, 2)))
    new, centre = rebase(m, 7, (30.0, 40.0))
    np.testing.assert_allclose(new[7].numpy(), [[1, 0, 0], [0, 1, 0]], atol=1e-12)
    # a point p of the new reference's frame is, in the old reference's coordinates,
    # M_7^-1 p; frame t sees it at M_t M_7^-1 p, which the new map gives directly
    p = torch.tensor([12.0, -3.0, 1.0], dtype=torch.float64)
    h7 = torch.cat([m[7], torch.tensor([[0.0, 0.0, 1.0]], dtype=torch.float64)])
    q = torch.linalg.solve(h7, p)
    for k in range(t):
        np.testing.assert_allclose((new[k] @ p).numpy(), (m[k] @ q).numpy(), atol=1e-9)
    # the LV centre in the new reference's frame: where frame 7 saw it
    np.testing.assert_allclose(centre, (m[7] @ torch.tensor([30.0, 40.0, 1.0],
                                                            dtype=torch.float64)).numpy())


def test_a_qc_flagged_reference_frame_gives_way_to_its_nearest_unflagged_neighbour():
    """A mistriggered reference frame (another cardiac phase) is no geometry for the
    others (fresh mistrigger set 11871-11876: mean Dice 0.922 -> 0.945 with this)."""
    from perfmoco.moco.reference import unflagged_reference

    qc = np.zeros(12, bool)
    assert unflagged_reference(qc, 5) == 5
    qc[5] = True
    assert unflagged_reference(qc, 5) == 6  # as near as 4: the later one
    assert unflagged_reference(qc, 4) == 4  # only the reference's own flag counts
    qc[6] = True
    assert unflagged_reference(qc, 5) == 4
    assert unflagged_reference(np.ones(12, bool), 5) == 5  # all flagged: nothing better
