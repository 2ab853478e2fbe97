"""How much finer than acquired a series' pixels are (zero-filled interpolation).

Scanners often deliver perfusion images interpolated in k-space (zero-filled
to twice the acquired matrix, for instance).  The point-spread of such an
image reaches twice as many pixels as the acquired one's, so every distance
the quantification states in pixels (how deep a "core" pixel lies, how far
from a cavity blood partial volume reaches) has to be stated in acquired
pixels instead.  Measured on 4 noise-free phantoms zero-filled to twice their
matrix: median pixel MBF error 6.1 % and segment error 0.14 ml/min/g with the
distances in display pixels, 4.5 % and 0.08 in acquired pixels, against 3.9 %
and 0.06 at the acquired matrix.

The MRD header's encoded matrix gives the factor when the series came with
one (``SliceSeries.acquired_spacing_mm``).  Otherwise it is read from the
images themselves: the noise of a zero-filled image stops at its acquired
band edge, where its power falls by orders of magnitude (a cliff), whereas
an image at its acquired resolution carries noise up to the Nyquist
frequency and a smooth one decays gradually.  The outer band is taken on both
sides of k-space, so partial-Fourier zero-filling (one side only) does not
count as interpolation.
"""

from __future__ import annotations

import numpy as np

__all__ = ["half_up", "interpolation_factor", "series_interpolation"]

#: Power just inside the band edge over the power beyond it, at least (a cliff).
CLIFF = 100.0
#: Factors below this are taken as 1 (no interpolation; filters, smooth images).
MIN_FACTOR = 1.4
#: Largest factor reported.
MAX_FACTOR = 4.0
_FRAMES = 16
#: A header's acquired pixel this much smaller than the image's is not this series'.
HEADER_MIN = 0.95


def half_up(pixels: float) -> int:
    """A distance or count in display pixels (acquired ones times the scale) as a whole
    number, halves rounded up (Python's ``round`` takes them to the even one: 2.5 to 2).
    """
    return int(np.floor(float(pixels) + 0.5))


def _band_edge(power: np.ndarray, axis: int) -> float:
    """Fraction of the Nyquist frequency where the power falls off a cliff (1.0: none), one axis.

    Zero-filling leaves the noise's flat spectrum cut off at the acquired band
    edge: the power just inside it is ``CLIFF`` times or more the power anywhere
    beyond it (on either side of k-space: a partial-Fourier gap on one side is
    not a band limit).  A smooth but fully sampled image decays gradually instead.
    """
    p = power.sum(axis=1 - axis)
    k = np.fft.fftfreq(p.shape[0]) * 2.0  # -1..1 of Nyquist
    step = 2.0 / p.shape[0]
    best, edge = CLIFF, 1.0
    for c in np.arange(0.3, 0.9, step):
        band, above, below = p[(np.abs(k) <= c) & (np.abs(k) > c - 0.1)], p[k > c + step], \
            p[k < -c - step]
        if not (band.size and above.size and below.size):  # a small matrix: no such band
            continue
        ratio = band.mean() / max(above.mean(), below.mean(), 1e-300)
        if ratio > best:
            best, edge = ratio, float(c)
    return edge


def interpolation_factor(images) -> float:
    """Acquired pixel size over displayed pixel size of a series (1 = not interpolated).

    Parameters
    ----------
    images : array_like, shape (T, Y, X) or (Y, X)
        Magnitude images of one slice (up to 16 frames, evenly spaced, are used).

    Returns
    -------
    float
        The smaller of the two axes' factors (the conservative one), 1.0 when
        below 1.4, at most 4.0.
    """
    im = np.asarray(images, np.float64)
    if im.ndim == 2:
        im = im[None]
    if im.ndim != 3 or min(im.shape[1:]) < 8 or not np.isfinite(im).all():
        return 1.0
    im = im[np.unique(np.linspace(0, im.shape[0] - 1, _FRAMES).round().astype(int))]
    im = im - im.mean(axis=(1, 2), keepdims=True)
    power = (np.abs(np.fft.fft2(im)) ** 2).mean(axis=0)
    edge = min(_band_edge(power, 0), _band_edge(power, 1))
    factor = 1.0 / max(edge, 1.0 / MAX_FACTOR)
    return float(factor) if factor >= MIN_FACTOR else 1.0


def series_interpolation(series, setting: float) -> float:
    """One series' factor: ``setting`` (``QuantConfig.interpolation``) unless 0.

    With 0, the encoded matrix of the MRD header when the series has one
    (``acquired_spacing_mm``: its pixel over the image's, the smaller of the
    two axes'; an encoding finer than the images, e.g. another slice's, is not
    trusted), else :func:`interpolation_factor` of the images.
    """
    if setting and setting > 0:
        return float(setting)
    acquired = getattr(series, "acquired_spacing_mm", None)
    if acquired is not None:
        ratio = min(a / d for a, d in zip(acquired, series.pixel_spacing_mm, strict=True))
        if ratio >= HEADER_MIN:
            return float(min(ratio, MAX_FACTOR)) if ratio >= 1.05 else 1.0
    return interpolation_factor(series.images)
