"""Segment MBF against the truth when a study is stored the way other sites store it.

Runs the whole product (``process_study``: DL correction, then quantification) on
breathing phantoms as generated and as rescaled, quantised and zero-filled copies,
and prints the segment MBF error, the defect/healthy split at 2.0 ml/min/g and
the segments marked unreliable for each variant.  Real scans differ from the
phantom in all of these ways; nothing here should move the figures much.

Variants: ``base`` (as generated), ``scale`` (intensities x 0.013), ``uint12`` (rounded
to a 12-bit range, as DICOM magnitude images), ``zf2`` (zero-filled to twice the matrix
in k-space, the encoded spacing given as an MRD header gives it) ``zf2_noacq`` (the same
without the header's encoded spacing: read from the images' spectrum), ``corner`` (each
slice cut 10 mm above and right of its heart, as a tight field of view stores it:
``perfmoco.phantom.fov.fov_corner``), ``transpose`` (rows and columns swapped, the
header's read and phase directions with them: phase encoding along the other axis),
``rect`` (a rectangular field of view: the top and bottom eighth of every slice's rows
cut off, the header's field of view with them), ``reversed`` (the slices numbered and
stored apex first: their positions in the headers say which is basal) and ``skip`` (two
beats lost, dynamics 18 and 30 of every slice: missed ECG triggers leave gaps in the
time grid), ``short`` (the first 45 dynamics only: a shorter scan, ending in the
recirculation), ``nopd`` (no PD frames: a protocol without them, so no surface-coil
correction) and ``noaif`` (no low-resolution AIF slice: a single-sequence protocol; the
product corrects the images and says it computes no MBF maps) and ``spike`` (a k-space
spike in dynamics 25, 40 and 55 of every slice: a herringbone stripe pattern of a fifth
of the brightest pixel's value over the whole image, as an RF spike makes it) and
``noisy`` (half the SNR: complex Gaussian noise of sqrt(3) times the phantom's SD added
to every magnitude image, as a lower dose, a thinner slice or fewer coil elements give)
and ``rr2`` (every other dynamic: one frame every ~1.1 s, as a slow heart or a protocol
imaging every other beat gives) and ``pd_low`` (PD frames at half the dynamics' M0, as a
PD readout with a lower flip angle gives, ``quant.pd_scale`` left at 1: the maps are
wrong, and the study's messages must say why; each line shows whether they did) and
``late`` (the first dynamics cut so that the AIF's bolus arrives in dynamic
:data:`LATE_FOOT`, the RV's a frame or two in: a scan started after the injection) and
``rot90`` (every image turned a quarter counter-clockwise, the header's directions with
it: another site's short-axis prescription) and ``pd1`` (one PD frame only) and
``aifnopd`` (no PD frames on the AIF slice only, its efficiency not set: its M0 calibrated
on the high-resolution slices' LV blood after the first pass) and ``coarse`` (the
high-resolution slices acquired with a smaller matrix over the same field of view: their
k-space cut to :data:`COARSE_SHARE` of it and apodised as a scanner's k-space filter does,
3.0 mm pixels for vendor a and 2.4 mm for b instead of 2.25 and 1.8, as sites with 2.5-3 mm
perfusion protocols store them) and ``coarse_raw`` (the same cut bare, without the filter:
Gibbs ringing about the bright blood, as an unfiltered reconstruction shows it) and
``aniso`` (the same filtered cut along the rows only: rectangular pixels, 3.0 x 2.25 mm
for vendor a, as a reduced phase resolution stores them) and ``shading`` (a steeper
surface-coil profile than the phantom's own: every image and PD frame times a gain rising
:data:`SHADING_PER_100MM`-fold per 100 mm along the rows, as an anterior array without
intensity normalisation shows the heart at 3T).

Usage::

    .venv/bin/python benchmarks/bench_robustness.py [--seeds 11000 11001] [--vendor a]
        [--variants base,scale,uint12,zf2,zf2_noacq]
"""

from __future__ import annotations

import argparse
import dataclasses
import time
import warnings

import numpy as np

