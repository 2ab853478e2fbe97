"""Assemble a synthetic dual-sequence stress perfusion study with its truth."""

from __future__ import annotations

import dataclasses
import logging
import numbers

import numpy as np
from scipy import ndimage

from perfmoco.config import QuantConfig
from perfmoco.phantom import anatomy, kinetics, signal
from perfmoco.phantom import motion as motion_mod
from perfmoco.phantom.params import LABELS, MOTION_KINDS, TISSUES, VENDOR_PARAMS, VENDORS
from perfmoco.study import PerfusionStudy, SliceGeometry, SliceRole, SliceSeries

__all__ = ["Phantom", "generate_phantom"]

log = logging.getLogger(__name__)

_LEVELS = ("basal", "mid", "apical")
_MYO = LABELS["lv_myocardium"]
_BLOOD = [LABELS[n] for n in ("lv_blood", "rv_blood", "aorta", "lung_vessel")]
#: Largest number of dynamics accepted (memory guard).
MAX_DYNAMICS = 400
#: Radial growth of the heart's cross-section per mm of breathing, by level (1/mm).
_THROUGH_PLANE = {"basal": 0.002, "mid": 0.004, "apical": 0.010}
#: Point-spread function of the reconstruction (Gaussian SD, pixels).
PSF_SIGMA_PX = 0.7


@dataclasses.dataclass
class Phantom:
    """A generated study and everything that is known about it.

    Attributes
    ----------
    study : PerfusionStudy
        Three high-resolution slices (``slice_index`` 0, 1, 2: basal, mid,
        apical) and one low-resolution AIF slice (``slice_index`` 3).
    truth : dict of str to ndarray
        Ground truth; keys listed in :mod:`perfmoco.phantom` (``TRUTH_KEYS``).
    seed : int
        Seed the study was generated from.
    motion : str
        One of :data:`MOTION_KINDS`.
    vendor : str
        One of :data:`VENDORS`.
    noise_free : dict of str to ndarray
        The moved dynamics before noise, ``(T, Y, X)`` float32, keys ``"s0"``,
        ``"s1"``, ``"s2"`` and ``"aif"`` (and ``"s0_pd"`` ... for PD frames):
        ``noise_free["s0"] == warp(truth["s0_motion_free"], truth["s0_displacement"])``
        (with ``order=warp_order``).
    """

    study: PerfusionStudy
    truth: dict[str, np.ndarray]
    seed: int
    motion: str
    vendor: str
    noise_free: dict[str, np.ndarray] = dataclasses.field(default_factory=dict, repr=False)


def _check_args(seed, n_dynamics, motion_kind, vendor, saturation_efficiency):
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    if n_dynamics is not None and (
        isinstance(n_dynamics, bool) or not isinstance(n_dynamics, numbers.Integral)
        or not 10 <= n_dynamics <= MAX_DYNAMICS
    ):
        raise ValueError(
            f"n_dynamics must be an integer from 10 to {MAX_DYNAMICS} or None, got {n_dynamics!r}"
        )
    if motion_kind not in MOTION_KINDS:
        raise ValueError(f"motion must be one of {MOTION_KINDS}, got {motion_kind!r}")
    if vendor not in VENDORS:
        raise ValueError(f"vendor must be one of {VENDORS}, got {vendor!r}")
    if saturation_efficiency is not None and not (
        isinstance(saturation_efficiency, numbers.Real) and 0.5 <= saturation_efficiency <= 1.0
    ):
        raise ValueError(
            f"saturation_efficiency must be in [0.5, 1] or None, got {saturation_efficiency!r}"
        )


