"""The three registration networks (MONAI GlobalNet / LocalNet) and checkpoints.

:class:`RegNet` wraps one MONAI network so that every stage has the same
call: ``net(moving, fixed)`` with ``(B, 1, n, n)`` inputs returns a
pull-back displacement ``(B, 2, n, n)`` in crop pixels (DESIGN.md
convention), and for the affine stages also the ``(B, 2, 3)`` pixel affine
map (from :meth:`RegNet.predict`), which the pipeline composes exactly.

GlobalNet's affine head works on pixel indices with the origin at the
corner, which couples rotation and translation badly for an optimiser; the
wrapper gives the head a centred grid in ``[-1, 1]`` instead (identity
initialisation is kept) and converts its output to pixels.

Checkpoints carry their spec (constructor arguments, crop size and pixel
size), the perfmoco version and training metadata, and are rebuilt with
:func:`load` (``device`` always a parameter), as voxelmorph's ``modelio``.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path
from typing import Any

import torch
from monai.networks.nets import GlobalNet, LocalNet
from torch import nn

__all__ = ["CHECKPOINT_FORMAT", "STAGES", "RegNet", "default_spec", "in_chunks", "load",
           "save", "weights_id"]

log = logging.getLogger(__name__)

#: Version of the checkpoint layout written by :func:`save`.
CHECKPOINT_FORMAT = 1
#: The three stages, in order, and their checkpoint file names.
STAGES = ("affine1", "affine2", "dense")


def default_spec(stage: str) -> dict[str, Any]:
    """Network spec of a stage, sized by measurement (see weights/MODEL_CARD.md).

    Parameters
    ----------
    stage : {"affine1", "affine2", "dense"}

    Returns
    -------
    dict
        ``kind`` ("global" / "local"), ``crop`` (pixels), ``crop_spacing_mm``
        and the MONAI constructor arguments.
    """
    if stage in ("affine1", "affine2"):
        return {
            "kind": "global",
            "crop": 128,
            "crop_spacing_mm": 1.8,
            "depth": 5,
            "channels": 4,
        }
    if stage == "dense":
        return {
            "kind": "local",
            "crop": 96,
            "crop_spacing_mm": 1.8,
            "channels": 6,
            "levels": [1, 2, 3, 4],
        }
    raise ValueError(f"stage must be one of {STAGES}, got {stage!r}")


class RegNet(nn.Module):
    """One registration network with a uniform call.

    Parameters
    ----------
    spec : dict
        From :func:`default_spec` (``kind``, ``crop``, ``crop_spacing_mm``, ...).
    """

    def __init__(self, spec: dict[str, Any]) -> None:
        super().__init__()
        self.spec = dict(spec)
        n = int(spec["crop"])
        self.kind = spec["kind"]
        if self.kind == "global":
            self.net = GlobalNet(
                image_size=[n, n],
                spatial_dims=2,
                in_channels=2,
                num_channel_initial=int(spec["channels"]),
                depth=int(spec["depth"]),
                save_theta=True,
            )
            half = (n - 1) / 2.0
            # centred, unit-scaled grid for the affine head (see module docstring)
            self.net.output_block.grid = (self.net.output_block.grid - half) / half
            self._half = half
        elif self.kind == "local":
            self.net = LocalNet(
                spatial_dims=2,
                in_channels=2,
                out_channels=2,
                num_channel_initial=int(spec["channels"]),
                extract_levels=tuple(int(v) for v in spec["levels"]),
                out_kernel_initializer="zeros",  # identity at initialisation
                mode="bilinear",
                align_corners=False,
            )
        else:
            raise ValueError(f"spec kind must be 'global' or 'local', got {self.kind!r}")

    @property
    def crop(self) -> int:
        return int(self.spec["crop"])

    @property
    def crop_spacing_mm(self) -> float:
        return float(self.spec["crop_spacing_mm"])

    def forward(self, moving: torch.Tensor, fixed: torch.Tensor) -> torch.Tensor:
        """Displacement that aligns ``moving`` to ``fixed``.

        Parameters
        ----------
        moving, fixed : Tensor, shape (B, 1, n, n), float32, values about [0, 1]

        Returns
        -------
        Tensor, shape (B, 2, n, n), float32, crop pixels
            Pull-back: ``warp(moving, d) ≈ fixed`` (:meth:`predict` also gives
            the affine kind's pixel affine map).
        """
        return self.predict(moving, fixed)[0]

    def predict(self, moving: torch.Tensor, fixed: torch.Tensor):
        """``(ddf, affine)``: :meth:`forward`'s displacement and, for the affine kind, the
        ``(B, 2, 3)`` pixel affine map (None for the local kind).
        """
        x = torch.cat([moving, fixed], dim=1)
        ddf = self.net(x)
        if self.kind != "global":
            return ddf, None
        ddf = ddf * self._half
        theta = self.net.output_block.theta.reshape(-1, 2, 3)
        a = theta[:, :, :2]
        b = theta[:, :, 2]
        c = torch.full((2,), self._half, dtype=theta.dtype, device=theta.device)
        # g = (p - c) / h  ->  p' = A p + c - A c + h b
        shift = c - a @ c + self._half * b
        return ddf, torch.cat([a, shift[:, :, None]], dim=2)


def fuse_batchnorm(model: RegNet) -> RegNet:
    """Fold every eval-mode batch norm into the convolution before it, in place.

    For inference only (the folded network no longer trains like the original):
    MONAI's blocks apply conv -> norm -> (skip) -> activation, and a frozen batch
    norm is an affine map per channel, so ``conv'(x) = norm(conv(x))`` exactly (up
    to rounding).  Saves the norms' passes over every activation map (~5 % of a
    study's CPU time).  Returns ``model``.
    """
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    if model.training:
        raise ValueError("fuse_batchnorm needs a model in eval mode")
    for mod in model.modules():
        conv, adn = getattr(mod, "conv", None), getattr(mod, "adn", None)
        if isinstance(conv, (nn.Conv2d, nn.ConvTranspose2d)) and adn is not None and \
                isinstance(getattr(adn, "N", None), nn.BatchNorm2d):
            mod.conv = fuse_conv_bn_eval(conv, adn.N,
                                         transpose=isinstance(conv, nn.ConvTranspose2d))
            adn.N = nn.Identity()
        layers, norms = getattr(mod, "layers", None), getattr(mod, "norms", None)
        if isinstance(layers, nn.ModuleList) and isinstance(norms, nn.ModuleList):
            for i, (layer, norm) in enumerate(zip(layers, norms)):
                c = getattr(layer, "conv", None)
                if isinstance(c, nn.Conv2d) and isinstance(norm, nn.BatchNorm2d):
                    layer.conv, norms[i] = fuse_conv_bn_eval(c, norm), nn.Identity()
    return model


def save(path: str | Path, model: RegNet, *, stage: str, train_info: dict | None = None) -> None:
    """Write a checkpoint that carries its spec and version.

    Parameters
    ----------
    path : str or Path
    model : RegNet
    stage : {"affine1", "affine2", "dense"}, keyword-only
    train_info : dict, keyword-only, optional
        Training config, step, metrics (kept for the model card).
    """
    from perfmoco import __version__

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().float() for k, v in model.state_dict().items()}
    payload = {
        "format": CHECKPOINT_FORMAT,
        "perfmoco_version": __version__,
        "stage": stage,
        "spec": model.spec,
        "state_dict": state,
        "train_info": train_info or {},
    }
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(payload, tmp)
    tmp.replace(path)


def load(path: str | Path, *, device: str | torch.device = "cpu") -> tuple[RegNet, dict]:
    """Rebuild a network from a checkpoint written by :func:`save`.

    Parameters
    ----------
    path : str or Path
    device : str or torch.device, keyword-only

    Returns
    -------
    model : RegNet
        In eval mode, on ``device``.
    payload : dict
        The checkpoint without the weights (stage, spec, version, train_info).

    Raises
    ------
    FileNotFoundError
        When ``path`` does not exist.
    ValueError
        When the file is not a perfmoco checkpoint of a known format.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # torch raises pickle / zip / runtime errors alike
        raise ValueError(f"{path}: not a readable perfmoco checkpoint ({exc})") from None
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        got = payload.get("format") if isinstance(payload, dict) else type(payload).__name__
        raise ValueError(
            f"{path}: not a perfmoco checkpoint of format {CHECKPOINT_FORMAT} (got {got!r})"
        )
    model = RegNet(payload["spec"])
    model.load_state_dict({k: v.float() for k, v in payload["state_dict"].items()})
    model.to(device).eval()
    meta = {k: v for k, v in payload.items() if k != "state_dict"}
    return model, meta


