"""The coil profile measured from a slice's slow frames (quant.coil_frames)."""

import numpy as np
from scipy import ndimage

from perfmoco.quant.coil_frames import MIN_TAIL_FRAMES, TAIL_LAG_FRAMES, slow_frames
from perfmoco.quant.coils import PreContrastFrames
from perfmoco.quant.signal import coil_motion_factors, heart_near_edge

N = 64
YY, XX = np.mgrid[0:N, 0:N].astype(float)
R = np.hypot(YY - 32, XX - 32)
#: a smooth coil profile, log-quadratic around the heart at (32, 32)
LOG_COIL = 0.02 * (YY - 32) - 0.015 * (XX - 32) + 2e-4 * (YY - 32) ** 2
POOL, MYO = R < 8, (R >= 8) & (R < 15)
T, N_PRE, PEAK = 48, 8, 16


def _at(image, dy, dx):
    return ndimage.map_coordinates(image, [YY + dy, XX + dx], order=1, mode="nearest")


def _series(under=0.0, seed=0, noise=0.01):
    """Corrected frames of a slice: a bright pool in a darker wall and body whose
    contrast rises with the bolus and falls slowly after it, seen through the coil
    where breathing moved them (up to 6 px); ``under``: the correction left each
    frame's tissue off by that share of its breathing (residual motion in step with
    the coil's change), with ``noise``.
    """
    rng = np.random.default_rng(seed)
    t = np.arange(T, dtype=float)
    late = np.clip(t - N_PRE, 0.0, None)
    pool = np.exp(-0.5 * ((t - 12.0) / 2.0) ** 2) + 0.3 * (1 - np.exp(-late / 4.0))
    myo = (late / (PEAK - N_PRE)) ** 2 * np.exp(2.0 * (1 - late / (PEAK - N_PRE)))  # peak 1
    disp = np.zeros((T, 2, N, N))
    disp[:, 0] = (3.0 + 3.0 * np.sin(2 * np.pi * t / 7.0))[:, None, None]
    disp[:, 1] = (1.5 * np.cos(2 * np.pi * t / 9.0))[:, None, None]
    frames = np.empty((T, N, N))
    for i in range(T):
        tissue = ndimage.gaussian_filter(np.where(POOL, 100.0 + 900.0 * pool[i], np.where(
            MYO, 80.0 + 150.0 * myo[i], 90.0)), 1.0)
        off = under * (disp[i, :, 0, 0] - disp[:, :, 0, 0].mean(axis=0))
        coil = np.exp(_at(LOG_COIL, disp[i, 0], disp[i, 1]))
        frames[i] = _at(tissue, *off) * coil * (1 + noise * rng.standard_normal((N, N)))
    pd = (np.where(POOL, 1300.0, np.where(MYO, 1000.0, np.where(YY > 44, 600.0, 900.0)))
          * np.exp(LOG_COIL))[None]
    truth = np.stack([np.exp(_at(LOG_COIL, d[0], d[1])[MYO] - LOG_COIL[MYO]) for d in disp])
    return pd, frames, disp, truth


def _factors(pd, frames, disp, **kw):
    return coil_motion_factors(pd, disp, pixels=MYO, centre=(32, 32), spacing_mm=(2.0, 2.0),
                               radius_mm=60.0, exclude=ndimage.binary_dilation(POOL, iterations=2),
                               **kw)


def test_the_slow_frames_measure_the_profile_the_pd_contrast_hides():
    """The PD frame's fit reads the tissues' PD contrast as coil (factors 5 % and more
    off); the frames before the bolus and after the first pass measure the profile
    (within 1 %, ten times nearer on average), whatever the contrast does in time."""
    pd, frames, disp, truth = _series()
    slow = slow_frames(frames, disp, myo=MYO, n_frames=N_PRE)
    pd_only = _factors(pd, frames, disp)
    measured = _factors(pd, frames, disp, baseline=slow)
    assert np.abs(pd_only / truth - 1).max() > 0.05
    assert np.abs(measured / truth - 1).max() < 0.01
    assert np.abs(measured / truth - 1).mean() < 0.1 * np.abs(pd_only / truth - 1).mean()


def test_residual_motion_along_the_edges_is_read_less_as_coil(monkeypatch):
    """The correction leaves each frame's tissue off by a tenth of its breathing (up to
    0.6 px, in step with the coil's change; the pool 2-4 times brighter than the wall
    in the late frames: its edge swings the wall's pixels by 10 % and more).  The
    frames' translations along the edges, fitted alongside, keep the measured factors
    within 1 % on average (the PD fit's: 3 %); without them the residual motion is
    read as coil a third more."""
    from perfmoco.quant import coil_frames

    pd, frames, disp, truth = _series(under=0.1)
    sf = slow_frames(frames, disp, myo=MYO, n_frames=N_PRE)
    err = np.abs(_factors(pd, frames, disp, baseline=sf) / truth - 1).mean()
    pd_only = np.abs(_factors(pd, frames, disp) / truth - 1).mean()
    monkeypatch.setattr(coil_frames, "_edge_regressors",
                        lambda f, b, m: np.zeros((f.shape[0], m.sum(), 2)))
    blind = np.abs(_factors(pd, frames, disp, baseline=sf) / truth - 1).mean()
    assert err < 0.01 and pd_only > 3 * err and blind > 1.25 * err


