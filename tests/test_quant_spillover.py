"""Blood partial volume mixed in the signal (SignalMix): exact model, gradient, recovery."""

from __future__ import annotations

import numpy as np
import pytest
from curve_common import FINE, aif_fine

from perfmoco.quant.conv import FermiConvolution
from perfmoco.quant.fermi import fit_fermi
from perfmoco.quant.grouped import fit_fermi_grouped
from perfmoco.quant.model import mbf_to_flow, tissue_curve
from perfmoco.quant.signal import baseline_q, signal_to_gd
from perfmoco.quant.spillover import SignalMix, pool_signal

TS, R, ETA = 0.1, 4.5, 0.8  # saturation time (s), relaxivity, saturation efficiency
N_BASE = 8


def _sr(gd, t1, m0=1.0):
    """Saturation-recovery signal with imperfect saturation."""
    return m0 * (1.0 - ETA * np.exp(-TS * (1.0 / t1 + R * gd)))


def _mixed(mbf, w_vol, *, pd_blood=1.2, dt=0.6, n=70):
    """Pixels of myocardium (flow ``mbf``) holding a volume fraction ``w_vol`` of LV blood,
    mixed in the signal; their [Gd] as the product converts it, the pool's S / M0, q."""
    tf = np.arange(0, n * dt + 1, FINE)
    aif = aif_fine(tf)
    myo = tissue_curve(aif, dt_s=FINE, flow_per_s=mbf_to_flow(np.asarray(mbf)), tau0_s=4.0,
                       k_per_s=1.2, delay_s=0.6)
    idx = np.round(np.arange(n) * dt / FINE).astype(int)
    myo, aif = myo[..., idx], aif[idx]
    w = np.asarray(w_vol, float)[:, None]
    s = (1 - w) * _sr(myo, 1.2) + w * _sr(aif, 1.9, pd_blood)  # partial volume: signals add
    m0 = (1 - w[:, 0]) + w[:, 0] * pd_blood  # the pixel's own PD
    gd, _ = signal_to_gd(s.T, m0=m0, ts_s=TS, relaxivity=R, baseline=N_BASE)
    pool = _sr(aif, 1.9, pd_blood)[:, None, None] * np.ones((1, 2, 2))
    yb, yb0 = pool_signal(pool, np.ones((2, 2), bool), m0=pd_blood, baseline=N_BASE)
    q = baseline_q(s.T, m0, N_BASE)
    true_w = w[:, 0] * pd_blood / m0  # the pool's share of the pixel's signal
    return gd.T, aif, yb, yb0, q, true_w


def test_model_is_exact_and_reduces_to_fermi_without_blood():
    mbf = np.array([1.0, 2.5, 2.5, 2.5])
    w_vol = np.array([0.0, 0.0, 0.15, 0.35])
    c, aif, yb, yb0, q, true_w = _mixed(mbf, w_vol)
    model = FermiConvolution(aif, dt_s=0.6, oversample=3, min_delay_s=-0.5, dtype=np.float64)
    sm = SignalMix.build(model, (yb[None], np.array([yb0])), np.ones(4, int), q=q,
                         a=TS * R, dtype=np.float64)
    p = np.column_stack([mbf_to_flow(mbf), np.full(4, 4.0), np.full(4, 1.2),
                         np.full(4, 0.6), true_w])
    out, _ = sm(p)
    fermi, _ = model(p[:, :4])
    np.testing.assert_allclose(out[:2], fermi[:2], atol=1e-9)  # w = 0: the Fermi curve
    # the true parameters reproduce the signal-mixed pixels to the sampling's accuracy
    assert np.abs(out - c).max() < 0.01 * c.max()


