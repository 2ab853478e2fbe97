"""What an MRD study says of its protocol, checked: saturation times, the dynamics'
interval and time stamps, the field strength.

Values a vendor stores elsewhere or in other units would bias every MBF value without
a sign (a saturation time in microseconds: MBF off by orders of magnitude; the header's
TI list read by position with a missing entry: the AIF's time on the tissue slices,
+83-95 %); here each is checked against what a perfusion protocol can hold, and what
does not fit is left out with a note (the study's messages), so the defaults or the
other source are used and said.
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "INTERVAL_RANGE_S",
    "TS_RANGE_MS",
    "check_interval",
    "check_pd_frames",
    "check_saturation_order",
    "field_strength_t",
    "midnight_wrap",
    "protocol_notes",
    "saturation_time",
]

#: Saturation (recovery) times a perfusion readout can have, ms.
TS_RANGE_MS = (5.0, 500.0)
#: Median intervals between dynamics a perfusion series can have, s (one beat at
#: 240/min to one every other beat at 48/min).
INTERVAL_RANGE_S = (0.25, 2.5)
#: The two saturation times of one image disagree when further apart than this share.
TS_AGREEMENT = 0.05


def saturation_time(name: str, meta_ms: float | None, header_s: float | None,
                    notes: list[str]) -> tuple[float | None, str]:
    """A slice's saturation time (s) and where it came from: the images' own
    ``SaturationTime_ms`` meta first, else the header's ``sequenceParameters/TI`` of the
    slice's encoding; a value outside :data:`TS_RANGE_MS` is not used (a note says so,
    as it does where the two disagree).  ``(None, "")`` where neither holds one.
    """
    header_ms = 1000.0 * header_s if header_s else None
    found = []
    for value, source in ((meta_ms, "image meta SaturationTime_ms"), (header_ms, "header TI")):
        if value is None or not np.isfinite(value) or value <= 0:  # 0: none given
            continue
        if TS_RANGE_MS[0] <= value <= TS_RANGE_MS[1]:
            found.append((value, source))
        else:
            notes.append(f"{name}: saturation time {value:g} ms ({source}) is outside "
                         f"{TS_RANGE_MS[0]:g}-{TS_RANGE_MS[1]:g} ms (another unit?): not used")
    if not found:
        return None, ""
    (value, source), others = found[0], found[1:]
    for other, where in others:
        if abs(other - value) > TS_AGREEMENT * value:
            notes.append(f"{name}: saturation time {value:g} ms ({source}) used; the {where} "
                         f"says {other:g} ms")
    return value / 1000.0, source


def check_saturation_order(highres, aif, notes: list[str]) -> None:
    """Note an AIF slice whose saturation time is not the shorter one (the dual-sequence
    AIF is read out soon after its saturation: its blood must not saturate).
    """
    ts = [s.saturation_time_s for s in highres if s.saturation_time_s]
    if aif is None or not aif.saturation_time_s or not ts:
        return
    if aif.saturation_time_s >= min(ts):
        notes.append(f"{aif.name}: saturation time {1000 * aif.saturation_time_s:g} ms is not "
                     f"shorter than the high-resolution slices' ({1000 * min(ts):g} ms): two "
                     "values swapped (the header's TI lists encoding 0, high-res, first)?")


def check_interval(series, tick_s: float, notes: list[str]) -> None:
    """Note a series whose dynamics' median interval lies outside
    :data:`INTERVAL_RANGE_S`: the time stamps' tick is then likely not
    ``mrd.time_stamp_tick_s`` (every flow would be off by their ratio).
    """
    dt = series.interval_s
    if dt > 0 and not INTERVAL_RANGE_S[0] <= dt <= INTERVAL_RANGE_S[1]:  # <= 0: refused
        notes.append(f"{series.name}: a dynamic every {dt:.3g} s from the time stamps at "
                     f"{1000 * tick_s:g} ms a tick (mrd.time_stamp_tick_s): outside "
                     f"{INTERVAL_RANGE_S[0]:g}-{INTERVAL_RANGE_S[1]:g} s; check the "
                     "scanner's tick, every MBF value scales with it")


def field_strength_t(header) -> float | None:
    """The header's ``acquisitionSystemInformation/systemFieldStrength_T`` (None: none)."""
    info = getattr(header, "acquisitionSystemInformation", None)
    value = getattr(info, "systemFieldStrength_T", None)
    try:
        value = float(value) if value is not None else None
    except (TypeError, ValueError):
        return None
    return value if value and 0.1 <= value <= 12.0 else None


def check_pd_frames(highres, aif, pd_frames_setting: int, notes: list[str]) -> None:
    """Note high-resolution slices without PD frames where the AIF slice has some and
    they were looked for by brightness: PD frames read out with a low flip angle are
    about as bright as the dynamics (the surface-coil correction is then lost).
    """
    n_aif = 0 if aif is None else aif.pd_images.shape[0]
    missing = [s.name for s in highres if s.pd_images.shape[0] == 0]
    if pd_frames_setting < 0 and n_aif and missing:
        notes.append(f"{', '.join(missing)}: no PD frames found by brightness, the AIF slice "
                     f"has {n_aif}: untagged PD frames as bright as the dynamics are not told "
                     "apart; set mrd.pd_frames to their number")


def protocol_notes(study, config) -> list[str]:
    """What the checks of a received study's protocol found doubtful (``config``: its
    :class:`perfmoco.config.MrdConfig`).
    """
    notes: list[str] = []
    check_saturation_order(study.highres, study.aif, notes)
    check_pd_frames(study.highres, study.aif, config.pd_frames, notes)
    for s in study.slices:
        check_interval(s, config.time_stamp_tick_s, notes)
    return notes


def midnight_wrap(stamps, tick_s: float, notes: list) -> int:
    """Ticks to add to the time stamps of the frames acquired after midnight (0: none).

    MRD's ``acquisition_time_stamp`` counts ticks since midnight, so a scan running
    across it restarts near 0; ``stamps`` (every frame's, ticks) more than half a day
    apart can only be that (a note is added to ``notes``).
    """
    stamps = [int(t) for t in stamps]
    day = int(round(86400.0 / tick_s))
    if not stamps or (max(stamps) - min(stamps)) * tick_s <= 43200.0:
        return 0
    notes.append("the acquisition time stamps pass midnight (they count from it): the frames "
                 "after it are timed a day on")
    return day
