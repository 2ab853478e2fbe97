"""How settings from a YAML file or ``section.key=value`` overrides are checked and merged.

Used by :mod:`perfmoco.config` (:func:`~perfmoco.config.load_config`,
``Config.with_overrides``): each value is converted to its field's type (strings from
XML / CLI), checked where a setting needs more than its type, and the sections are
replaced on the frozen dataclasses.  Unknown sections, keys and bad values raise a
:class:`ConfigError` that names them.
"""

from __future__ import annotations

import dataclasses
import re
import types
import typing
from collections.abc import Mapping
from typing import Any

__all__ = ["ConfigError", "check_interpolation", "merge"]


class ConfigError(ValueError):
    """A configuration file or override that cannot be used."""


def _coerce(name: str, value: Any, typ: Any) -> Any:
    """Convert strings (from XML / CLI) and check the type of ``value``."""
    if isinstance(typ, str):  # postponed annotations
        typ = {"int": int, "float": float, "bool": bool, "str": str}.get(typ, typ)
    if typ is bool:
        if isinstance(value, str):
            low = value.strip().lower()
            if low in ("1", "true", "yes", "on"):
                return True
            if low in ("0", "false", "no", "off"):
                return False
            raise ConfigError(f"{name} must be true or false, got {value!r}")
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{name} must be true or false, got {value!r}")
    if typ in (int, float):
        try:
            out = typ(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{name} must be a number, got {value!r}") from None
        if typ is int and isinstance(value, float) and not value.is_integer():
            raise ConfigError(f"{name} must be an integer, got {value!r}")
        return out
    if typ is str:
        return str(value)
    if isinstance(typ, types.UnionType) or typing.get_origin(typ) is typing.Union:
        return value
    return value


def check_interpolation(value) -> float:
    """``QuantConfig.interpolation`` / ``quantify_curves(interpolation=)``: 0 or 1-4.

    Raises ValueError otherwise.
    """
    f = float(value)
    if not (f == 0 or 1.0 <= f <= 4.0):
        raise ValueError(f"interpolation must be 0 (automatic) or 1-4, got {value!r}")
    return f


#: Slice levels of the AHA model, most basal first.
SLICE_LEVELS = ("basal", "mid", "apical")


def parse_slice_levels(value) -> tuple[str, ...] | None:
    """``quant.slice_levels``: ``"auto"`` (None) or levels, e.g. ``"mid, apical"``.

    Raises ValueError for a word that is not a level.
    """
    words = re.findall(r"[A-Za-z]+", str(value).lower())
    if words in ([], ["auto"]):
        return None
    bad = [w for w in words if w not in SLICE_LEVELS]
    if bad:
        raise ValueError(f"slice_levels must be 'auto' or levels from {', '.join(SLICE_LEVELS)} "
                         f"(most basal slice first), got {value!r}")
    return tuple(words)


def _range(lo: float | None, hi: float | None = None, *, above: bool = False,
           below: bool = False):
    """A check that a number lies in a range (``above`` / ``below``: the bound excluded)."""
    def check(value) -> None:
        ok = lo is None or (value > lo if above else value >= lo)
        ok = ok and (hi is None or (value < hi if below else value <= hi))
        if not ok:
            if hi is None:
                want = f"{'>' if above else '>='} {lo:g}"
            elif lo is None:
                want = f"{'<' if below else '<='} {hi:g}"
            else:
                want = (f"in {'(' if above else '['}{lo:g}, {hi:g}{')' if below else ']'}")
            raise ValueError(f"must be {want}, got {value!r}")
    return check


_POSITIVE = _range(0, above=True)
_NON_NEGATIVE = _range(0)
_AT_LEAST_1 = _range(1)


def check_device(value) -> None:
    """``moco.device``: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``."""
    if not re.fullmatch(r"auto|cpu|cuda(:\d+)?", str(value)):
        raise ValueError(f"device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {value!r}")


def _off_or_at_least_1(value) -> None:
    """A factor (>= 1) or 0 for off."""
    if not (value == 0 or value >= 1):
        raise ValueError(f"must be 0 (off) or >= 1, got {value!r}")


#: Settings checked beyond their type (a ValueError names the problem): a radius,
#: a time or a count out of its range would otherwise surface deep in a run (an empty
#: disc, a division by zero) or, worse, pass silently.
_CHECKS = {
    "quant.interpolation": check_interpolation,
    "quant.slice_levels": parse_slice_levels,
    **{f"mrd.{k}": _NON_NEGATIVE for k in (
        "moco_series_index", "moco_pd_series_index", "moco_aif_series_index",
        "map_series_index", "report_series_index")},
    "mrd.aif_series_index": _range(-1),
    "mrd.quality_series_index": _range(-1),
    "mrd.time_stamp_tick_s": _POSITIVE,
    "mrd.min_dynamics": _range(3),
    "mrd.pd_frames": _range(-1),
    "moco.device": check_device,
    **{f"moco.{k}": _range(16) for k in ("affine_crop", "nonrigid_crop")},
    **{f"moco.{k}": _AT_LEAST_1 for k in (
        "reference_from_end", "pca_components", "affine1_passes", "refine_components")},
    **{f"moco.{k}": _NON_NEGATIVE for k in (
        "affine2_passes", "refine_iterations", "refine_rounds", "refine_extra_rounds",
        "refine_neighbour_mm",
        "refine_coarse_rounds", "refine_shape_window", "baseline_refine_rounds",
        "coarse_align_mm", "stack_lv_tolerance_mm", "qc_outlier_ratio", "threads",
        "reference_search",
        "refine_basis_mm")},
    **{f"moco.{k}": _POSITIVE for k in (
        "refine_window_mm", "refine_max_mm", "refine_shape_min_mm", "baseline_radius_mm",
        "baseline_radius_aif_mm", "baseline_max_mm", "baseline_agreement_mm",
        "baseline_agreement_aif_mm", "aif_follow_spread_mm", "pd_align_max_mm",
        "dilation_radius_mm", "dilation_crop_mm", "max_motion_mm", "coarse_max_mm",
        "qc_robust_z", "qc_window_mm", "first_pass_max_mm", "first_pass_agreement_mm")},
    "moco.dilation_max": _range(0, 1, above=True, below=True),
    "moco.refine_basis_share": _range(0, 1),
    "moco.first_pass_rate": _range(0, 1),
    "moco.qc_threshold": _range(0, 2, above=True),
    **{f"quant.{k}": _POSITIVE for k in (
        "t1_blood_s", "t1_myocardium_s", "relaxivity", "saturation_time_highres_s",
        "saturation_time_aif_s", "tissue_density", "pd_scale", "max_mbf",
        "segment_max_se", "ischemia_mbf")},
    **{f"quant.{k}": _NON_NEGATIVE for k in (
        "baseline_frames", "pd_smooth_mm", "te_aif_s", "r2star_blood", "min_aif_peak_gd",
        "stack_lv_tolerance_mm", "slice_delay_window_s")},
    "quant.hematocrit": _range(0, 0.9, below=True),  # as quantify --hematocrit
    "quant.segment_shape_range": _off_or_at_least_1,
    "quant.saturation_efficiency_highres": _range(0, 1),  # 0: not measured
    "quant.saturation_efficiency_aif": _range(0, 1),
    "quant.r2_min": _range(None, 1),
    "quant.segment_max_flagged": _range(0, 1),
    "server.port": _range(0, 65535),
    **{f"server.{k}": _POSITIVE for k in (
        "max_message_bytes", "max_study_bytes", "idle_timeout_s")},
    "server.workers": _AT_LEAST_1,
}

#: Settings that take one of a few words.
_CHOICES: dict[str, tuple] = {
    "moco.resample": ("bicubic", "bilinear"),
    "moco.baseline_similarity": ("ngf", "mi"),
    "server.method": ("dl", "iterative", "none"),
    "quant.spillover_rim_px": (1, 2, 3, 4),
}


def merge(base, data: Mapping[str, Any]):
    """``base`` (a Config) with the sections of ``data`` replaced, each value checked."""
    if not isinstance(data, Mapping):
        raise ConfigError(f"configuration must be a mapping of sections, got {type(data).__name__}")
    sections = {f.name: f for f in dataclasses.fields(base)}
    changes = {}
    for section, values in data.items():
        if section not in sections:
            raise ConfigError(
                f"unknown configuration section {section!r}; known: {sorted(sections)}"
            )
        current = getattr(base, section)
        if values is None:
            continue
        if not isinstance(values, Mapping):
            raise ConfigError(f"section {section!r} must be a mapping, got {values!r}")
        hints = typing.get_type_hints(type(current))
        fields = {f.name for f in dataclasses.fields(current)}
        upd = {}
        for key, value in values.items():
            if key not in fields:
                raise ConfigError(
                    f"unknown setting {section}.{key}; known: {sorted(fields)}"
                )
            upd[key] = _coerce(f"{section}.{key}", value, hints[key])
            check = _CHECKS.get(f"{section}.{key}")
            if check is not None:
                try:
                    check(upd[key])
                except ValueError as exc:
                    msg = str(exc).removeprefix(f"{key} ")  # a parser names its setting
                    raise ConfigError(f"{section}.{key} {msg}") from None
            allowed = _CHOICES.get(f"{section}.{key}")
            if allowed and upd[key] not in allowed:
                raise ConfigError(f"{section}.{key} must be one of {list(allowed)}, "
                                  f"got {upd[key]!r}")
        changes[section] = dataclasses.replace(current, **upd)
    return dataclasses.replace(base, **changes)
