"""PD frames' search: an optimum far from every dynamic's heart is not taken."""

import torch

from perfmoco.moco.pdalign import PD_REACH_MM, _within_reach


def test_a_pd_frame_is_within_reach_of_the_nearest_dynamic_in_mm():
    track = torch.tensor([[50.0, 50.0], [54.0, 50.0], [58.0, 51.0]], dtype=torch.float64)
    spacing = torch.tensor([2.0, 1.0], dtype=torch.float64)  # rows 2 mm, columns 1 mm
    reach_rows = PD_REACH_MM / 2.0
    points = torch.tensor([
        [52.0, 50.0],                      # between two dynamics
        [58.0 + 0.9 * reach_rows, 51.0],   # beyond the track's end, within reach
        [58.0 + 1.1 * reach_rows, 51.0],   # beyond it, out of reach along rows (2 mm px)
        [50.0, 50.0 + 1.1 * PD_REACH_MM],  # out of reach along columns (1 mm px)
    ], dtype=torch.float64)
    assert _within_reach(points, track, spacing).tolist() == [True, True, False, False]
