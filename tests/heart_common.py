"""A synthetic heart slice for the search and similarity tests."""

from __future__ import annotations

import torch

from perfmoco.moco.transforms import identity_grid


def heart(n=64, *, blood, myo, lung, shift=(0.0, 0.0), noise=0.0, seed=0):
    """A ring (myocardium) around a disc (blood) beside a dark lung, in a body."""
    g = identity_grid((n, n)).double()
    y, x = g[0] - 31.5 - shift[0], g[1] - 31.5 - shift[1]
    r = torch.hypot(y, x * 0.9)
    img = torch.full((n, n), 0.4, dtype=torch.float64)
    img[torch.hypot(y + 4, x - 16) < 9] = lung
    img[(r >= 8) & (r < 12)] = myo
    img[r < 8] = blood
    gen = torch.Generator().manual_seed(seed)
    img = img + noise * torch.randn(n, n, generator=gen, dtype=torch.float64)
    # a little blur, as a real point-spread function
    k = torch.tensor([0.25, 0.5, 0.25], dtype=torch.float64)
    img = torch.nn.functional.conv2d(img[None, None], (k[:, None] * k[None])[None, None],
                                     padding=1)[0, 0]
    return img.float()
