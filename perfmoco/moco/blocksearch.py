"""Exhaustive translation search of whole frames (or means of frames) onto one image.

The pre-contrast block (:mod:`perfmoco.moco.baseline`), the PD frames
(:mod:`perfmoco.moco.pdalign`) and the coarse search (:mod:`perfmoco.moco.coarse`)
all ask where an image sits against another of different contrast: a coarse-to-fine
grid of translations scored by mutual information or normalised gradient fields in a
disc, with no local optimum to fall into.
"""

from __future__ import annotations

import torch

from perfmoco.moco.similarity import (
    gradient_alignment,
    gradient_images,
    mutual_information,
    noise_sd,
)
from perfmoco.moco.transforms import identity_grid, sample

__all__ = ["BINS", "NGF_EPS", "block_offset", "block_offsets", "group_offset", "peak_prominence"]

#: Parzen bins of the mutual information (means of many frames: smooth histograms).
BINS = 32
#: Normalised gradient fields: each image's ``eps`` this share of its noise SD (0.5 and 1
#: alike on phantoms; 2 and more let a few strong edges decide, and offsets of 10 mm and
#: more appeared).
NGF_EPS = 0.5


def _square(k: int) -> torch.Tensor:
    """The ``((2k + 1)^2, 2)`` points of a square grid about 0, in steps (float64)."""
    ax = torch.arange(-k, k + 1, dtype=torch.float64)
    return torch.stack(torch.meshgrid(ax, ax, indexing="ij"), -1).reshape(-1, 2)


def block_offset(moving: torch.Tensor, fixed: torch.Tensor, disc: torch.Tensor, *,
                 max_px: float, start: torch.Tensor | None = None, levels: int = 3,
                 bins: int = BINS, reach: int = 1, similarity: str = "mi",
                 noise: tuple[float, float] | None = None,
                 widen: bool = False) -> tuple[torch.Tensor, bool]:
    """Translation ``d`` that maximises the similarity of ``moving(p + d)`` with ``fixed(p)``.

    An exhaustive search on a 9 x 9 grid spanning ``+-max_px`` about ``start``,
    then ``levels - 1`` finer 9 x 9 grids (each a quarter of the previous step)
    about the best point so far: 81 MI evaluations a level (more on the first with
    ``reach``), batched.

    Parameters
    ----------
    moving, fixed : Tensor, shape (H, W)
    disc : Tensor, shape (H, W), bool
        Pixels that enter the mutual information.
    max_px : float, keyword-only
        Search range per axis about ``start``, pixels.
    start : Tensor, shape (2,), optional, keyword-only
        Centre of the search (default: no shift).
    levels : int, keyword-only
    bins : int, keyword-only
        Parzen histogram bins.
    reach : int, keyword-only
        The coarse grid spans ``reach`` times ``+-max_px`` at the same step
        (``8 reach + 1`` points a side); the finer grids are unchanged.
    similarity : {"mi", "ngf"}, keyword-only
        Mutual information (:func:`.similarity.mutual_information`) or normalised
        gradient fields (:func:`.similarity.gradient_alignment`, each image's ``eps``
        :data:`NGF_EPS` times its noise SD, :func:`.similarity.noise_sd`).
    noise : tuple of 2 float, keyword-only, optional
        ``ngf``: the noise SDs of ``moving`` and ``fixed`` (e.g. from the frames
        they average); default :func:`.similarity.noise_sd` of each.
    widen : bool, keyword-only
        Where the coarse optimum lies on the edge of the range, search again over
        twice the range at the same step (a deep breather's frames far off).

    Returns
    -------
    offset : Tensor, shape (2,), float64
        ``(dy, dx)`` in pixels, to ``max_px / 4 ** levels``.
    interior : bool
        False when the coarse optimum lies on the edge of the search range
        (the true one may be outside it: not to be trusted).
    """
    d, ok = block_offsets(moving[None], fixed, disc, max_px=max_px, levels=levels, bins=bins,
                          start=None if start is None else start[None], reach=reach,
                          similarity=similarity, noise=noise, widen=widen)
    return d[0], bool(ok[0])


