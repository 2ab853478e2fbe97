"""Training configs (``config/train/<stage>.yaml``): their keys, defaults and checks."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

from perfmoco.moco import networks

__all__ = ["DEFAULTS", "load_train_config"]

#: Every key a training config may set (nested ``data`` / ``augment`` / ``loss``).
DEFAULTS: dict[str, Any] = {
    "stage": "affine1",
    "out_dir": "runs/train",
    "previous_dir": "",  # earlier stages' checkpoints; "" = out_dir; "shipped": the package's
    "steps": 4000,
    "batch_size": 16,
    "lr": 1e-4,  # paper: 1e-5 over far longer runs
    "seed": 0,
    "device": "auto",
    "val_every": 500,
    "ckpt_every": 500,
    "time_limit_min": 0.0,  # stop (validate + checkpoint) after this wall time; 0 = none
    "threads": 0,
    "init": "",  # start from a checkpoint: a .pt path, or "shipped" (the package's weights)
    "spec": {},  # overrides of networks.default_spec(stage)
    "data": {
        "source": "phantom",  # phantom | folder | synthetic
        "train_seeds": [1000, 1040],  # range(start, stop)
        "val_seeds": [9000, 9003],
        "vendors": ["a", "b"],
        "motion": "breathing",
        "folder": "",
        "val_fraction": 0.1,
        "pixel_spacing_mm": 0.0,  # for bare .npy series; 0 = from the file
        "cache_dir": "runs/cache",
        "workers": 0,  # phantom generation processes; 0 = all cores
    },
    "augment": {
        "noise_sd": 0.01,
        "scale": 0.3,
        "shift": 0.2,
        "max_shift_px": 20.0,
        "max_rotation_rad": 0.8,
        "p_geometric": 1.0,
        # not in the paper: a tight field of view's edges (augment.random_fov_cut)
        "fov_cut_p": 0.0,  # share of training pairs cut; 0 = off
        "fov_cut_min_mm": 40.0,  # closest edge to the LV, mm
    },
    "loss": {"lncc_kernel": 19, "bending_weight": 10.0},
}


def _merge(base: dict, upd: dict, where: str = "") -> dict:
    out = copy.deepcopy(base)
    for k, v in (upd or {}).items():
        if k not in base:
            raise ValueError(f"unknown training setting {where}{k}; known: {sorted(base)}")
        if isinstance(base[k], dict) and k != "spec":
            if not isinstance(v, dict):
                raise ValueError(f"training setting {where}{k} must be a mapping, got {v!r}")
            out[k] = _merge(base[k], v, f"{where}{k}.")
        else:
            out[k] = _check_type(base[k], v, f"{where}{k}")
    return out


def _check_type(default, value, name: str):
    """A setting's value of its default's kind (a count an int, a rate a number); YAML
    reads ``2e-4`` (no dot) as text: a float setting takes it as the number it says.
    """
    if default is None or value is None:
        return value
    if isinstance(default, float) and isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            pass
    kinds = {bool: (bool,), int: (int,), float: (int, float), str: (str,), list: (list,)}
    want = kinds.get(type(default))
    if want and (not isinstance(value, want) or (bool not in want and isinstance(value, bool))):
        raise ValueError(f"training setting {name} must be {type(default).__name__}, "
                         f"got {value!r}")
    return value


#: Settings that must lie in a range: (lowest, highest), None for no bound.
_RANGES = {"steps": (0, None), "batch_size": (1, None), "lr": (1e-12, None),
           "val_every": (1, None), "ckpt_every": (1, None), "time_limit_min": (0, None),
           "threads": (0, None), "data.val_fraction": (0.0, 0.9), "data.workers": (0, None)}


def _check_ranges(cfg: dict) -> None:
    for name, (lo, hi) in _RANGES.items():
        value = cfg
        for part in name.split("."):
            value = value[part]
        if (lo is not None and value < lo) or (hi is not None and value > hi):
            span = f">= {lo:g}" if hi is None else f"in [{lo:g}, {hi:g}]"
            if name == "lr":
                span = "> 0"
            raise ValueError(f"training setting {name} must be {span}, got {value!r}")
    if cfg["data"]["source"] == "folder" and not cfg["data"]["folder"]:
        raise ValueError("data.folder is not set (the folder of the site's studies)")
    known = networks.default_spec(cfg["stage"])
    unknown = sorted(set(cfg["spec"]) - set(known))
    if unknown:
        raise ValueError(f"unknown network setting spec.{unknown[0]}; known: {sorted(known)}")


def load_train_config(path: str | Path) -> dict[str, Any]:
    """Read a training YAML and fill in the defaults (unknown keys refused)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"training config not found: {path}")
    try:
        raw = yaml.safe_load(path.read_text())
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path}: not a readable YAML file ({exc})".replace("\n", " ")) from None
    if not isinstance(raw, dict) or "stage" not in raw:
        raise ValueError(f"{path}: a training config is a mapping that names its stage "
                         f"(stage: {' | '.join(networks.STAGES)}; see config/train/)")
    cfg = _merge(DEFAULTS, raw)
    if cfg["stage"] not in networks.STAGES:
        raise ValueError(f"stage must be one of {networks.STAGES}, got {cfg['stage']!r}")
    _check_ranges(cfg)
    return cfg
