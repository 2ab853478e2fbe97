"""Pre-contrast block alignment: tie the frames before the bolus to the rest.

Every step before this one registers a frame to a reference of *its own*
contrast: the networks' step 1 to the late reference frame (whose contrast a
pre-contrast frame does not share, so the networks hardly move those frames)
and steps 2 and the refinement to a PCA synthetic reference.  A PCA reference
can represent a whole block of frames sitting elsewhere (a temporal step at
bolus arrival is one component), so the pre-contrast frames end up aligned
with each other but, as a block, at their mean breathing position rather than
the reference's: measured on phantoms, a constant 1-2 px (2-4 mm) offset over
the 10-17 pre-contrast frames, the largest remaining loss of myocardial
overlap.

This step measures that offset once per series, contrast-invariantly: the
mean of the aligned pre-contrast frames is registered (translation only) to
the mean of the late frames in a disc on the LV.  On the high-resolution
slices the similarity is normalised gradient fields (``moco.baseline_similarity:
ngf``: the edges' directions must agree, whichever side is brighter) on a
1.25 mm crop, each image's ``eps`` half its noise SD (from the spread of the
frames it averages); on the low-resolution AIF slice, and with ``mi``, the mutual
information of Parzen joint histograms on the refinement's 2.5 mm crop.  Means
of ten or more frames have high SNR; the search is exhaustive on a
coarse-to-fine grid, so there is no local optimum to fall into.  It is trusted
only when the two halves of the pre-contrast block (even and odd frames) give
the same offset; otherwise (e.g. the short-saturation AIF slice, whose
pre-contrast frames are nearly noise) the series is left as it was.  Where the
gradient fields' halves disagree, mutual information is tried instead; and an
offset of more than :data:`CONFIRM_MM` by gradient fields is checked by mutual
information, the smaller of the two taken where they disagree.  A large offset by
one similarity is not applied where the other's whole block lies further than
``moco.baseline_agreement_mm`` from it, even with that one's halves disagreeing
(:func:`_refuted`: two basal blocks of 40 fresh studies had been moved 7.6 and 11.4 mm
onto false optima, the AIF slice with them).

A scan started shortly before the bolus leaves a block too short to halve (fewer than
:data:`MIN_FRAMES` frames; real protocols often have 2-5 pre-contrast beats where the
phantom has 10-17).  Such a block takes its margin frame too
(:func:`.precontrast.block_length`) and is moved where the two similarities are each
other's witness: the gradient fields' offset, where mutual information's lies within the
agreement (:func:`_short_block`).  The AIF slice's short block follows a tissue slice
instead (:mod:`perfmoco.moco.companion`).  On fresh phantoms cut to start five dynamics
before the AIF's bolus (13089-13094 a/b) the first five frames of the high-resolution
slices had sat 1.56 mm off on average after the correction (frames 0-1 2.6 mm), now 0.85
mm (1.0 mm), the AIF slice's 1.66 -> 1.05 mm.

A block far off (a deep breath) is searched for again over twice and then three
times the range, and the frames between it and the LV's bolus, which the steps
before aligned with it, follow its move where they still sit with it
(:func:`_followers`).

Where a pre-contrast heart shows few edges (blood and myocardium alike before
the bolus), resampled noise decides the gradient fields: its gradients' directions
follow where the crop's grid falls on the series' own, so the block and the late
mean matched best unmoved or on a lattice of offsets (11691 b: 0.0 mm found where
the block sat 3-5 mm off; 11689 b: a false optimum 11.8 mm away).  Both crops are
therefore smoothed by a Gaussian of half the series' pixel (:data:`NGF_SMOOTH`).
On 24 fresh breathing studies (11690-11713, 72 high-resolution slices) the block's
mean residual over the true myocardium went 0.76 -> 0.58 mm (median 0.50 -> 0.44,
worst 5.1 -> 3.3 mm; mutual information alone 0.98, worst 9.5 mm: a false optimum
that the check turns down where gradient fields find a small move).

A block's mean with hardly an edge gives a score that changes little with the offset: a
ridge or a plateau, whose top, where the search stops, is no place.  13214 a's mid block
sat 0.7 mm off after the steps before; the gradient fields' score rose gently along x to a
plateau (its top 0.03 of the score's range above the ring 2.5 mm about it), even and odd
frames agreed on that top, and the block was moved 2.5 mm (2.0 mm off after; mutual
information, asked instead, went 5 mm).  An offset is now taken only where it stands out
of the ring :data:`PEAK_RING_MM` about it by :data:`MIN_PROMINENCE` of its similarity's
range over the search (:func:`.blocksearch.peak_prominence`), by either similarity; a short
block's mutual information stays a witness (its agreement counts, not its peak).  On 60
slices of fresh studies (13214, 13216-13225 a, 11691 and 13216-13223 b) the offsets that
helped stood out by 0.076 or more (gradient fields) and 0.041 or more (mutual
information), the false ones by 0.029 or less; 3 slices changed, all better (block
residual mean 1.10 -> 0.95 mm, worst 8.5 -> 4.3 mm); none of 36 held-out slices
(13226-13231 a/b) changed.

Why gradients on the high-resolution slices: with every frame exactly on the
anatomy and the pre-contrast frames then moved by a known 0-2 mm (54 slices of
phantoms 11600-11605), mutual information on the 2.5 mm crop found the move to a
median 0.64 mm (p90 1.5, worst 11 mm: its interpolation artefacts and a second
optimum), gradients on the 1.25 mm crop to 0.33 mm (p90 0.62, worst 0.9 mm).
In the pipeline (8 fresh breathing studies, 11632-11639) the block's residual
against the truth fell from 0.98 to 0.68 mm (mean of the high-resolution
slices).  On the AIF slice (~4.5 mm pixels) gradients were no better (median
0.62 against 0.75 mm, p90 1.5 against 1.1).  With much more noise (5 % of the
brightest signal added to every frame) both degrade alike (median 0.9 / 1.1 mm).
"""

