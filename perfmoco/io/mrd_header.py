"""The MRD XML header: parse what arrives, build one for studies that have none."""

from __future__ import annotations

import logging

import ismrmrd.xsd as xsd

from perfmoco.study import PerfusionStudy, SliceRole, StudyError

__all__ = [
    "build_header",
    "header_acquired_spacing_mm",
    "header_recon_spacing_mm",
    "header_saturation_times_s",
    "parse_header",
    "strip_nul",
]

log = logging.getLogger(__name__)


def strip_nul(text: str | bytes | None) -> str | None:
    """Text without the trailing NUL some senders count in its length."""
    if text is None:
        return None
    if isinstance(text, bytes | bytearray):
        text = bytes(text).decode("utf-8", errors="replace")
    return text.rstrip("\x00").strip() or None


def parse_header(text: str | bytes | None) -> xsd.ismrmrdHeader | None:
    """Parse an MRD XML header; ``None`` for an absent header.

    Raises
    ------
    StudyError
        When the text is not an MRD XML header.
    """
    text = strip_nul(text)
    if text is None:
        return None
    try:
        return xsd.CreateFromDocument(text)
    except Exception as exc:  # xsdata raises several parser error types
        reason = " ".join(str(exc).split())[:200] or type(exc).__name__
        if "missing" in reason and "argument" in reason:  # a required element left out
            reason = reason.split(".")[-1].replace("__init__()", "an element")
        snippet = " ".join(text[:60].split())
        raise StudyError(
            f"the header is not valid MRD XML ({reason}; it begins {snippet!r})"
        ) from None


def header_measurement_id(header: xsd.ismrmrdHeader | None) -> str:
    """The scan's ``measurementInformation/measurementID`` ("" where the header has none)."""
    info = getattr(header, "measurementInformation", None)
    return str(getattr(info, "measurementID", None) or "").strip()


def header_saturation_times_s(header: xsd.ismrmrdHeader | None) -> list[float | None]:
    """Saturation times in s per encoding from ``sequenceParameters/TI`` (ms), if any; by
    position (an entry of 0 is None, not dropped: the next encoding's stays its own).
    """
    if header is None or header.sequenceParameters is None:
        return []
    ti = header.sequenceParameters.TI or []
    return [float(v) / 1000.0 if v and v > 0 else None for v in ti]


def header_acquired_spacing_mm(header: xsd.ismrmrdHeader | None) -> list[tuple | None]:
    """Acquired pixel size ``(dy, dx)`` in mm per encoding, from its ``encodedSpace``.

    None for an encoding without a field of view or matrix.  Readout
    oversampling doubles both the encoded field of view and matrix, so their
    ratio is the acquired pixel either way.
    """
    return _spacings(header, "encodedSpace")


def header_recon_spacing_mm(header: xsd.ismrmrdHeader | None) -> list[tuple | None]:
    """Reconstructed pixel size ``(dy, dx)`` in mm per encoding, from its ``reconSpace``
    (None where it has no field of view or matrix).
    """
    return _spacings(header, "reconSpace")


def _spacings(header, space_name: str) -> list[tuple | None]:
    out: list[tuple | None] = []
    for enc in (header.encoding if header is not None else None) or []:
        try:
            space = getattr(enc, space_name)
            m, f = space.matrixSize, space.fieldOfView_mm
            dy, dx = float(f.y) / int(m.y), float(f.x) / int(m.x)
            out.append((dy, dx) if dy > 0 and dx > 0 else None)
        except (AttributeError, TypeError, ValueError, ZeroDivisionError):
            out.append(None)
    return out


def _space(shape: tuple[int, int], fov: tuple[float, float, float]) -> xsd.encodingSpaceType:
    return xsd.encodingSpaceType(
        matrixSize=xsd.matrixSizeType(x=shape[1], y=shape[0], z=1),
        fieldOfView_mm=xsd.fieldOfViewMm(x=fov[0], y=fov[1], z=fov[2]),
    )


def build_header(study: PerfusionStudy) -> str:
    """An MRD XML header for a study, as a dual-sequence perfusion scan sends it.

    Encoding 0 describes the high-resolution slices, encoding 1 (if present)
    the low-resolution AIF slice; ``sequenceParameters/TI`` holds each
    encoding's saturation time in ms.
    """
    encodings = []
    tis = []
    groups = [study.highres] + ([[study.aif]] if study.aif is not None else [])
    for group in groups:
        s = group[0]
        dy, dx = s.pixel_spacing_mm
        thickness = s.geometry.field_of_view_mm[2] if s.geometry else 8.0
        fov = (s.shape[1] * dx, s.shape[0] * dy, thickness)
        space = _space(s.shape, fov)
        if s.acquired_spacing_mm is not None:  # zero-filled images: the acquired matrix
            ay, ax = s.acquired_spacing_mm
            space = _space((max(1, round(fov[1] / ay)), max(1, round(fov[0] / ax))), fov)
        n_rep = max(x.n_dynamics + x.pd_images.shape[0] for x in group)
        limits = xsd.encodingLimitsType(
            slice=xsd.limitType(
                minimum=min(x.slice_index for x in group),
                maximum=max(x.slice_index for x in group),
                center=0,
            ),
            repetition=xsd.limitType(minimum=0, maximum=n_rep - 1, center=0),
        )
        encodings.append(
            xsd.encodingType(
                encodedSpace=space,
                reconSpace=_space(s.shape, fov),
                encodingLimits=limits,
                trajectory=xsd.trajectoryType.CARTESIAN,
            )
        )
        default_ts = 0.1 if s.role is SliceRole.HIGHRES else 0.025
        tis.append(1000.0 * (s.saturation_time_s or default_ts))
    hdr = xsd.ismrmrdHeader(
        version=2,
        measurementInformation=xsd.measurementInformationType(
            measurementID=study.study_id,
            patientPosition=xsd.patientPositionType.HFS,
            protocolName="perfusion_dual_sequence",
            sequenceName="perfmoco",
        ),
        acquisitionSystemInformation=xsd.acquisitionSystemInformationType(
            systemVendor="perfmoco", systemFieldStrength_T=study.field_strength_t or 3.0
        ),
        experimentalConditions=xsd.experimentalConditionsType(H1resonanceFrequency_Hz=123_200_000),
        encoding=encodings,
        sequenceParameters=xsd.sequenceParametersType(TI=tis),
    )
    return xsd.ToXML(hdr)


def header_is_valid(text: str) -> bool:
    """True when ``text`` parses as an MRD header (used by tests and the server)."""
    try:
        parse_header(text)
    except StudyError:
        return False
    return True

