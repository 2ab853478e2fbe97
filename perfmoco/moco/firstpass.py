"""The frames of the bolus's first pass, whose contrast changes fastest.

In these frames the RV and then the LV fill with contrast; a frame a heartbeat away
already looks different, and the PCA references of the steps before represent them
worst (:mod:`perfmoco.moco.firstpass_align` moves them, as a group, onto the late
frames).  They are found by their pace: the mean of the crop under the
refinement's Gaussian window on the heart rises steeply as the pools fill
(measured on breathing phantoms: 0.08-0.23 of its range a frame from about two
frames before the LV's arrival to three after it, 0.00-0.07 elsewhere).
"""

from __future__ import annotations

import torch

__all__ = ["NOISE_SD", "fast_contrast"]

#: A first-pass frame's change also exceeds this many noise SDs of the windowed mean.
NOISE_SD = 4.0


def fast_contrast(crop: torch.Tensor, window: torch.Tensor, rate: float) -> torch.Tensor | None:
    """Frames whose mean under ``window`` changes fastest, ``(T,)`` bool, or None.

    Parameters
    ----------
    crop : Tensor, shape (T, H, W)
        A (roughly aligned) crop series about the heart.
    window : Tensor, shape (H, W)
        Weights that sum to 1 (the refinement's Gaussian on the heart).
    rate : float
        A frame counts where the windowed mean's central difference exceeds this
        share of its range (5th to 95th percentile over the series) per frame, and
        :data:`NOISE_SD` times the mean's noise SD (a series without a bolus);
        ``rate`` 0 or fewer than 5 frames: None (no frame).
    """
    t = crop.shape[0]
    if rate <= 0 or t < 5:
        return None
    m = (crop.float() * window).sum((1, 2)).double()
    spread = torch.quantile(m, 0.95) - torch.quantile(m, 0.05)
    if float(spread) <= 0:
        return None
    change = torch.zeros_like(m)
    change[1:-1] = 0.5 * (m[2:] - m[:-2]).abs()
    # the mean's own noise, from its successive differences (most frames change slowly)
    noise = float((m[1:] - m[:-1]).abs().median()) / 0.6745 / 2**0.5
    out = change > max(rate * float(spread), NOISE_SD * noise)
    return out if bool(out.any()) else None

