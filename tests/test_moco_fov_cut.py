"""Training for a tight field of view: random edges, and losses that ignore them."""

import json

import numpy as np
import torch
import yaml

from perfmoco.moco.augment import random_fov_cut
from perfmoco.moco.losses import stage_loss
from perfmoco.moco.train import train_main


def test_random_fov_cut_keeps_the_heart_and_cuts_some():
    g = torch.Generator().manual_seed(0)
    assert bool((random_fov_cut(8, 64, p=0.0, min_px=10, generator=g) == 1).all())
    m = random_fov_cut(200, 64, p=1.0, min_px=20, generator=g)[:, 0]
    assert m.shape == (200, 64, 64)
    assert bool((m.flatten(1).min(dim=1).values == 0).all())  # every one is cut
    r = torch.arange(64) - 31.5
    inner = (r.abs()[:, None] < 19.5) & (r.abs()[None, :] < 19.5)
    assert bool((m[:, inner] == 1).all())  # nothing closer than min_px to the centre
    # the cut masks are rectangles: rows and columns are separable
    rows, cols = m.amax(dim=2), m.amax(dim=1)
    assert torch.equal(m, rows[:, :, None] * cols[:, None, :])
    some = random_fov_cut(400, 64, p=0.5, min_px=20, generator=g)[:, 0]
    share = float((some.flatten(1).min(dim=1).values == 0).float().mean())
    assert 0.4 < share < 0.6


def _scene(x0):
    yy, xx = np.mgrid[0:64, 0:64].astype(np.float32)
    img = 0.5 + np.exp(-((yy - 32) ** 2 + (xx - x0) ** 2) / (2 * 5.0**2))
    img += 0.3 * np.exp(-((yy - 24) ** 2 + (xx - x0 - 6) ** 2) / (2 * 3.0**2))
    return torch.from_numpy(img)[None, None]


def test_masked_loss_finds_the_motion_not_the_edge():
    # the heart moved 3 px to the right; the image's edge (column 44) stayed put
    mask = torch.ones(1, 1, 64, 64)
    mask[..., 44:] = 0
    fixed, moving = _scene(26.0) * mask, _scene(29.0) * mask

    def loss(shift, **kw):
        ddf = torch.zeros(1, 2, 64, 64)
        ddf[:, 1] = shift  # pull-back: warped(p) = moving(p + shift)
        return float(stage_loss("affine2", ddf, moving=moving, fixed=fixed, **kw))

    shifts = np.arange(0.0, 5.5, 0.5)
    masked = [loss(s, mask=mask) for s in shifts]
    plain = [loss(s) for s in shifts]
    assert shifts[int(np.argmin(masked))] == 3.0
    assert masked[6] < -0.999  # the true shift aligns every pixel both crops hold
    assert shifts[int(np.argmin(plain))] < 3.0  # without the mask the edge pulls back


def test_training_with_fov_cuts_reports_both_validation_losses(tmp_path):
    cfg = {
        "stage": "affine1", "out_dir": str(tmp_path / "run"), "steps": 2, "batch_size": 2,
        "val_every": 2, "ckpt_every": 2, "threads": 1,
        "augment": {"fov_cut_p": 0.5, "fov_cut_min_mm": 40.0},
        "data": {"source": "synthetic", "train_seeds": [0, 2], "val_seeds": [50, 51],
                 "cache_dir": str(tmp_path / "cache"), "workers": 1},
    }
    path = tmp_path / "affine1.yaml"
    path.write_text(yaml.safe_dump(cfg))
    train_main(path)
    hist = json.loads((tmp_path / "run" / "affine1_history.json").read_text())
    h = hist[-1]
    assert np.isfinite(h["val_loss_cut"]) and np.isfinite(h["val_loss_uncut"])
    assert h["val_loss"] == np.float64(0.5 * h["val_loss_uncut"] + 0.5 * h["val_loss_cut"])