def test_jacobian_matches_finite_differences():
    """Exact in F, delay and the blood share; in tau0 and k as exact as the Fermi
    convolution's own (its quadrature is differentiated approximately, ~1 %)."""
    c, aif, yb, yb0, q, true_w = _mixed(np.array([1.5, 3.0]), np.array([0.1, 0.3]))
    model = FermiConvolution(aif, dt_s=0.6, oversample=2, min_delay_s=-0.5, dtype=np.float64)
    sm = SignalMix.build(model, (yb[None], np.array([yb0])), np.ones(2, int), q=q,
                         a=TS * R, dtype=np.float64)
    p = np.array([[0.03, 4.0, 1.0, 0.5, 0.12], [0.05, 5.0, 1.5, 0.7, 0.3]])
    _, jac = sm(p, grad=True)
    for j, rel in ((0, 1e-6), (1, 0.02), (2, 0.03), (3, 1e-6), (4, 1e-6)):
        h = 1e-6 * max(abs(p[0, j]), 1.0)
        up, dn = p.copy(), p.copy()
        up[:, j] += h
        dn[:, j] -= h
        fd = (sm(up)[0] - sm(dn)[0]) / (2 * h)
        assert np.abs(jac[j] - fd).max() <= rel * np.abs(fd).max(), j


def test_recovers_the_myocardiums_flow_where_a_linear_blood_term_cannot():
    """Endocardial pixels with 5-35 % of the cavity's blood: the signal-mixing model
    reads their myocardium's MBF within 2 % and the blood's share within 0.01; a blood
    curve added in [Gd] (the AIF, WithSpillover) is off by more than 5 % for some."""
    w_vol = np.r_[np.zeros(40), np.repeat([0.05, 0.15, 0.25, 0.35], 10)]
    mbf = np.where(np.arange(w_vol.size) % 2, 1.0, 3.0)
    c, aif, yb, yb0, q, true_w = _mixed(mbf, w_vol)
    rim = w_vol > 0
    kw = dict(groups=(mbf > 2).astype(int), dt_s=0.6, core=~rim)
    exact, _, _ = fit_fermi_grouped(c, aif, spillover=np.where(rim, 1, -1),
                                    spill_curves=yb[None],
                                    spill_signal=(np.array([yb0]), q, TS * R), **kw)
    linear, _, _ = fit_fermi_grouped(c, aif, spillover=rim, **kw)
    err = np.abs(exact.mbf / mbf - 1)
    assert err[rim].max() < 0.02 and np.median(err[~rim]) < 0.02
    np.testing.assert_allclose(exact.vb[rim], true_w[rim], atol=0.01)
    assert (exact.vb[~rim] == 0).all()
    assert np.abs(linear.mbf / mbf - 1)[rim].max() > 0.05


def test_signal_mix_needs_pools_not_the_aif():
    c, aif, yb, yb0, q, _ = _mixed(np.array([2.0, 2.0]), np.array([0.0, 0.2]))
    with pytest.raises(ValueError, match="spill_signal"):
        fit_fermi(c, aif, dt_s=0.6, spillover=np.array([-1, 0]), spill_curves=yb[None],
                  spill_signal=(np.array([yb0]), q, TS * R))
    with pytest.raises(ValueError, match="spill_curves"):  # no pool given
        fit_fermi(c, aif, dt_s=0.6, spillover=np.array([-1, 1]),
                  spill_signal=(np.array([yb0]), q, TS * R))


def test_baselines_per_pixel_and_pool_signal_edge_cases():
    y = np.vstack([np.full((3, 2), 0.2), np.full((3, 2), 0.6)])  # enhancement from frame 3
    q = baseline_q(y, np.ones(2), np.array([3, 5]))
    np.testing.assert_allclose(q[0], 0.8)
    assert q[1] < 0.8  # a baseline reaching into the bolus reads a lower 1 - S / M0
    im = np.ones((6, 3, 3))
    core = np.zeros((3, 3), bool)
    assert pool_signal(im, None, m0=1.0, baseline=2) is None
    assert pool_signal(im, core, m0=1.0, baseline=2) is None  # empty core
    core[1, 1] = True
    assert pool_signal(im, core, m0=0.0, baseline=2) is None  # no M0
    assert pool_signal(im * 0.3, core, m0=1.0, baseline=2) is None  # no enhancement
