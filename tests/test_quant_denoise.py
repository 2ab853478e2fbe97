"""Temporal PCA denoising of the pixel curves: rank, error, unbiased pixel MBF, r2 scoring."""

from __future__ import annotations

import numpy as np
import pytest
from curve_common import FINE, aif_fine

from perfmoco.quant.denoise import MIN_CURVES, hard_threshold_rank, pca_denoise
from perfmoco.quant.fermi import fit_fermi
from perfmoco.quant.grouped import fit_fermi_grouped
from perfmoco.quant.model import mbf_to_flow, tissue_curve

DT = 0.6


def _population(n, seed=0, t_n=60):
    """``n`` curves of two flow levels whose shapes and delays differ pixel by pixel."""
    rng = np.random.default_rng(seed)
    tf = np.arange(0, t_n * DT + 1, FINE)
    aif = aif_fine(tf)
    mbf = np.where(rng.random(n) < 0.5, 1.0, 3.0) * rng.uniform(0.9, 1.1, n)
    tau0 = rng.uniform(3.0, 5.5, n)
    k = rng.uniform(0.8, 1.6, n)
    delay = rng.uniform(0.45, 0.75, n)
    idx = np.round(np.arange(t_n) * DT / FINE).astype(int)
    curves = np.stack([
        tissue_curve(aif, dt_s=FINE, flow_per_s=mbf_to_flow(m), tau0_s=t0, k_per_s=kk,
                     delay_s=d)[idx]
        for m, t0, kk, d in zip(mbf, tau0, k, delay)])
    return curves, aif[idx], mbf


def test_noise_free_curves_are_left_as_they_are():
    c, _, _ = _population(400)
    out, rank = pca_denoise(c)
    assert rank > 10  # every component of a noise-free population stands out
    np.testing.assert_allclose(out, c, atol=1e-3 * np.abs(c).max())


def test_noisy_curves_lose_most_of_their_noise():
    c, _, _ = _population(600, seed=1)
    rng = np.random.default_rng(2)
    noisy = c + rng.normal(0, 0.03, c.shape)
    out, rank = pca_denoise(noisy)
    assert 2 <= rank <= 8
    before = np.sqrt(np.mean((noisy - c) ** 2))
    after = np.sqrt(np.mean((out - c) ** 2))
    assert after < 0.4 * before


def test_too_few_curves_are_returned_unchanged():
    c, _, _ = _population(MIN_CURVES - 1)
    out, rank = pca_denoise(c + 0.05)
    assert rank == c.shape[1]
    np.testing.assert_array_equal(out, c + 0.05)
    with pytest.raises(ValueError, match=r"\(N, T\)"):
        pca_denoise(c[0])


def test_flat_or_vanishing_curves_do_not_break_it():
    """All-saturated pixels convert to curves of rounding noise (~1e-15): they come
    back as they are or denoised, never as a LAPACK failure; identical curves come back
    to rounding."""
    rng = np.random.default_rng(3)
    tiny = rng.normal(0.0, 1e-15, (300, 60))
    out, rank = pca_denoise(tiny)
    assert out.shape == tiny.shape and np.isfinite(out).all() and 0 <= rank < 60
    same = np.tile(np.linspace(0.0, 1.0, 60), (300, 1))
    out, _ = pca_denoise(same)
    np.testing.assert_allclose(out, same, atol=1e-12)


def test_frames_left_out_of_the_fits_take_no_components():
    """QC-flagged frames (an RF spike's stripes) come back as measured, and the others
    are denoised as if those frames were not there: no components of their own."""
    c, _, _ = _population(600, seed=11)
    rng = np.random.default_rng(12)
    noisy = c + rng.normal(0, 0.03, c.shape)
    bad = np.zeros(c.shape[1], bool)
    bad[[12, 25, 40]] = True
    hit = noisy.copy()
    hit[:, bad] += rng.normal(0, 0.5, (c.shape[0], bad.sum()))
    alone, rank_alone = pca_denoise(noisy[:, ~bad])
    out, rank = pca_denoise(hit, ~bad)
    assert rank == rank_alone <= 8
    np.testing.assert_array_equal(out[:, bad], hit[:, bad])
    np.testing.assert_allclose(out[:, ~bad], alone)
    _, rank_all = pca_denoise(hit)
    assert rank_all >= rank + 3  # each flagged frame would take a component
    with pytest.raises(ValueError, match="frames"):
        pca_denoise(hit, ~bad[1:])


def test_threshold_rank_counts_values_above_the_noise_bulk():
    s = np.r_[100.0, 50.0, 20.0, np.full(57, 1.0)]
    assert hard_threshold_rank(s, (1000, 60)) == 3
    assert hard_threshold_rank(np.ones(60), (1000, 60)) == 0


def test_denoised_pixel_fits_are_closer_to_the_truth():
    """On the denoised curves the pixel MBF scatters half as much, and stays unbiased."""
    c, aif, mbf = _population(600, seed=3)
    rng = np.random.default_rng(4)
    noisy = c + rng.normal(0, 0.04, c.shape)
    groups = np.where(mbf > 2.0, 1, 0)
    kw = dict(groups=groups, delay_groups=np.zeros(len(c), int), dt_s=DT)
    raw, _, _ = fit_fermi_grouped(noisy, aif, **kw)
    den, _, _ = fit_fermi_grouped(noisy, aif, denoise=True, **kw)
    rel_raw, rel_den = raw.mbf / mbf - 1, den.mbf / mbf - 1
    assert abs(np.median(rel_den)) < 0.03
    assert np.median(np.abs(rel_den)) < 0.6 * np.median(np.abs(rel_raw))
    # the fit quality is scored against the measured (noisy) curves, not the denoised
    assert np.median(den.r2) < 0.999 and abs(np.median(den.r2) - np.median(raw.r2)) < 0.02


def test_measured_curves_score_the_fit():
    c, aif, _ = _population(5, seed=5)
    noisy = c + np.random.default_rng(6).normal(0, 0.05, c.shape)
    clean_fit = fit_fermi(c, aif, dt_s=DT)
    scored = fit_fermi(c, aif, dt_s=DT, measured=noisy)
    np.testing.assert_allclose(scored.mbf, clean_fit.mbf)  # the same fit ...
    assert (scored.r2 < clean_fit.r2).all() and (scored.rmse > clean_fit.rmse).all()
    with pytest.raises(ValueError, match="measured"):
        fit_fermi(c, aif, dt_s=DT, measured=noisy[:, :-1])


def test_quantify_curves_denoises_by_default():
    from perfmoco.quant import quantify_curves

    c, aif, mbf = _population(900, seed=7)
    rng = np.random.default_rng(8)
    tis = np.moveaxis((c + rng.normal(0, 0.04, c.shape)).reshape(30, 30, -1), -1, 0)
    truth = mbf.reshape(30, 30)
    err = {d: np.nanmedian(np.abs(quantify_curves(tis, aif, dt_s=DT, denoise=d) / truth - 1))
           for d in (True, False)}
    assert err[True] < 0.6 * err[False]
