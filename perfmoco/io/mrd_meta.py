"""Reading and adding to an MRD image's meta (its ``GADGETRON_*`` attributes)."""

from __future__ import annotations

__all__ = ["appended_meta", "meta_float", "meta_list", "meta_roles"]


def meta_list(meta, key: str) -> list[str]:
    """An image's meta value as a list of strings (``[]`` where absent)."""
    value = meta.get(key, []) if hasattr(meta, "get") else []
    return [value] if isinstance(value, str) else [str(v) for v in value]


def meta_roles(meta: dict) -> list[str]:
    """The ``GADGETRON_DataRole`` values of an image's meta, as a list of strings."""
    return meta_list(meta, "GADGETRON_DataRole")


def meta_float(meta: dict, key: str) -> float | None:
    """A meta value as a number (a list's first entry); None where absent or not one."""
    value = meta.get(key)
    if isinstance(value, list):
        value = value[0] if value else None
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


def appended_meta(meta: dict, key: str, value: str | list[str]):
    """``meta[key]`` with ``value`` added, as Gadgetron's own outputs add to a received
    image's: the sequence description takes it as a suffix, other keys (the processing
    history) as more entries; absent, ``value`` alone.
    """
    old = meta.get(key)
    if old is None or old == "" or old == []:
        return value
    if key == "GADGETRON_SeqDescription" and isinstance(old, str) and isinstance(value, str):
        return old + value
    new = [value] if isinstance(value, str) else list(value)
    return ([old] if isinstance(old, str) else list(old)) + new