def block_offsets(moving: torch.Tensor, fixed: torch.Tensor, disc: torch.Tensor, *,
                  max_px: float, start: torch.Tensor | None = None, levels: int = 3,
                  bins: int = BINS, chunk: int = 16, reach: int = 1,
                  similarity: str = "mi", noise: tuple[float, float] | None = None,
                  widen: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`block_offset` of many frames ``(N, H, W)`` to one ``fixed``, batched.

    Returns ``(N, 2)`` offsets (float64, CPU) and ``(N,)`` interior flags (with
    ``widen``: of the wider search, for the frames searched again).
    """
    given = moving
    n = moving.shape[0]
    g_disc = identity_grid(moving.shape[-2:], device=moving.device)[:, disc]  # (2, P)
    best = (torch.zeros(n, 2, dtype=torch.float64) if start is None
            else start.double().cpu().reshape(n, 2).clone())
    origin = best.clone()
    if similarity not in ("mi", "ngf"):
        raise ValueError(f"similarity must be 'mi' or 'ngf', got {similarity!r}")
    if similarity == "ngf":  # the gradients are sampled (a translation moves them alike)
        if noise is None:
            noise = (max(noise_sd(m, disc) for m in moving), noise_sd(fixed, disc))
        eps_m, eps_f = NGF_EPS * noise[0], NGF_EPS * noise[1]
        moving = gradient_images(moving.float())
        fix = gradient_images(fixed.float())[:, disc]
    else:
        fix = fixed[disc].float()
    step = max_px / 4.0
    interior = torch.ones(n, dtype=torch.bool)
    for level in range(levels):
        grid = _square(4 * max(int(reach), 1) if level == 0 else 4)
        for i0 in range(0, n, chunk):
            sel = slice(i0, min(i0 + chunk, n))
            cand = best[sel, None] + grid[None] * step  # (c, G, 2)
            c = cand.shape[0]
            # only the disc's pixels are sampled: (c, 2, G, P) coordinates
            coords = g_disc[None, :, None, :] + cand.permute(0, 2, 1).to(g_disc)[..., None]
            shifted = sample(moving[sel], coords, padding="border")  # (c, [2,] G, P)
            if similarity == "ngf":
                score = gradient_alignment(
                    shifted.transpose(1, 2).reshape(-1, 2, shifted.shape[-1]), fix, eps_m, eps_f)
            else:
                score = mutual_information(shifted.reshape(c * len(grid), -1), fix, bins)
            k = torch.argmax(score.reshape(c, -1), dim=1)
            pick = cand[torch.arange(c), k.cpu()]
            if level == 0:
                interior[sel] = ((pick - origin[sel]).abs()
                                 < max(int(reach), 1) * max_px - 1e-9).all(dim=1)
            best[sel] = pick
        step /= 4.0
    far = torch.nonzero(~interior).flatten()
    if widen and far.numel():  # on the edge: twice the range at the same step
        best[far], interior[far] = block_offsets(
            given[far.to(given.device)], fixed, disc, max_px=max_px, levels=levels, bins=bins,
            start=origin[far], chunk=chunk, reach=2 * max(int(reach), 1),
            similarity=similarity, noise=noise)
    return best, interior


def group_offset(frames: torch.Tensor, fixed: torch.Tensor, disc: torch.Tensor, *,
                 max_px: float, noise: tuple[float, float], start: torch.Tensor | None = None,
                 levels: int = 3) -> tuple[torch.Tensor, bool]:
    """One translation of several frames ``(N, H, W)`` of different contrast onto ``fixed``.

    As :func:`block_offsets` with ``similarity="ngf"``, but every frame moves by the
    same ``d`` and the score is the mean of their gradient fields' alignment: frames
    that share no contrast (and so no mean image) still share their edges' directions.
    ``noise`` is the SDs of one frame and of ``fixed``.  Returns ``(2,)`` float64 and
    whether the coarse optimum lies inside the range.
    """
    g_disc = identity_grid(frames.shape[-2:], device=frames.device)[:, disc]  # (2, P)
    moving = gradient_images(frames.float())
    fix = gradient_images(fixed.float())[:, disc]
    origin = torch.zeros(2, dtype=torch.float64) if start is None else start.double().cpu()
    best = origin.clone()
    grid = _square(4)
    step, interior = max_px / 4.0, True
    for level in range(levels):
        cand = best[None] + grid * step  # (G, 2)
        coords = g_disc[:, None, :] + cand.T.to(g_disc)[..., None]  # (2, G, P)
        shifted = sample(moving, coords[None], padding="border")  # (N, 2, G, P)
        score = gradient_alignment(shifted.transpose(1, 2).reshape(-1, 2, shifted.shape[-1]),
                                   fix, NGF_EPS * noise[0], NGF_EPS * noise[1])
        score = score.reshape(len(frames), len(grid)).sum(0)
        best = cand[int(torch.argmax(score))]
        if level == 0:
            interior = bool(((best - origin).abs() < max_px - 1e-9).all())
        step /= 4.0
    return best, interior


def peak_prominence(moving: torch.Tensor, fixed: torch.Tensor, disc: torch.Tensor,
                    offset: torch.Tensor, *, max_px: float, ring_px: float,
                    similarity: str = "ngf", noise: tuple[float, float] | None = None,
                    bins: int = BINS) -> float:
    """How far the optimum ``offset`` of :func:`block_offset` stands out of its surroundings.

    The score (``similarity`` and ``noise`` as :func:`block_offset` takes them) at
    ``offset`` less the best of the 8 points ``ring_px`` about it, as a share of the
    score's range over the search's coarse grid (9 x 9 over ``+-max_px`` about 0, and
    ``offset`` itself).  Near 0: the optimum is a ridge or a plateau (a mean image with
    few edges, whose score hardly changes with the offset), not a place; negative: a
    better point lies on the ring.
    """
    g_disc = identity_grid(moving.shape[-2:], device=moving.device)[:, disc]  # (2, P)
    at = offset.double().cpu().reshape(1, 2)
    cand = torch.cat([at, at + _square(1)[[0, 1, 2, 3, 5, 6, 7, 8]] * ring_px,
                      _square(4) * (max_px / 4.0)])  # (1 + 8 + 81, 2)
    coords = g_disc[:, None, :] + cand.T.to(g_disc)[..., None]  # (2, G, P)
    if similarity == "ngf":
        if noise is None:
            noise = (noise_sd(moving, disc), noise_sd(fixed, disc))
        shifted = sample(gradient_images(moving.float())[None], coords[None],
                         padding="border")[0]  # (2, G, P)
        score = gradient_alignment(shifted.transpose(0, 1), gradient_images(fixed.float())[:, disc],
                                   NGF_EPS * noise[0], NGF_EPS * noise[1])
    elif similarity == "mi":
        shifted = sample(moving.float()[None], coords[None], padding="border")[0]  # (G, P)
        score = mutual_information(shifted, fixed[disc].float(), bins)
    else:
        raise ValueError(f"similarity must be 'mi' or 'ngf', got {similarity!r}")
    score = score.double()
    top, ring, grid = score[0], score[1:9].max(), score[9:].min()
    span = float(top - min(grid, top))
    return float(top - ring) / span if span > 0 else 0.0
