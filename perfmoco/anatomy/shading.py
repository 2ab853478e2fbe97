"""A slice's surface-coil shading taken out of the images the heart is found on.

Why: the blood pools and the myocardium are found from enhancement (signal minus the
pre-contrast baseline), and enhancement scales with the receive coils' sensitivity.  An
anterior array without the scanner's intensity normalisation shows the heart brighter
on one side.  With a gain rising 2.5-fold per 100 mm along the rows
(``benchmarks/bench_robustness.py --variants shading``) fresh 13202-13206 a/b read a
segment error of 0.26 / 0.17 / 0.62 / 0.21 / 0.91 ml/min/g after the whole product (as
generated 0.11 / 0.25 / 0.26 / 0.13 / 0.11): an apical LV lost for a brighter pool 48 mm
away, a mid slice's myocardium holding blood.  The PD frames show the coils' profile with
little tissue contrast (no saturation): smoothed over the body (lung and air left out) it
is the profile, and the dynamics divided by it enhance alike wherever the heart lies
(then 0.12 / 0.30 / 0.21 / 0.17 / 0.16; as generated 0.18 / 0.15 / 0.12 / 0.05 / 0.17;
held out 13209-13212 and these, with the RV rule of :mod:`perfmoco.anatomy.pools`: nine
studies shaded 0.35 -> 0.18, as generated 0.167 -> 0.153; docs/quantification.md,
thirtieth session).
On the phantom's own shading (24 DL-corrected studies, quantified alike) the masks hold
45 % fewer blood pixels, Dice against the truth 0.888 -> 0.890, segment error unchanged
(median 0.144 -> 0.140).  Only where the heart is *found*: the quantification's own coil
correction (per pixel, :mod:`perfmoco.quant.signal`) is unchanged.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

__all__ = ["coil_profile", "flattened"]

#: Width (SD) of the Gaussian the PD frames are smoothed with, mm: wider than a wall or a
#: blood pool, narrower than a coil's profile.
PROFILE_SIGMA_MM = 40.0
#: A pixel is body (not lung, not air) where its PD reaches this share of the brightest
#: within :data:`BODY_REACH_MM` (a share of the local level: a shaded side is still body).
BODY_SHARE = 0.3
BODY_REACH_MM = 40.0
#: ... and at least this share of the image's brightest (1st percentile from the top): air's
#: noise, however even, is not body.
BODY_FLOOR = 0.05
#: The profile's least value against the body's median: the dynamics are never scaled up
#: more than its inverse.
MIN_PROFILE = 0.2
#: Where less than this share of the smoothing kernel falls on body, the profile is the
#: body's median (air: not scaled up).
MIN_COVER = 0.05


def coil_profile(pd_images, spacing_mm) -> np.ndarray | None:
    """The PD frames' smooth profile ``(Y, X)``, median 1 over the body; None without
    PD frames (or with blank or non-finite ones).
    """
    pd = np.asarray(pd_images, np.float64)
    if pd.ndim != 3 or pd.shape[0] == 0:
        return None
    p = pd.mean(axis=0)
    if not np.isfinite(p).all() or not p.max() > 0:
        return None
    sp = np.broadcast_to(np.asarray(spacing_mm, np.float64), (2,))
    light = ndimage.gaussian_filter(p, 1.0)
    reach = [max(3, int(round(2 * BODY_REACH_MM / d)) | 1) for d in sp]
    body = light >= BODY_SHARE * ndimage.maximum_filter(light, size=reach)
    body &= light >= BODY_FLOOR * float(np.percentile(light, 99))
    if body.sum() < 16:
        return None
    sig = tuple(PROFILE_SIGMA_MM / d for d in sp)
    cover = ndimage.gaussian_filter(body.astype(np.float64), sig, mode="constant")
    level = ndimage.gaussian_filter(np.where(body, p, 0.0), sig, mode="constant")
    mid = float(np.median(p[body]))
    profile = np.where(cover >= MIN_COVER, level / np.maximum(cover, MIN_COVER), mid)
    profile = np.maximum(profile / mid, MIN_PROFILE)
    return profile.astype(np.float32)


def flattened(series) -> np.ndarray:
    """A slice's dynamics divided by its PD frames' profile (:func:`coil_profile`), float32;
    as they are where it has no PD frames.
    """
    images = np.asarray(series.images)
    profile = coil_profile(series.pd_images, series.pixel_spacing_mm)
    if profile is None or profile.shape != images.shape[1:]:
        return images
    return (images / profile).astype(np.float32)