def weights_id(folder: str | Path, shipped: str | Path) -> str:
    """Which weights a corrector runs (for the results' audit trail): ``shipped`` or the
    folder, and the first 12 hex digits of the SHA-256 of its three stages' files.
    """
    folder = Path(folder)
    digest = hashlib.sha256()
    for stage in STAGES:
        digest.update((folder / f"{stage}.pt").read_bytes())
    label = "shipped" if folder.resolve() == Path(shipped).resolve() else str(folder.resolve())
    return f"{label} (sha256 {digest.hexdigest()[:12]})"


def in_chunks(fn, moving: torch.Tensor, fixed: torch.Tensor, n: int, *, pad: bool):
    """``fn`` (a network's ``predict``) on frames ``(T, n, n)`` in calls of ``n`` frames.

    ``pad``: the last call is padded to ``n`` frames and every input made contiguous
    (an expanded, stride-0 reference would be another shape to a compiled ``fn``).
    """
    outs, affs = [], []
    for i in range(0, moving.shape[0], n):
        m, f = moving[i : i + n, None], fixed[i : i + n, None]
        k = m.shape[0]
        if pad:
            m, f = m.contiguous(), f.contiguous()
            if k < n:
                m = torch.cat([m, m.new_zeros(n - k, *m.shape[1:])])
                f = torch.cat([f, f.new_zeros(n - k, *f.shape[1:])])
        d, a = fn(m, f)
        outs.append(d[:k])
        if a is not None:
            affs.append(a[:k])
    return torch.cat(outs), (torch.cat(affs).double() if affs else None)