def _geometry(rng, n_hr: int, thickness: float, fov: tuple[float, float]):
    """Patient-space geometry (LPS, mm) of the slices and the in-plane HF direction."""
    n = np.array([0.6, -0.5, -0.62]) + rng.normal(0.0, 0.08, 3)  # base -> apex
    n /= np.linalg.norm(n)
    ant = np.array([0.0, -1.0, 0.0])
    a_p = ant - ant.dot(n) * n
    phase = -a_p / np.linalg.norm(a_p)  # image y points posterior / inferior wall
    read = np.cross(phase, n)  # image x points to the patient's left (lateral wall)
    centre = np.array([rng.uniform(0, 40), rng.uniform(-30, 0), rng.uniform(-50, -10)])
    gap = rng.uniform(14.0, 20.0)
    geoms = []
    offsets = [(k - (n_hr - 1) / 2.0) * gap for k in range(n_hr)]
    offsets.append(offsets[0] - rng.uniform(0.0, 6.0))  # AIF slice, at the base
    for off in offsets:
        pos = centre + off * n
        geoms.append(SliceGeometry(
            position=tuple(float(v) for v in pos), read_dir=tuple(float(v) for v in read),
            phase_dir=tuple(float(v) for v in phase), slice_dir=tuple(float(v) for v in n),
            field_of_view_mm=(fov[1], fov[0], thickness),
        ))
    feet = np.array([0.0, 0.0, -1.0])
    d = np.array([feet.dot(phase), feet.dot(read)])  # (y, x) in the image
    return geoms, d / max(np.linalg.norm(d), 1e-9)