from __future__ import annotations

import functools
import logging
from typing import NamedTuple

import torch
from monai.networks.layers import separable_filtering

from perfmoco.moco.blocksearch import block_offset, block_offsets, peak_prominence
from perfmoco.moco.precontrast import (
    MIN_FRAMES,
    MIN_LATE,
    baseline_length,
    block_length,
    heart_disc,
)
from perfmoco.moco.refine import REFINE_CROP, REFINE_SPACING_MM, refine_crop
from perfmoco.moco.transforms import translate_frames

__all__ = [
    "BaselineOffset",
    "align_baseline_full_fov",
    "MIN_FRAMES",
    "MIN_LATE",
    "baseline_length",
    "block_length",
    "block_offset",
    "block_offsets",
    "heart_disc",
    "smooth_frames",
]

log = logging.getLogger(__name__)

#: Crop of this step: the refinement's (64 px of 2.5 mm about the LV centre).
CROP = REFINE_CROP
SPACING_MM = REFINE_SPACING_MM
#: The high-resolution slices' block search (``moco.baseline_similarity: ngf``): normalised
#: gradient fields on a crop of this size and pixel spacing (the same 160 mm about the LV),
#: each image's ``eps`` a share of its noise SD (:data:`perfmoco.moco.blocksearch.NGF_EPS`).
FINE_CROP = 128
FINE_SPACING_MM = 1.25
#: Both images of that search are smoothed by a Gaussian of this SD, in the series' own
#: pixels, first: resampled noise has gradient directions that depend on where the crop's
#: grid falls on the series' (more often along the axes between its pixels), and where the
#: pre-contrast heart shows few edges, that pattern alone made the block and the late
#: mean agree best unmoved (11691 b: 0.0 mm found where it sat 3-5 mm off).
NGF_SMOOTH = 0.5
#: A block offset by gradient fields larger than this (mm) is checked by mutual information.
CONFIRM_MM = 4.0
#: The frames after the block follow its move (:func:`_followers`) only for moves of at
#: least this (mm; smaller ones are within the frames' own residual), ...
FOLLOW_MIN_MM = 4.0
#: ... and at most this many of them.
FOLLOW_MAX = 8
#: A block still on the edge of twice ``moco.baseline_max_mm`` is searched again to this
#: many times it (11991 a, mid slice: a deep breather's block sat 16.9 mm off, beyond 16).
FARTHEST_REACH = 3
#: Range (mm) of the halves' searches about the whole block's offset: beyond is disagreement.
HALVES_MM = 2.0