def _curve_frames():
    """Frames whose myocardium rises from frame 8 to its peak at 16 and falls after it."""
    t = np.arange(T, dtype=float)
    curve = 100.0 + 50.0 * np.clip(t - N_PRE, 0, None) * np.exp(-np.clip(t - N_PRE, 0, None)
                                                                 / (PEAK - N_PRE))
    return curve[:, None, None] * np.ones((T, N, N)), np.zeros((T, 2, N, N))


def test_slow_frames_are_the_unflagged_ones_before_the_bolus_and_after_the_peak():
    """Pre-contrast frames less the QC-flagged; late frames from two after the
    myocardium's mean peak; the myocardium off its borders; times scale the late
    frames' polynomials only."""
    frames, disp = _curve_frames()
    qc = np.zeros(T, bool)
    qc[[2, 30]] = True
    sf = slow_frames(frames, disp, myo=MYO, n_frames=N_PRE, qc=qc)
    late = [i for i in range(PEAK + TAIL_LAG_FRAMES, T) if i != 30]
    keep = [i for i in range(N_PRE) if i != 2] + late
    np.testing.assert_array_equal(sf.frames, frames[keep])
    np.testing.assert_array_equal(sf.displacement, disp[keep])
    assert sf.basis.shape == (len(keep), 7)
    assert (sf.basis[:7, 0] == 1).all() and (sf.basis[7:, 0] == 0).all()
    assert (sf.basis[:7, 1:] == 0).all()
    assert sf.region.sum() < MYO.sum() and not (sf.region & ~MYO).any()
    timed = slow_frames(frames, disp, myo=MYO, n_frames=N_PRE, qc=qc,
                        times_s=0.5 * np.arange(T) + 100.0)
    np.testing.assert_allclose(timed.basis, sf.basis)


def test_too_few_late_frames_leave_the_pre_contrast_ones_and_nothing_gives_none():
    """A series that ends soon after its peak: the pre-contrast frames alone (a constant
    in time); no frame before the bolus either, or no myocardium: None (the PD fit)."""
    frames, disp = _curve_frames()
    end = PEAK + TAIL_LAG_FRAMES + MIN_TAIL_FRAMES - 1
    short = slow_frames(frames[:end], disp[:end], myo=MYO, n_frames=N_PRE)
    assert short.frames.shape[0] == N_PRE and short.basis.shape == (N_PRE, 1)
    assert slow_frames(frames[:end], disp[:end], myo=MYO, n_frames=1) is None
    assert slow_frames(frames, disp, myo=np.zeros_like(MYO), n_frames=N_PRE) is None


def test_the_edge_takes_its_own_measurement_and_the_rest_the_slow_frames():
    """Both given: the heart near the image's edge uses ``edge_baseline`` (the slow
    frames are not asked), away from it ``baseline``."""
    pd, frames, disp, truth = _series()
    asked = []

    class Spy:
        def coefficients(self, *, terms, prior):
            asked.append(True)
            return None

    edge = (frames[:N_PRE], disp[:N_PRE], MYO)
    cut = (slice(None), slice(20, None), slice(20, None))
    coil_motion_factors(pd[cut], disp[..., 20:, 20:], pixels=MYO[20:, 20:], centre=(12, 12),
                        spacing_mm=(2.0, 2.0), radius_mm=60.0, baseline=Spy(),
                        edge_baseline=PreContrastFrames(frames[cut], disp[..., 20:, 20:],
                                                        MYO[20:, 20:]))
    assert asked == []
    _factors(pd, frames, disp, baseline=Spy(), edge_baseline=edge)
    assert asked == [True]
    # the same test for a caller that builds only the measurement to be used
    assert heart_near_edge(pd[cut].shape[1:], (12, 12), (2.0, 2.0), radius_mm=60.0)
    assert not heart_near_edge(pd.shape[1:], (32, 32), (2.0, 2.0), radius_mm=60.0)


def test_the_normal_equations_are_those_of_the_full_least_squares():
    """Projecting out each pixel's contrast in time and each frame's translation along
    its edges gives the same profile terms as one least-squares fit with all those
    columns (a pixel's basis coefficients, a frame's two translations) spelled out."""
    from perfmoco.quant.coil_frames import _normal_equations

    rng = np.random.default_rng(1)
    n, n_px, k = 14, 30, 3
    y, t = rng.standard_normal((n, n_px)), rng.standard_normal((n, n_px, k))
    w, g = rng.uniform(0.5, 2.0, n_px), rng.standard_normal((n, n_px, 2))
    basis = np.zeros((n, 4))
    basis[:5, 0] = 1.0
    basis[5:, 1:] = np.polynomial.legendre.legvander(np.linspace(-1, 1, n - 5), 2)
    a, b = _normal_equations(y, t, w, g, basis)
    per_pixel = np.kron(basis, np.eye(n_px))  # rows (frame, pixel), columns (pixel, basis)
    per_frame = np.zeros((n * n_px, 2 * n))
    for i in range(n):
        per_frame[i * n_px:(i + 1) * n_px, 2 * i:2 * i + 2] = g[i] / w[:, None]  # g is weighted
    full = np.hstack([t.reshape(-1, k), per_pixel, per_frame]) * np.tile(w, n)[:, None]
    sol = np.linalg.lstsq(full, (y * w).reshape(-1), rcond=None)[0]
    np.testing.assert_allclose(np.linalg.solve(a, b), sol[:k], rtol=1e-8, atol=1e-10)
