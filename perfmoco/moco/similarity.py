"""Contrast-invariant similarities of an image pair, for the exhaustive translation searches.

Mutual information of linear-Parzen joint histograms (:func:`mutual_information`: the
pre-contrast block on the AIF slice, the PD frames, the deep-breathing restart) and
normalised gradient fields (:func:`gradient_alignment` of :func:`gradient_images`, each
image's ``eps`` from its noise, :func:`noise_sd`: the pre-contrast block on the
high-resolution slices).  Both score many candidate shifts of ``moving`` at once; see
:mod:`perfmoco.moco.baseline` for why each is used where.
"""

from __future__ import annotations

import torch

__all__ = ["gradient_alignment", "gradient_images", "mutual_information", "noise_sd"]


def mutual_information(moving: torch.Tensor, fixed: torch.Tensor, bins: int) -> torch.Tensor:
    """Mutual information of each row of ``moving`` (N, P) with ``fixed`` (P,): (N,).

    Joint histograms with linear (first-order B-spline) Parzen weights: each
    pixel adds to the 2 x 2 bins around its pair of values, all N rows in one
    ``scatter_add``.  MONAI's ``GlobalMutualInformationLoss`` (Gaussian Parzen
    windows, used in training) gives the same optimum here but is ~10x slower,
    and this search runs on every slice within the console's latency budget.
    """
    def binned(v):  # (..., P) -> lower bin and the weight of the upper one
        lo, hi = v.min(dim=-1, keepdim=True).values, v.max(dim=-1, keepdim=True).values
        x = (v - lo) / (hi - lo).clamp_min(1e-12) * (bins - 1)
        i0 = x.floor().clamp(0, bins - 2)
        return i0.long(), x - i0

    n, p = moving.shape
    im, fm = binned(moving.double())  # (N, P)
    i_f, ff = binned(fixed.double())  # (P,)
    base = im * bins + i_f
    gm = 1.0 - fm
    joint = torch.zeros(n, bins * bins, dtype=torch.float64, device=moving.device)
    joint.scatter_add_(1, base, gm * (1.0 - ff))
    joint.scatter_add_(1, base + 1, gm * ff)
    joint.scatter_add_(1, base + bins, fm * (1.0 - ff))
    joint.scatter_add_(1, base + bins + 1, fm * ff)
    joint = joint.reshape(n, bins, bins) / p
    pm = joint.sum(2, keepdim=True)
    pf = joint.sum(1, keepdim=True)
    ratio = joint / (pm * pf).clamp_min(1e-300)
    return (joint * torch.log(ratio.clamp_min(1e-300))).sum((1, 2))


def gradient_images(images: torch.Tensor) -> torch.Tensor:
    """Central-difference gradients ``(..., 2, H, W)`` (y, x) of ``(..., H, W)``; 0 on the edge."""
    g = torch.zeros(*images.shape[:-2], 2, *images.shape[-2:], dtype=images.dtype,
                    device=images.device)
    g[..., 0, 1:-1, :] = 0.5 * (images[..., 2:, :] - images[..., :-2, :])
    g[..., 1, :, 1:-1] = 0.5 * (images[..., :, 2:] - images[..., :, :-2])
    return g


def noise_sd(image: torch.Tensor, mask: torch.Tensor) -> float:
    """Robust noise SD of an image within ``mask``: MAD of its neighbour differences.

    Edges are few among the pixels, so the median absolute difference of adjacent
    pixels reads the noise (a difference of two pixels has ``sqrt(2)`` times its SD).
    """
    dy = (image[1:, :] - image[:-1, :])[mask[1:, :] & mask[:-1, :]]
    dx = (image[:, 1:] - image[:, :-1])[mask[:, 1:] & mask[:, :-1]]
    d = torch.cat([dy.flatten(), dx.flatten()]).double()
    return float(d.abs().median()) / 0.6745 / 2 ** 0.5 if d.numel() else 0.0


def gradient_alignment(moving: torch.Tensor, fixed: torch.Tensor, eps_moving: float,
                       eps_fixed: float) -> torch.Tensor:
    """Normalised gradient fields: mean squared cosine of the gradients' angle, ``(N,)``.

    ``moving`` ``(N, 2, P)`` and ``fixed`` ``(2, P)`` are gradients at P pixels.  Each
    pixel adds ``(gm . gf)^2 / ((|gm|^2 + em^2)(|gf|^2 + ef^2))``: 1 where the edges
    are parallel, whichever tissue is brighter (contrast-invariant), ~0 where either
    image's gradient is small against its ``eps`` (its noise: flat regions do not
    count; Haber and Modersitzki 2006).
    """
    gm, gf = moving.float(), fixed.float()  # single precision: only the best of them counts
    nf = gf.square().sum(0) + (eps_fixed ** 2 + 1e-20)
    dot = gm[:, 0] * gf[0] + gm[:, 1] * gf[1]
    den = (gm[:, 0].square() + gm[:, 1].square() + (eps_moving ** 2 + 1e-20)) * nf
    return (dot.square() / den).mean(1)