#: Why a large block move was not applied: the other similarity found the block elsewhere.
_REFUTED = "a large move the other similarity places elsewhere"
#: A block's offset must stand out of the ring :data:`PEAK_RING_MM` about it by this share
#: of its similarity's range over the search (:func:`.blocksearch.peak_prominence`); else
#: the block's mean has too few edges to place it (module docstring).
MIN_PROMINENCE = 0.035
PEAK_RING_MM = 2.5
_NO_PEAK = "no distinct optimum"
_NAMES = {"ngf": "gradient fields", "mi": "mutual information"}


class BaselineOffset(NamedTuple):
    """What the pre-contrast alignment found for one series."""

    n_frames: int  #: pre-contrast frames (0 = none found, nothing done)
    offset_mm: tuple[float, float]  #: (dy, dx) applied to them, mm (0, 0 if not applied)
    applied: bool
    reason: str  #: why not applied, or "" when applied


def smooth_frames(frames: torch.Tensor, sigma_px: float) -> torch.Tensor:
    """Each frame ``(N, H, W)`` convolved with a Gaussian of SD ``sigma_px`` (edges replicated)."""
    r = max(1, int(round(3.0 * sigma_px)))
    x = torch.arange(-r, r + 1, dtype=frames.dtype, device=frames.device)
    k = torch.exp(-0.5 * (x / sigma_px) ** 2)
    return separable_filtering(frames[:, None], [k / k.sum()] * 2, mode="replicate")[:, 0]


def _block_search(crop, disc, n: int, n_late: int, spacing: float, similarity: str, config,
                  aif: bool, name: str, *, halves: bool = True, peak: bool = True):
    """The block's offset (crop pixels) onto the late frames' mean, or ``None``; why not;
    and the whole block's offset even where its halves disagree (None at the search's edge
    or where it is no distinct optimum).

    ``crop`` holds the block's ``n`` frames first and the ``n_late`` late ones last.
    ``halves=False``: the whole block's offset alone (a block too short to halve).
    ``peak``: the offset must be a distinct optimum of the score (:data:`MIN_PROMINENCE`);
    off for a witness of another similarity's offset (a short block's mutual information).
    """
    late = crop[-n_late:].mean(0)
    max_px = config.baseline_max_mm / spacing

    def sd_of_mean(frames):  # the noise SD of the frames' mean, from their spread
        return float(frames[:, disc].std(dim=0).median()) / frames.shape[0] ** 0.5

    sd_late = sd_of_mean(crop[-n_late:]) if similarity == "ngf" else 0.0

    def noise(frames):  # ngf: the noise SDs of a mean of these frames and of the late mean
        return (sd_of_mean(frames), sd_late) if similarity == "ngf" else None

    search = functools.partial(block_offset, fixed=late, disc=disc, similarity=similarity)
    block, block_noise = crop[:n].mean(0), noise(crop[:n])
    d, ok = search(block, max_px=max_px, noise=block_noise, widen=True)
    reach = 2
    if not ok:  # still on the edge at twice the range: once more, further (a deep breath)
        reach = FARTHEST_REACH
        d, ok = search(block, max_px=max_px * reach / 2, noise=block_noise, widen=True)
    if not ok or float(d.abs().max()) >= max_px:  # a deep breather's block far off
        log.info("%s: pre-contrast block offset beyond %.0f mm; searched to %.0f mm: %s",
                 name, config.baseline_max_mm, reach * config.baseline_max_mm,
                 "found" if ok else "again at the edge")
    if not ok:
        return None, "offset at the edge of the search", None
    # a ridge or plateau of the score is not a place (few edges, or little contrast)
    prominence = peak_prominence(block, late, disc, d, max_px=max_px, similarity=similarity,
                                 ring_px=PEAK_RING_MM / spacing, noise=block_noise) if peak else 1
    if prominence < MIN_PROMINENCE:
        log.info("%s: pre-contrast block offset by %s (%.1f, %.1f) mm not applied: no "
                 "distinct optimum (%.3f of the score's range above its %.1f mm ring)", name,
                 _NAMES[similarity], *(float(v) * spacing for v in d), prominence,
                 PEAK_RING_MM)
        return None, _NO_PEAK, None  # says nothing for or against another's offset
    if not halves:
        return d, "", d
    # the halves, searched about the whole block's offset (further is disagreement)
    half = HALVES_MM / spacing
    d_even, ok_e = search(crop[0:n:2].mean(0), max_px=half, start=d, levels=2,
                          noise=noise(crop[0:n:2]))
    d_odd, ok_o = search(crop[1:n:2].mean(0), max_px=half, start=d, levels=2,
                         noise=noise(crop[1:n:2]))
    spread = float((d_even - d_odd).norm()) * spacing
    if not (ok_e and ok_o):
        spread = max(spread, HALVES_MM)
    agreement = config.baseline_agreement_aif_mm if aif else config.baseline_agreement_mm
    if spread > agreement:
        mm = tuple(float(v) * spacing for v in d)
        log.info("%s: pre-contrast block offset (%.1f, %.1f) mm not applied: even and odd "
                 "frames disagree by %.1f mm", name, *mm, spread)
        return None, f"halves disagree by {spread:.1f} mm", d
    return d, "", d