def generate_phantom(
    *,
    seed: int = 0,
    n_dynamics: int | None = None,
    motion: str = "breathing",
    vendor: str = "a",
    saturation_efficiency: float | None = None,
    warp_order: int = 1,
    heart_scale: float = 1.0,
    slice_delays_s: tuple[float, float, float] | None = None,
    wall_scale: float = 1.0,
) -> Phantom:
    """Generate a synthetic free-breathing dual-sequence stress perfusion study.

    Parameters
    ----------
    seed : int, keyword-only
        Non-negative seed; the same arguments give the same study.  Anatomy,
        kinetics and timing do not depend on ``motion``.
    n_dynamics : int or None, keyword-only
        Dynamics per slice (10-400); ``None`` draws 60-75 from the seed.
    motion : str, keyword-only
        ``"none"``, ``"breathing"``, ``"breathing+gasp"`` or ``"mistrigger"``.
    vendor : str, keyword-only
        ``"a"`` (160 matrix, 2.25 mm, TS 100/25 ms) or ``"b"`` (192 matrix,
        1.8 mm, TS 110/30 ms, ten times larger pixel values).
    saturation_efficiency : float or None, keyword-only
        Effective saturation efficiency of the high-resolution dynamics (the
        AIF slice gets ``(1 + eta) / 2``); ``None`` draws a realistic 0.78-0.86,
        ``1.0`` gives ideal saturation recovery.  See :mod:`perfmoco.phantom.signal`.
    warp_order : int, keyword-only
        How each frame's (point-spread-blurred) image is moved: ``1`` bilinear,
        the default every published figure was made with, or ``3`` cubic
        B-spline.  Bilinear adds a blur that depends on each frame's sub-pixel
        shift, which no scanner adds: on 10330-10337 even the exact correction
        reads a segment error of 0.38 ml/min/g with it, 0.28 with ``3``.
    heart_scale : float, keyword-only
        Size of the heart against the usual one (0.7-1.5; e.g. 1.35: a large LV with a
        ~36 mm basal cavity radius, its wall and the RV scaled alike).  Everything else
        is unchanged.
    slice_delays_s : tuple of 3 float, keyword-only, optional
        Added to the myocardium's bolus delay in the basal, mid and apical slice (s,
        each within +-2): slices whose delays truly differ (by default they share
        one).  The truth's ``slice_delays_s`` holds them (zeros by default).
    wall_scale : float, keyword-only
        The LV wall's thickness against the usual one (0.5-2.5; e.g. 2.0: a hypertrophied
        wall of ~18-22 mm at the base, as hypertrophic cardiomyopathy or aortic stenosis
        give it; 0.6: a thinned, dilated heart's).  The cavity is unchanged.

    Returns
    -------
    Phantom
        The study (``study_id`` ``"phantom-seed{seed}"``, no MRD header) and
        its truth.

    Raises
    ------
    ValueError
        For a bad seed, number of dynamics, motion kind, vendor, warp order, heart or
        wall scale.
    """
    _check_args(seed, n_dynamics, motion, vendor, saturation_efficiency)
    if (isinstance(heart_scale, bool) or not isinstance(heart_scale, numbers.Real)
            or not 0.7 <= heart_scale <= 1.5):
        raise ValueError(f"heart_scale must be in [0.7, 1.5], got {heart_scale!r}")
    if (isinstance(wall_scale, bool) or not isinstance(wall_scale, numbers.Real)
            or not 0.5 <= wall_scale <= 2.5):
        raise ValueError(f"wall_scale must be in [0.5, 2.5], got {wall_scale!r}")
    offsets = np.zeros(3) if slice_delays_s is None else np.asarray(slice_delays_s, np.float64)
    if offsets.shape != (3,) or not np.all(np.abs(offsets) <= 2.0):
        raise ValueError(f"slice_delays_s must be 3 delays (s) within +-2, got {slice_delays_s!r}")
    if warp_order not in (1, 3) or isinstance(warp_order, bool):
        raise ValueError(f"warp_order must be 1 (bilinear) or 3 (cubic B-spline), got "
                         f"{warp_order!r}")
    vp = VENDOR_PARAMS[vendor]
    q = QuantConfig()
    r_anat, r_time, r_kin, r_mot, r_sig, r_geo = (
        np.random.default_rng(s) for s in np.random.SeedSequence(int(seed)).spawn(6)
    )
    n_dyn = int(r_time.integers(60, 76)) if n_dynamics is None else int(n_dynamics)
    anats = anatomy.draw_anatomy(r_anat, 3, heart_scale=float(heart_scale),
                                 wall_scale=float(wall_scale))
    beats = kinetics.draw_beats(r_time, n_dyn)
    peak_dyn = int(np.clip(np.rint(r_time.normal(25.0, 4.8)), 16, 36))  # 1-based, real 19-33
    peak_dyn = min(peak_dyn, max(int(0.45 * n_dyn), 3))
    lv_peak_s = float(beats.r_peaks_s[beats.n_pd + peak_dyn - 1] + beats.slice_offsets_s[1])
    t_end = float(beats.r_peaks_s[-1] + 1.5)
    blood = kinetics.blood_curves(r_kin, t_end_s=t_end, lv_peak_s=lv_peak_s)
    fermi = dict(tau0_s=r_kin.uniform(4.0, 6.5), k_per_s=r_kin.uniform(0.6, 1.3),
                 delay_s=r_kin.uniform(0.2, 0.8))
    healthy = float(r_kin.uniform(2.8, 3.5))
    defects = kinetics.draw_defects(r_kin)
    eta = float(r_sig.uniform(0.76, 0.84)) if saturation_efficiency is None \
        else float(saturation_efficiency)
    eta_aif = 0.5 * (1.0 + eta)
    snr = float(r_sig.uniform(*vp.snr_myo_pre))
    blood_pd = float(r_sig.uniform(0.85, 1.2))  # inflow / coil differences, blood vs tissue
    sigma = vp.intensity_scale * (1.0 - eta * np.exp(-vp.ts_highres_s / q.t1_myocardium_s)) / snr
    fov = (vp.matrix * vp.spacing_mm, vp.matrix * vp.spacing_mm)
    geoms, hf_dir = _geometry(r_geo, 3, vp.slice_thickness_mm, fov)
    mot = motion_mod.draw_motion(r_mot, motion, blood.t_s, n_beats=len(beats.r_peaks_s),
                             n_pd=beats.n_pd, direction=hf_dir, lv_peak_s=lv_peak_s,
                             first_dyn_s=float(beats.r_peaks_s[beats.n_pd]))
    curves = _label_curves(blood, fermi)
    truth: dict[str, np.ndarray] = {}
    noise_free: dict[str, np.ndarray] = {}
    slices = []
    for slot in range(4):
        is_aif = slot == 3
        k = 0 if is_aif else slot
        mat = vp.matrix // 2 if is_aif else vp.matrix
        sp = (vp.spacing_mm * (2 if is_aif else 1),) * 2
        prefix = "aif" if is_aif else f"s{slot}"
        sl = _render_series(
            anats[k], level=_LEVELS[k], slice_index=k, shape=(mat, mat), spacing=sp,
            times=beats.times(slot), beats=beats, blood=blood, curves=curves,
            fermi=fermi if is_aif else {**fermi, "delay_s": fermi["delay_s"] + offsets[slot]},
            healthy=healthy, defects=defects, model=mot,
            ts=vp.ts_aif_s if is_aif else vp.ts_highres_s, eta=eta_aif if is_aif else eta,
            scale=vp.intensity_scale, sigma=sigma * (0.6 if is_aif else 1.0),
            rng=np.random.default_rng(np.random.SeedSequence([int(seed), 7, slot])),
            relaxivity=q.relaxivity, blood_pd=blood_pd, warp_order=warp_order,
        )
        for key, val in sl["truth"].items():
            if is_aif and key in ("aha", "rv_insertion", "mbf", "myo_gd"):
                continue
            truth[f"{prefix}_{key}"] = val
        noise_free[prefix] = sl["clean"]
        noise_free[f"{prefix}_pd"] = sl["clean_pd"]
        pd_t, dyn_t = beats.times(slot)
        slices.append(SliceSeries(
            images=sl["images"], times_s=beats.clock_s + dyn_t, pixel_spacing_mm=sp,
            role=SliceRole.AIF if is_aif else SliceRole.HIGHRES, slice_index=slot,
            pd_images=sl["pd_images"], pd_times_s=beats.clock_s + pd_t,
            saturation_time_s=vp.ts_aif_s if is_aif else vp.ts_highres_s, geometry=geoms[slot],
        ))
        truth[f"{prefix}_times"] = beats.clock_s + dyn_t
    truth["aif_gd"] = kinetics.sample(blood.lv, blood.t_s, beats.times(3)[1]).astype(np.float64)
    truth["spacing_mm"] = np.array([vp.spacing_mm] * 2)
    truth["aif_spacing_mm"] = np.array([2 * vp.spacing_mm] * 2)
    truth.update({
        "fermi_tau0_s": np.array(fermi["tau0_s"]), "fermi_k_per_s": np.array(fermi["k_per_s"]),
        "fermi_delay_s": np.array(fermi["delay_s"]), "slice_delays_s": offsets,
        "healthy_mbf": np.array(healthy),
        "saturation_efficiency": np.array(eta), "aif_saturation_efficiency": np.array(eta_aif),
        "blood_pd_factor": np.array(blood_pd), "noise_sd": np.array(sigma),
        "aif_noise_sd": np.array(0.6 * sigma),
        "lv_peak_dynamic": np.array(peak_dyn), "mistriggered": mot.mistriggered[beats.n_pd:],
        "seed": np.array(int(seed)),
    })
    study = PerfusionStudy(slices=slices, mrd_header=None, study_id=f"phantom-seed{seed}")
    return Phantom(study=study, truth=truth, seed=int(seed), motion=motion, vendor=vendor,
                   noise_free=noise_free)


