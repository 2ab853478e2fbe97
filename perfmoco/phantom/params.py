"""Fixed parameters of the phantom: tissue labels, tissue properties, vendor sets.

Everything here is a constant; the seeded random choices live in the modules
that use them.  T1s are native values at 3 T (blood and myocardium from
:class:`perfmoco.config.QuantConfig`), proton densities are relative to
myocardium, and the kinetic parameters describe how each tissue takes up
gadolinium (see :mod:`perfmoco.phantom.kinetics`).
"""

from __future__ import annotations

import dataclasses

from perfmoco.config import QuantConfig

__all__ = [
    "LABELS",
    "MOTION_KINDS",
    "TISSUES",
    "VENDORS",
    "Tissue",
    "VendorParams",
    "label_names",
]

_Q = QuantConfig()

#: Motion scenarios accepted by :func:`perfmoco.phantom.generate_phantom`.
MOTION_KINDS: tuple[str, ...] = ("none", "breathing", "breathing+gasp", "mistrigger")
#: Vendor parameter sets accepted by :func:`perfmoco.phantom.generate_phantom`.
VENDORS: tuple[str, ...] = ("a", "b")

#: Tissue label values of the ``s{k}_labels`` / ``aif_labels`` truth maps.
LABELS: dict[str, int] = {
    "air": 0,
    "fat": 1,
    "chest_wall": 2,
    "lung": 3,
    "liver": 4,
    "spine": 5,
    "aorta": 6,
    "lv_blood": 7,
    "lv_myocardium": 8,
    "rv_blood": 9,
    "rv_wall": 10,
    "soft_tissue": 11,
    "papillary": 12,
    "lung_vessel": 13,
    "spinal_canal": 14,
    "epicardial_fat": 15,
}

#: Label value -> tissue name (the inverse of :data:`LABELS`).
label_names: dict[int, str] = {v: k for k, v in LABELS.items()}


@dataclasses.dataclass(frozen=True)
class Tissue:
    """Signal and uptake properties of one tissue.

    Attributes
    ----------
    t1_s : float
        Native T1 at 3 T, s.
    pd : float
        Proton density relative to myocardium (M0 before coil shading).
    kinetics : str
        Which concentration curve the tissue follows: ``"lv"`` (LV blood / AIF),
        ``"rv"`` (RV blood), ``"aorta"``, ``"fermi"`` (Fermi impulse response on
        the AIF), ``"tofts"`` (slow extravascular uptake) or ``"none"``.
    mbf : float
        MBF for ``"fermi"`` tissues other than the LV myocardium, ml/min/g.
    ktrans_per_s, kep_per_s, vp : float
        Extended-Tofts transfer constant, rate constant (1/s) and plasma
        (blood) volume fraction for ``"tofts"`` tissues.
    """

    t1_s: float
    pd: float
    kinetics: str = "none"
    mbf: float = 0.0
    ktrans_per_s: float = 0.0
    kep_per_s: float = 0.0
    vp: float = 0.0


#: Properties by label value.
TISSUES: dict[int, Tissue] = {
    LABELS["air"]: Tissue(t1_s=1.0, pd=0.0),
    LABELS["fat"]: Tissue(t1_s=0.38, pd=0.95, kinetics="tofts", ktrans_per_s=0.0004,
                          kep_per_s=0.01, vp=0.005),
    LABELS["chest_wall"]: Tissue(t1_s=1.41, pd=0.85, kinetics="tofts", ktrans_per_s=0.0025,
                                 kep_per_s=0.012, vp=0.02),
    LABELS["lung"]: Tissue(t1_s=1.27, pd=0.12, kinetics="rv", vp=0.12),
    LABELS["liver"]: Tissue(t1_s=0.81, pd=0.8, kinetics="tofts", ktrans_per_s=0.012,
                            kep_per_s=0.02, vp=0.12),
    LABELS["spine"]: Tissue(t1_s=0.75, pd=0.7, kinetics="tofts", ktrans_per_s=0.003,
                            kep_per_s=0.015, vp=0.04),
    LABELS["aorta"]: Tissue(t1_s=_Q.t1_blood_s, pd=1.2, kinetics="aorta"),
    LABELS["lv_blood"]: Tissue(t1_s=_Q.t1_blood_s, pd=1.2, kinetics="lv"),
    LABELS["lv_myocardium"]: Tissue(t1_s=_Q.t1_myocardium_s, pd=1.0, kinetics="fermi"),
    LABELS["rv_blood"]: Tissue(t1_s=_Q.t1_blood_s, pd=1.2, kinetics="rv"),
    LABELS["rv_wall"]: Tissue(t1_s=_Q.t1_myocardium_s, pd=1.0, kinetics="fermi", mbf=2.2),
    LABELS["soft_tissue"]: Tissue(t1_s=1.25, pd=0.8, kinetics="tofts", ktrans_per_s=0.003,
                                  kep_per_s=0.015, vp=0.03),
    LABELS["papillary"]: Tissue(t1_s=_Q.t1_myocardium_s, pd=1.0, kinetics="fermi", mbf=2.9),
    LABELS["lung_vessel"]: Tissue(t1_s=_Q.t1_blood_s, pd=1.1, kinetics="rv"),
    LABELS["spinal_canal"]: Tissue(t1_s=3.2, pd=1.0),
    LABELS["epicardial_fat"]: Tissue(t1_s=0.38, pd=0.95, kinetics="tofts",
                                     ktrans_per_s=0.0004, kep_per_s=0.01, vp=0.005),
}


@dataclasses.dataclass(frozen=True)
class VendorParams:
    """Acquisition parameters of one (fictitious) scanner vendor.

    Attributes
    ----------
    matrix : int
        High-resolution matrix (square), pixels; the AIF slice has half.
    spacing_mm : float
        High-resolution pixel size, mm; the AIF slice has twice this.
    ts_highres_s, ts_aif_s : float
        Saturation times of the high-resolution and AIF dynamics, s.
    intensity_scale : float
        Stored pixel value of fully relaxed myocardium at the coil sensitivity
        of the heart (M0 units).
    snr_myo_pre : tuple of 2 float
        Range of the pre-contrast myocardial SNR of a high-resolution slice
        (signal / noise SD), drawn per study.
    slice_thickness_mm : float
        Slice thickness, mm.
    """

    matrix: int
    spacing_mm: float
    ts_highres_s: float
    ts_aif_s: float
    intensity_scale: float
    snr_myo_pre: tuple[float, float]
    slice_thickness_mm: float


#: The two vendor parameter sets.
VENDOR_PARAMS: dict[str, VendorParams] = {
    "a": VendorParams(matrix=160, spacing_mm=2.25, ts_highres_s=0.100, ts_aif_s=0.025,
                      intensity_scale=600.0, snr_myo_pre=(9.0, 15.0), slice_thickness_mm=8.0),
    "b": VendorParams(matrix=192, spacing_mm=1.8, ts_highres_s=0.110, ts_aif_s=0.030,
                      intensity_scale=6000.0, snr_myo_pre=(7.0, 12.0), slice_thickness_mm=10.0),
}