def _confirmed(found, crop, disc, geo, n: int, n_late: int, config, name: str):
    """A large block offset by gradient fields, checked by mutual information (on ``crop``).

    Where the two differ by more than ``baseline_agreement_mm``, the smaller
    offset is taken (the networks' own alignment of the block is seldom far off;
    a false optimum far away is what either similarity can fall into).  Where mutual
    information's halves disagree, its whole block's offset still speaks against a
    move it lies far from: None (nothing moved; 13045 a, breathing: gradient fields
    took a basal block 11.4 mm along x, mutual information said 2.2 mm with halves 3.2
    mm apart; the block sat 2.8 mm off and was left 8.6 mm off, the AIF slice with it).
    """
    d, spacing, _ = found
    d_mi, _, whole = _block_search(crop, disc, n, n_late, SPACING_MM, "mi", config, False, name)
    mm = d * spacing
    if d_mi is None:
        if whole is None or not _refuted(mm, whole * SPACING_MM, config, name, "gradient fields"):
            return found
        return None
    mm_mi = d_mi * SPACING_MM
    if float((mm - mm_mi).norm()) <= config.baseline_agreement_mm or mm.norm() <= mm_mi.norm():
        return found
    log.info("%s: pre-contrast block offset by gradient fields (%.1f, %.1f) mm, by mutual "
             "information (%.1f, %.1f) mm: the smaller taken", name, *mm.tolist(),
             *mm_mi.tolist())
    return d_mi, SPACING_MM, geo


def _refuted(mm, mm_other, config, name: str, by: str) -> bool:
    """Whether a large block offset ``mm`` (by ``by``; mm) lies further than
    ``baseline_agreement_mm`` from the other similarity's whole-block offset
    ``mm_other`` (mm; None: that search ended at its edge and says nothing), found
    where that one's own halves disagreed.  Moves of at most :data:`CONFIRM_MM` pass.

    The other way round from :func:`_confirmed`: where the gradient fields' halves
    disagree, mutual information alone once took a basal block 7.6 mm off where the
    gradient fields said 9.5 mm elsewhere (13047 a, breathing and gasps: 6.7 mm off
    after, 2.4 mm left unmoved).
    """
    if float(mm.norm()) <= CONFIRM_MM or mm_other is None:
        return False
    if float((mm - mm_other).norm()) <= config.baseline_agreement_mm:
        return False
    other = "mutual information" if by == "gradient fields" else "gradient fields"
    log.info("%s: pre-contrast block offset by %s (%.1f, %.1f) mm not applied: %s found "
             "(%.1f, %.1f) mm", name, by, *mm.tolist(), other, *mm_other.tolist())
    return True


