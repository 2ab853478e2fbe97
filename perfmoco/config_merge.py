"""How settings from a YAML file or ``section.key=value`` overrides are checked and merged.

Used by :mod:`perfmoco.config` (:func:`~perfmoco.config.load_config`,
``Config.with_overrides``): each value is converted to its field's type (strings from
XML / CLI), checked where a setting needs more than its type, and the sections are
replaced on the frozen dataclasses.  Unknown sections, keys and bad values raise a
:class:`ConfigError` that names them.
"""

from __future__ import annotations

import dataclasses
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


#: Settings checked beyond their type (a ValueError names the problem).
_CHECKS = {"quant.interpolation": check_interpolation}

#: Settings that take one of a few words.
_CHOICES: dict[str, tuple] = {
    "moco.resample": ("bicubic", "bilinear"),
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
                    raise ConfigError(f"{section}.{exc}") from None
            allowed = _CHOICES.get(f"{section}.{key}")
            if allowed and upd[key] not in allowed:
                raise ConfigError(f"{section}.{key} must be one of {list(allowed)}, "
                                  f"got {upd[key]!r}")
        changes[section] = dataclasses.replace(current, **upd)
    return dataclasses.replace(base, **changes)
