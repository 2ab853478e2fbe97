"""The reference frame nearer the middle of the breathing, and maps rebased onto it.

The paper's reference frame, ten dynamics before the end, is wherever breathing put
it; at one end of deep breathing every frame at the other end has a whole breath to
cover.  After step 1, :func:`middle_reference` may pick a late dynamic nearer the
series' median LV position, and :func:`rebase` moves the maps onto it.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import TYPE_CHECKING

import numpy as np
import torch

from perfmoco.moco.coarse import centre_moves
from perfmoco.moco.transforms import compose_affine, map_points

if TYPE_CHECKING:
    from perfmoco.moco.crops import SeriesCrops

__all__ = ["REFERENCE_GAIN_MM", "anchored_off_flags", "middle_reference", "rebase",
           "unflagged_reference"]

log = logging.getLogger(__name__)


#: The reference moves only to a dynamic this much nearer the median LV position, mm.
REFERENCE_GAIN_MM = 3.0


def middle_reference(sc: SeriesCrops, m_full: torch.Tensor, bad: torch.Tensor) -> int:
    """The late dynamic near the reference frame nearest the series' median LV position.

    Step 1's maps give each dynamic's LV position (a large move under-reported by the
    network, but in order).  Among the dynamics within ``moco.reference_search`` of
    the reference frame, the one nearest the median position over all dynamics takes
    its place when it lies :data:`REFERENCE_GAIN_MM` nearer; else the reference stays.
    """
    cfg, t_dyn, ref = sc.config, sc.t_dyn, sc.ref
    ok = ~bad[:t_dyn].to(m_full.device)
    if cfg.reference_search <= 0 or int(ok.sum()) < 3:
        return ref
    sp = torch.tensor(sc.series.pixel_spacing_mm, dtype=torch.float64, device=m_full.device)
    pos = centre_moves(m_full[:t_dyn], ref, sc.centre_yx) * sp  # (T, 2) mm
    dist = (pos - pos[ok].median(dim=0).values).norm(dim=1)
    lo, hi = max(ref - cfg.reference_search, 0), min(ref + cfg.reference_search, t_dyn - 1)
    cand = [i for i in range(lo, hi + 1) if bool(ok[i])]
    if not cand:
        return ref
    best = min(cand, key=lambda i: float(dist[i]))
    return best if float(dist[ref] - dist[best]) >= REFERENCE_GAIN_MM else ref


def unflagged_reference(qc, ref: int) -> int:
    """The dynamic nearest ``ref`` in time that motion QC did not flag (``ref`` if unflagged).

    Every frame is registered to a PCA reference after step 1, so the reference
    frame only anchors the result (``moco.anchor_reference``) and is the one the
    others are compared with.  A flagged reference frame (mistriggered, caught in
    another cardiac phase) gives way to its nearest unflagged neighbour, the later
    one where two are as near: fresh 11867 a's basal slice had dynamic 62 (a
    mistrigger) as its reference, every other frame's myocardium a different
    shape from its own (Dice 0.833 against it).  All flagged: ``ref``.
    """
    flags = np.asarray(qc, bool)
    if not flags[ref] or flags.all():
        return ref
    return int(min(np.flatnonzero(~flags), key=lambda i: (abs(i - ref), -i)))


def anchored_off_flags(sc: SeriesCrops, qc) -> SeriesCrops:
    """``sc`` with its reference moved off a QC-flagged dynamic (:func:`unflagged_reference`)."""
    anchor = unflagged_reference(qc, sc.ref)
    if anchor == sc.ref:
        return sc
    log.info("%s: reference dynamic %d instead of %d (QC-flagged)", sc.series.name, anchor,
             sc.ref)
    return dataclasses.replace(sc, ref=anchor)


def rebase(m_full: torch.Tensor, ref: int, centre_yx) -> tuple[torch.Tensor, tuple]:
    """Full-FOV maps to dynamic ``ref`` instead, and the LV centre in its coordinates.

    ``m_full`` ``(T, 2, 3)`` pull back from the old reference's coordinates; the new
    maps are ``H_t H_ref^-1`` (so the new reference's map is the identity).
    """
    m = m_full.double()
    a_inv = torch.linalg.inv(m[ref, :, :2])
    inv = torch.cat([a_inv, -(a_inv @ m[ref, :, 2:])], dim=1)  # (2, 3)
    out = compose_affine(m, inv.expand(m.shape[0], -1, -1))
    at = map_points(m_full[ref : ref + 1], centre_yx)[0]
    return out, (float(at[0]), float(at[1]))