def _label_curves(blood, fermi):
    """Fine-grid [Gd] curve for each label whose kinetics is not per pixel."""
    out = np.zeros((256, blood.t_s.size))
    for lab, tis in TISSUES.items():
        if tis.kinetics == "lv":
            out[lab] = blood.lv
        elif tis.kinetics == "rv":
            out[lab] = blood.rv * (tis.vp if tis.vp else 1.0)
        elif tis.kinetics == "aorta":
            out[lab] = blood.aorta
        elif tis.kinetics == "tofts":
            out[lab] = kinetics.tofts_curve(blood.aorta, ktrans_per_s=tis.ktrans_per_s,
                                            kep_per_s=tis.kep_per_s, vp=tis.vp)
        elif tis.kinetics == "fermi" and tis.mbf > 0:
            out[lab] = kinetics.fermi_curves(blood.lv, np.array([tis.mbf]), **fermi)[0]
    return out


def _quantise(field: np.ndarray) -> np.ndarray:
    """Round a displacement to multiples of 1/1024 pixel (float32)."""
    return (np.round(np.asarray(field, np.float32) * 1024.0) / 1024.0).astype(np.float32)


def _render_series(anat, *, level, slice_index, shape, spacing, times, beats, blood, curves,
                   fermi, healthy, defects, model, ts, eta, scale, sigma, rng, relaxivity,
                   blood_pd, warp_order=1):
    """Images and truth of one slice (see :func:`generate_phantom`)."""
    labels, depth, theta = anatomy.render_slice(anat, shape, spacing)
    h = anat.heart
    ant, inf = anatomy.rv_insertion_angles(h)
    aha = anatomy.aha_segments(labels, theta, ant_deg=ant, level=level)
    mbf = kinetics.mbf_map(rng, labels, depth, theta, ant_deg=ant, level=level,
                           slice_index=slice_index, defects=defects, healthy=healthy,
                           myo_label=_MYO)
    pd_t, dyn_t = times
    n_t = len(dyn_t)
    # [Gd] in the motion-free frame: per-label curves, per-pixel myocardium
    lab_curves = kinetics.sample(curves, blood.t_s, dyn_t)  # (256, T)
    tex = 1.0 + 0.08 * anatomy.smooth_field(rng, shape, 3.0)
    gd = lab_curves[labels] * tex[..., None]  # (Y, X, T)
    myo = labels == _MYO
    gd[myo] = kinetics.sample(kinetics.fermi_curves(blood.lv, mbf[myo], **fermi), blood.t_s,
                              dyn_t)
    for lab in ("lv_blood", "rv_blood", "aorta"):
        m = labels == LABELS[lab]
        gd[m] = lab_curves[LABELS[lab]]
    gd = np.moveaxis(gd, -1, 0)  # (Y, X, T) -> (T, Y, X)
    # motion
    lv_c = anat.to_image(h.cy, h.cx)  # (y, x) mm in the image
    tp = _THROUGH_PLANE[level]
    disp = motion_mod.slice_displacement(model, labels, spacing, lv_c, times_s=dyn_t,
                                         beats=np.arange(beats.n_pd, beats.n_pd + n_t),
                                         through_plane=tp)
    disp_pd = motion_mod.slice_displacement(model, labels, spacing, lv_c, times_s=pd_t,
                                            beats=np.arange(beats.n_pd), through_plane=tp)
    # fields on a 1/1024-pixel lattice: exact in float32 and they compress ~10x on disk
    disp, disp_pd = _quantise(disp), _quantise(disp_pd)
    inv = _quantise(motion_mod.invert_displacement(disp))
    inv_pd = motion_mod.invert_displacement(disp_pd)
    # signal
    coils = signal.draw_coils(rng, anat.torso)
    coils[:, 0], coils[:, 1] = anat.to_image(coils[:, 0], coils[:, 1])
    ref = float(signal.coil_sensitivity(coils, np.array(lv_c[0]), np.array(lv_c[1])))
    pd_map = signal.proton_density(rng, labels, spacing) * (scale / ref)
    pd_map[np.isin(labels, _BLOOD)] *= blood_pd
    t1 = signal.t1_map(rng, labels)
    m0 = pd_map[None] * signal.shading_at(coils, shape, spacing, inv)
    mf = signal.sr_signal(gd, t1_s=t1, m0=m0, ts_s=ts, efficiency=eta, relaxivity=relaxivity)
    mf = ndimage.gaussian_filter(mf, (0, PSF_SIGMA_PX, PSF_SIGMA_PX)).astype(np.float32)
    m0_pd = pd_map[None] * signal.shading_at(coils, shape, spacing, inv_pd)
    mf_pd = ndimage.gaussian_filter(m0_pd, (0, PSF_SIGMA_PX, PSF_SIGMA_PX)).astype(np.float32)
    clean = motion_mod.warp(mf, disp, order=warp_order)
    clean_pd = motion_mod.warp(mf_pd, disp_pd, order=warp_order)
    masks = motion_mod.warp(np.broadcast_to(myo.astype(np.float32), mf.shape), disp) > 0.5
    ny = shape[0]
    to_px = np.array([(ny - 1) / 2.0, (shape[1] - 1) / 2.0])

    def point(ang):
        _, r_epi = h.radii(np.array(ang))
        y_mm, x_mm = anat.to_image(h.cy - float(r_epi) * np.sin(np.deg2rad(ang)),
                                   h.cx + float(r_epi) * np.cos(np.deg2rad(ang)))
        return [y_mm / spacing[0] + to_px[0], x_mm / spacing[1] + to_px[1]]

    truth = {
        "labels": labels,
        "mbf": mbf.astype(np.float32),
        "myo_masks": masks,
        "displacement": disp,
        "inverse_displacement": inv,
        "pd_displacement": disp_pd,
        "motion_free": mf,
        "aha": aha,
        "rv_insertion": np.array([point(ant), point(inf)]),
        "myo_gd": gd[:, myo].astype(np.float32),
    }
    return {
        "truth": truth,
        "clean": clean,
        "clean_pd": clean_pd,
        "images": signal.add_rician_noise(rng, clean, sigma),
        "pd_images": signal.add_rician_noise(rng, clean_pd, sigma),
    }