def align_baseline_full_fov(images, matrix, centre_yx, pixel_spacing_mm, intensity_range,
                            config, *, name: str = "series", aif: bool = False):
    """Move the pre-contrast block of a series onto the late frames (see module doc).

    Parameters
    ----------
    images : Tensor, shape (T, Y, X)
        The original dynamics (not the PD frames: moving them with the block
        made the PD myocardium SD on phantoms worse, 0.063 -> 0.072; they have
        a search of their own, :mod:`perfmoco.moco.pdalign`).
    matrix : Tensor, shape (T, 2, 3)
        Their full-FOV pull-back affine maps so far.
    centre_yx : tuple of 2 float
        LV centre, full-FOV pixels.
    pixel_spacing_mm : tuple of 2 float
    intensity_range : tuple of 2 float
        ``(lo, hi)`` of the dynamics, for the 0..1 scaling.
    config : MocoConfig
        ``baseline_*`` settings.
    name : str, keyword-only
        Series name for the log.
    aif : bool, keyword-only
        The low-resolution AIF slice: the disc is ``baseline_radius_aif_mm`` and the
        halves must agree within ``baseline_agreement_aif_mm`` (instead of
        ``baseline_radius_mm`` and ``baseline_agreement_mm``).

    Returns
    -------
    matrix : Tensor, shape (T, 2, 3), float64
    found : BaselineOffset
    """
    t = images.shape[0]
    geo, crop = refine_crop(images, matrix, centre_yx, pixel_spacing_mm, intensity_range)
    disc = heart_disc(config.disc_radius_mm(aif), device=images.device)
    found_n = baseline_length(crop, disc)
    n, short = block_length(found_n), found_n < MIN_FRAMES
    n_late = max(MIN_LATE, t // 4)
    # the AIF slice's short block follows a tissue slice instead (.companion)
    if n == 0 or (short and aif) or t - n_late < n + 4:
        return matrix, BaselineOffset(n, (0.0, 0.0), False, "too few pre-contrast frames")

    def fine():  # the finer crop of the frames that count (block and late), where asked for
        pick = torch.cat([torch.arange(n), torch.arange(t - n_late, t)]).to(images.device)
        return _fine_crop(images[pick], matrix[pick], centre_yx, pixel_spacing_mm,
                          intensity_range, config, aif)

    if short:
        found = _short_block(fine, crop, disc, geo, n, n_late, config, name)
    else:
        found = _long_block(fine, crop, disc, geo, n, n_late, config, name, aif)
    if not isinstance(found, tuple):
        return matrix, BaselineOffset(n, (0.0, 0.0), False, found)
    d, spacing, geo = found
    mm = tuple(float(v) * spacing for v in d)
    m = n + _followers(crop, disc, n, d * spacing / SPACING_MM)
    out = translate_frames(matrix, slice(0, m), d, geo)
    log.info("%s: pre-contrast dynamics 0-%d moved by (%.1f, %.1f) mm onto the late frames%s",
             name, n - 1, *mm, f" (and {n}-{m - 1}, still with them)" if m > n else "")
    return out, BaselineOffset(n, mm, True, "")


def _fine_crop(images, matrix, centre_yx, pixel_spacing_mm, intensity_range, config,
               aif: bool):
    """The gradient fields' crop (:data:`FINE_CROP` of :data:`FINE_SPACING_MM`) of the
    given frames, smoothed (:data:`NGF_SMOOTH`): ``(geometry, frames, disc)``.
    """
    fgeo, fine = refine_crop(images, matrix, centre_yx, pixel_spacing_mm, intensity_range,
                             size=FINE_CROP, spacing_mm=FINE_SPACING_MM)
    sigma = NGF_SMOOTH * min(pixel_spacing_mm) / FINE_SPACING_MM
    fdisc = heart_disc(config.disc_radius_mm(aif), device=images.device, size=FINE_CROP,
                       spacing_mm=FINE_SPACING_MM)
    return fgeo, smooth_frames(fine, sigma), fdisc


def _short_block(fine, crop, disc, geo, n: int, n_late: int, config, name: str):
    """A block of fewer than :data:`MIN_FRAMES` frames on a high-resolution slice:
    ``(d, spacing, geo)``, or why not.

    No halves to compare, so the two similarities are each other's witness: the
    gradient fields' offset (fine crop) is taken where mutual information's (``crop``)
    lies within ``moco.baseline_agreement_mm``; nothing is moved where either search
    ends at its edge.
    """
    fgeo, frames, fdisc = fine()
    d, why, _ = _block_search(frames, fdisc, n, n_late, FINE_SPACING_MM, "ngf", config, False,
                              name, halves=False)
    if d is None:
        return why
    d_mi, why, _ = _block_search(crop, disc, n, n_late, SPACING_MM, "mi", config, False, name,
                                 halves=False, peak=False)  # a witness only
    if d_mi is None:
        return why
    mm, mm_mi = d * FINE_SPACING_MM, d_mi * SPACING_MM
    apart = float((mm - mm_mi).norm())
    if apart > config.baseline_agreement_mm:
        log.info("%s: short pre-contrast block (%d frames) not moved: gradient fields (%.1f, "
                 "%.1f) mm, mutual information (%.1f, %.1f) mm", name, n, *mm.tolist(),
                 *mm_mi.tolist())
        return f"a short block the two similarities place {apart:.1f} mm apart"
    return d, FINE_SPACING_MM, fgeo


def _long_block(fine, crop, disc, geo, n: int, n_late: int, config, name: str, aif: bool):
    """A block of at least :data:`MIN_FRAMES` frames: ``(d, spacing, geo)``, or why not.

    Gradient fields on the fine crop (high-resolution slices, ``moco.baseline_similarity:
    ngf``), trusted where the block's halves agree and a large move is confirmed
    (:func:`_confirmed`); else mutual information on ``crop``, unless refuted.
    """
    found, mm_ngf = None, None  # mm_ngf: the gradient fields' whole-block offset, mm
    if not aif and config.baseline_similarity == "ngf":
        fgeo, frames, fdisc = fine()
        d, why, whole = _block_search(frames, fdisc, n, n_late, FINE_SPACING_MM, "ngf", config,
                                      aif, name)
        mm_ngf = None if whole is None else whole * FINE_SPACING_MM
        if d is not None:
            found = (d, FINE_SPACING_MM, fgeo)
            if float(d.norm()) * FINE_SPACING_MM > CONFIRM_MM:  # a large move: a second witness
                found = _confirmed(found, crop, disc, geo, n, n_late, config, name)
                if found is None:
                    return _REFUTED
        else:
            log.info("%s: pre-contrast block by gradient fields not trusted (%s); by mutual "
                     "information instead", name, why)
    if found is None:
        d, why, _ = _block_search(crop, disc, n, n_late, SPACING_MM, "mi", config, aif, name)
        if d is not None and _refuted(d * SPACING_MM, mm_ngf, config, name,
                                      "mutual information"):
            d, why = None, _REFUTED
        if d is None:
            return why
        found = (d, SPACING_MM, geo)
    return found


def _followers(crop, disc, n: int, d) -> int:
    """How many frames after the block still sit with it (the bolus's first frames).

    The block ends a frame before the first enhancement in the disc (the RV's); the
    frames up to the LV's arrival were aligned with it by the steps before, and a
    block moved far leaves them behind (11991 a, mid slice: frames 13-17 11-15 mm off
    after the block's 16.9 mm move).  A frame follows while, registered (mutual
    information, coarse crop) onto the block's last frame, it lies nearer to it
    unmoved than to where the late frames lie (``-d``).  Only for moves of at least
    :data:`FOLLOW_MIN_MM`, and at most :data:`FOLLOW_MAX` frames.
    """
    d = d.double().cpu()
    if float(d.norm()) * SPACING_MM < FOLLOW_MIN_MM:
        return 0
    last = crop[n - 1]
    k = 0
    while k < FOLLOW_MAX and n + k < crop.shape[0]:
        r, ok = block_offset(crop[n + k], last, disc, max_px=float(d.abs().max()) + 2.0,
                             levels=2)
        if not ok or float(r.norm()) >= float((r + d).norm()):
            break
        k += 1
    return k