VARIANTS = ("base", "scale", "uint12", "zf2", "zf2_noacq", "corner", "transpose", "rect",
            "reversed", "skip", "short", "nopd", "noaif",
            "spike", "noisy", "rr2", "pd_low", "late", "rot90", "pd1", "aifnopd", "coarse",
            "coarse_raw", "aniso", "shading")
#: Dynamics kept by the ``short`` variant.
SHORT_DYNAMICS = 45
#: The ``coarse`` variant's matrix, as a share of the high-resolution slices' own.
COARSE_SHARE = 0.75
#: The ``shading`` variant's surface-coil gradient: signal times this per 100 mm along the rows.
SHADING_PER_100MM = 2.5
#: The ``late`` variant's dynamic (0-based) in which the AIF's bolus reaches 5 % of its peak.
LATE_FOOT = 5


def kspace_resize(images: np.ndarray, shape, *, filtered: bool = False) -> np.ndarray:
    """Magnitude of a (T, Y, X) series with its k-space's centre cut or zero-filled to the
    matrix ``shape`` over the same field of view, intensities kept; ``filtered``: apodised
    (a Tukey window over the new matrix, half its width tapered), else bare (a cut rings)."""
    from scipy.signal.windows import tukey

    t, y, x = images.shape
    ny, nx = shape
    cy, cx = min(y, ny), min(x, nx)  # the part of k-space both hold
    k = np.fft.fftshift(np.fft.fft2(images), axes=(-2, -1))
    out = np.zeros((t, ny, nx), complex)
    out[:, (ny - cy) // 2 : (ny - cy) // 2 + cy, (nx - cx) // 2 : (nx - cx) // 2 + cx] = \
        k[:, (y - cy) // 2 : (y - cy) // 2 + cy, (x - cx) // 2 : (x - cx) // 2 + cx]
    if filtered:  # a scanner's k-space filter: no ringing about the bright blood
        out = out * (tukey(ny, 0.5)[:, None] * tukey(nx, 0.5)[None, :])
    resized = np.fft.ifft2(np.fft.ifftshift(out, axes=(-2, -1)))
    return (np.abs(resized) * (ny * nx) / (y * x)).astype(np.float32)


def zero_fill_2x(images: np.ndarray) -> np.ndarray:
    """Magnitude of a (T, Y, X) series zero-filled to twice its matrix in k-space."""
    return kspace_resize(images, (2 * images.shape[1], 2 * images.shape[2]))


def variant(ph, name: str):
    """Phantom ``ph``'s study stored as ``name`` (see the module docstring)."""
    study = ph.study
    if name == "base":
        return study
    if name == "corner":  # cut about the heart: needs the phantom's truth
        from perfmoco.phantom.fov import fov_corner

        return fov_corner(ph, 10.0).study
    if name == "reversed":  # numbered (and stored) apex first; scored with truth_of
        n = len(study.highres)
        return study.replace_slices([
            s if s.role.value == "aif" else s.replace(slice_index=n - 1 - s.slice_index)
            for s in study.slices[::-1]])
    if name == "noaif":
        from perfmoco.study import SliceRole

        return study.replace_slices([s for s in study.slices if s.role is not SliceRole.AIF])
    top = max(float(max(s.images.max(), s.pd_images.max(initial=0.0))) for s in study.slices)
    rng = np.random.default_rng(0)
    out = []
    for s in study.slices:
        im, pd, kw = s.images, s.pd_images, {}
        if name == "scale":
            im, pd = im * 0.013, pd * 0.013
        elif name == "uint12":
            im, pd = (np.round(a * (4095.0 / top)).astype(np.float32) for a in (im, pd))
        elif name in ("zf2", "zf2_noacq"):
            im = zero_fill_2x(im)
            pd = zero_fill_2x(pd)  # also an empty (0, Y, X) stack
            kw = {"pixel_spacing_mm": tuple(v / 2 for v in s.pixel_spacing_mm)}
            if name == "zf2":
                kw["acquired_spacing_mm"] = tuple(s.pixel_spacing_mm)
        elif name in ("coarse", "coarse_raw", "aniso"):  # the AIF slice as it was
            if s.role.value != "aif":
                shape = tuple(2 * int(round(COARSE_SHARE * n / 2)) for n in s.shape)
                if name == "aniso":  # rows (phase encoding) only
                    shape = (shape[0], s.shape[1])
                filt = name != "coarse_raw"
                im, pd = (kspace_resize(a, shape, filtered=filt) for a in (im, pd))
                kw = {"pixel_spacing_mm": tuple(d * n / m for d, n, m in
                                                zip(s.pixel_spacing_mm, s.shape, shape))}
        elif name == "transpose":
            im, pd = im.transpose(0, 2, 1).copy(), pd.transpose(0, 2, 1).copy()
            kw = {"pixel_spacing_mm": s.pixel_spacing_mm[::-1], "geometry": _swapped(s.geometry)}
            if s.acquired_spacing_mm is not None:
                kw["acquired_spacing_mm"] = s.acquired_spacing_mm[::-1]
        elif name == "skip":
            keep = np.setdiff1d(np.arange(im.shape[0]), [18, 30])
            im, kw = im[keep], {"times_s": s.times_s[keep]}
        elif name == "rr2":
            im, kw = im[::2], {"times_s": s.times_s[::2]}
        elif name == "short":
            im, kw = im[:SHORT_DYNAMICS], {"times_s": s.times_s[:SHORT_DYNAMICS]}
        elif name == "late":
            gd = np.asarray(ph.truth["aif_gd"])
            cut = max(0, int(np.argmax(gd > 0.05 * gd.max())) - LATE_FOOT)
            im, kw = im[cut:], {"times_s": s.times_s[cut:]}
        elif name == "pd_low":
            pd = pd * 0.5
        elif name == "pd1":
            pd, kw = pd[:1], {"pd_times_s": s.pd_times_s[:1]}
        elif name == "rot90":
            im, pd = np.rot90(im, axes=(1, 2)).copy(), np.rot90(pd, axes=(1, 2)).copy()
            kw = {"pixel_spacing_mm": s.pixel_spacing_mm[::-1], "geometry": _turned(s.geometry)}
            if s.acquired_spacing_mm is not None:
                kw["acquired_spacing_mm"] = s.acquired_spacing_mm[::-1]
        elif name == "nopd":
            pd, kw = pd[:0], {"pd_times_s": s.pd_times_s[:0]}
        elif name == "aifnopd":  # the high-resolution slices keep theirs
            if s.role.value == "aif":
                pd, kw = pd[:0], {"pd_times_s": s.pd_times_s[:0]}
        elif name == "spike":
            im = im.copy()
            yy, xx = np.mgrid[: im.shape[1], : im.shape[2]]
            for k, t in enumerate((25, 40, 55)):
                if t < im.shape[0]:
                    fy, fx = 0.11 + 0.05 * k, 0.23 - 0.04 * k  # cycles per pixel
                    stripes = np.cos(2 * np.pi * (fy * yy + fx * xx) + k)
                    im[t] = np.abs(im[t] + 0.2 * float(im.max()) * stripes)
        elif name == "noisy":
            from perfmoco.phantom.signal import add_rician_noise
            from perfmoco.study import SliceRole

            sd = np.sqrt(3.0) * float(ph.truth["aif_noise_sd" if s.role is SliceRole.AIF
                                              else "noise_sd"])
            im, pd = add_rician_noise(rng, im, sd), add_rician_noise(rng, pd, sd)
        elif name == "shading":  # static in the scanner: every frame and PD frame alike
            y_mm = (np.arange(im.shape[1]) - (im.shape[1] - 1) / 2) * s.pixel_spacing_mm[0]
            gain = np.exp(np.log(SHADING_PER_100MM) * y_mm / 100.0).astype(np.float32)
            im, pd = im * gain[None, :, None], pd * gain[None, :, None]
        elif name == "rect":
            cut = im.shape[1] // 8
            im, pd = im[:, cut : im.shape[1] - cut].copy(), pd[:, cut : pd.shape[1] - cut].copy()
            if s.geometry is not None:
                fov = s.geometry.field_of_view_mm
                kw = {"geometry": dataclasses.replace(
                    s.geometry, field_of_view_mm=(fov[0], fov[1] * im.shape[1] / s.images.shape[1],
                                                  fov[2]))}
        else:
            raise ValueError(f"unknown variant {name!r}; choose from {VARIANTS}")
        out.append(s.replace(images=im, pd_images=pd, **kw))
    return study.replace_slices(out)


def _swapped(geometry):
    """A slice header with its read and phase axes (and fields of view) swapped."""
    if geometry is None:
        return None
    fov = geometry.field_of_view_mm
    return dataclasses.replace(geometry, read_dir=geometry.phase_dir, phase_dir=geometry.read_dir,
                               field_of_view_mm=(fov[1], fov[0], fov[2]))


def _turned(geometry):
    """A slice header for its images turned a quarter counter-clockwise (``np.rot90``):
    a new column runs along an old row, a new row against an old column."""
    if geometry is None:
        return None
    fov = geometry.field_of_view_mm
    return dataclasses.replace(geometry, read_dir=geometry.phase_dir,
                               phase_dir=tuple(-v for v in geometry.read_dir),
                               field_of_view_mm=(fov[1], fov[0], fov[2]))


def truth_of(name: str, truth: dict, n_highres: int) -> dict:
    """The phantom's truth keyed by the variant's slice numbers (``reversed``: apex first)."""
    if name != "reversed":
        return truth
    out = dict(truth)
    for i in range(n_highres):
        for key, val in truth.items():
            if key.startswith(f"s{i}_"):
                out[f"s{n_highres - 1 - i}_" + key[len(f"s{i}_"):]] = val
    return out


def score(quant, truth) -> tuple[list[float], list[bool], int]:
    """Segment errors, split right or wrong (segments > 0.2 from 2.0), unreliable count."""
    from bench_fermi import segment_truth

    errs, split = [], []
    for row in quant.segments:
        true = segment_truth(truth, row)
        errs.append(abs(row["median"] - true))
        if abs(true - 2.0) > 0.2:
            split.append((true < 2.0) == (row["median"] < 2.0))
    return errs, split, sum(not r["reliable"] for r in quant.segments)


def _missing(errs) -> str:
    """' (n of N segments without a value)' where some have none (all their fits failed,
    each marked unreliable with its reason), else ''."""
    n = int(np.isnan(errs).sum())
    return f" ({n} of {len(errs)} segments without a value)" if n else ""


def main(argv=None) -> int:
    from perfmoco.config import Config
    from perfmoco.phantom import generate_phantom
    from perfmoco.pipeline import process_study

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[11000])
    p.add_argument("--vendor", default="a", choices=("a", "b"))
    p.add_argument("--variants", default=",".join(VARIANTS))
    a = p.parse_args(argv)
    names = a.variants.split(",")
    bad = [n for n in names if n not in VARIANTS]
    if bad:
        p.error(f"unknown variant(s) {bad}; choose from {', '.join(VARIANTS)}")
    tally = {n: ([], [], 0) for n in names}
    for seed in a.seeds:
        ph = generate_phantom(seed=seed, motion="breathing", vendor=a.vendor)
        for name in names:
            t0 = time.perf_counter()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                res = process_study(variant(ph, name), config=Config(), method="dl")
            if res.quant is None:
                print(f"seed {seed} {name:10s} no MBF: {'; '.join(res.messages)}", flush=True)
                continue
            errs, split, unrel = score(res.quant, truth_of(name, ph.truth,
                                                           len(ph.study.highres)))
            e, s, u = tally[name]
            tally[name] = (e + errs, s + split, u + unrel)
            named = any("pd_scale" in m for m in res.messages)
            print(f"seed {seed} {name:10s} segment |error| median {np.nanmedian(errs):.2f} "
                  f"max {np.nanmax(errs):.2f} ml/min/g{_missing(errs)}, "
                  f"split {sum(split)}/{len(split)}, "
                  f"unreliable {unrel}, {time.perf_counter() - t0:.1f} s"
                  + (", messages name quant.pd_scale" if named else ""), flush=True)
    print(f"\nover {len(a.seeds)} phantom(s), vendor {a.vendor}:")
    for name, (e, s, u) in tally.items():
        if e:
            print(f"  {name:10s} segment |error| median {np.nanmedian(e):.2f} ml/min/g "
                  f"(max {np.nanmax(e):.2f}){_missing(e)}, split {sum(s)}/{len(s)}, "
                  f"unreliable {u}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
