"""What the affine refinement is given: its shape window sized to the heart, the LV's
radius, the pixels every frame holds (a heart near the image's edge), and the PCA
reference's components from the frames of one breathing position."""

import dataclasses
from types import SimpleNamespace

import numpy as np
import torch

from perfmoco.config import MocoConfig
from perfmoco.moco import networks
from perfmoco.moco.basis import breathing_basis
from perfmoco.moco.decompose import pca_reference
from perfmoco.moco.pipeline import MotionCorrector
from perfmoco.moco.steps import shape_window_mm
from perfmoco.moco.synthetic import synthetic_series
from perfmoco.study import SliceRole


def test_shape_window_is_sized_to_the_heart_and_skipped_where_it_cannot_help():
    cfg = MocoConfig()  # window 30 mm, shape window 1.0 radius, at least 15 mm

    def crops(radius, role=SliceRole.HIGHRES, **cfg_kw):
        return SimpleNamespace(config=dataclasses.replace(cfg, **cfg_kw), lv_radius_mm=radius,
                               series=SimpleNamespace(role=role))

    assert shape_window_mm(crops(18.0)) == 18.0  # an apical LV
    assert shape_window_mm(crops(9.0)) == 15.0  # never below the minimum
    assert shape_window_mm(crops(34.0)) == 0.0  # a basal LV: the 30 mm window already fits
    assert shape_window_mm(crops(18.0, role=SliceRole.AIF)) == 0.0
    assert shape_window_mm(crops(float("nan"))) == 0.0  # LV detection fell back
    assert shape_window_mm(crops(18.0, refine_shape_window=0.0)) == 0.0


def test_lv_radius_is_measured_from_the_blood_pool(ph_none):
    from perfmoco.moco.preprocess import locate_lv
    from perfmoco.phantom import LABELS

    for s in ph_none.study.slices:
        if s.role is SliceRole.AIF:
            continue
        lab = ph_none.truth[f"s{s.slice_index}_labels"]
        true_r = np.sqrt((lab == LABELS["lv_blood"]).sum() * np.prod(s.pixel_spacing_mm) / np.pi)
        assert abs(locate_lv(s).lv_radius_mm - true_r) < 0.2 * true_r


def test_refinement_is_not_held_by_the_edge_of_the_field_of_view(monkeypatch):
    """A heart near the image's edge: the edge stays where the image was acquired
    while the anatomy moves, so inside the refinement's window it pulls every
    frame back towards where it was acquired.  Weighting only the pixels that
    every frame holds keeps most of the accuracy of the whole image (identity
    networks, as above: the refinement does all the work)."""
    from perfmoco.moco import refine

    rng = np.random.default_rng(7)
    jitter = rng.uniform(-2.0, 2.0, (30, 2))
    series, disp, _ = synthetic_series(
        n_dynamics=30, shape=(96, 104), spacing_mm=2.0, shift_px=jitter, seed=5
    )
    # acquired up to column 72: the edge 20 px (40 mm) from the heart's centre (48, 52)
    cut = series.replace(images=np.ascontiguousarray(series.images[:, :, :72]),
                         pd_images=np.ascontiguousarray(series.pd_images[:, :, :72]))
    torch.manual_seed(0)
    models = {s: networks.RegNet(networks.default_spec(s)) for s in networks.STAGES}

    def error(s):
        res = MotionCorrector(models).correct(s)
        ref = res.reference_index
        want = disp[ref, :, 48, 52] - disp[:, :, 48, 52]
        return float(np.median(np.linalg.norm(res.displacement[:, :, 48, 52] - want, axis=1)))

    whole, masked = error(series), error(cut)
    real = refine.crop_validity
    monkeypatch.setattr(refine, "crop_validity", lambda *a: torch.ones_like(real(*a)))
    held = error(cut)  # every pixel weighted, the edge too
    assert whole < 0.2  # pixels, of ~2 px of jitter
    assert held > 0.28 and masked < 0.25 and masked < 0.7 * held


def test_pca_reference_from_a_subset_of_frames_leaves_out_what_only_the_others_hold():
    """Frames of one breathing position make the components; a pattern only the
    others hold (their heart size) is not in anyone's reference."""
    g = torch.Generator().manual_seed(4)
    t, n = 30, 16
    mean, contrast, other = (torch.randn(n, n, generator=g) for _ in range(3))
    other = other - (other * contrast).sum() / (contrast * contrast).sum() * contrast  # orthogonal
    a = torch.linspace(0, 3, t) ** 2 * torch.exp(-torch.linspace(0, 3, t))
    b = torch.zeros(t)
    far = torch.arange(t) % 3 == 2  # a third of the frames, away from the usual position
    b[far] = 1.0 + torch.rand(int(far.sum()), generator=g)
    frames = mean + a[:, None, None] * contrast + b[:, None, None] * other
    plain = pca_reference(frames, components=2)
    torch.testing.assert_close(plain, frames, atol=1e-4, rtol=0)  # the pattern is a component
    ref = pca_reference(frames, components=2, basis=~far)
    torch.testing.assert_close(ref[~far], frames[~far], atol=1e-4, rtol=0)
    without = mean + a[:, None, None] * contrast
    torch.testing.assert_close(ref[far], without[far], atol=1e-4, rtol=0)
    # all frames, or too few for the components: the plain reference
    torch.testing.assert_close(pca_reference(frames, components=2, basis=torch.ones(t, dtype=bool)),
                               plain, atol=1e-4, rtol=0)
    few = torch.zeros(t, dtype=torch.bool)
    few[:2] = True
    assert torch.equal(pca_reference(frames, components=2, basis=few), plain)


def test_breathing_basis_is_the_share_of_frames_nearest_the_median_position():
    t = 10
    m = torch.zeros(t, 2, 3, dtype=torch.float64)
    m[:, 0, 0] = m[:, 1, 1] = 1.0
    m[:, 0, 2] = torch.tensor([0.0, 0.2, 5.0, 0.1, 9.0, -0.3, 6.0, 0.0, 0.4, 7.0])  # y, pixels
    near = breathing_basis(m, (20.0, 20.0), (2.0, 2.0), 0.5, 0.0)
    assert near.tolist() == [True, True, False, True, False, False, False, True, True, False]
    assert int(breathing_basis(m, (20.0, 20.0), (2.0, 2.0), 0.2, 0.0, minimum=6).sum()) == 6
    # and every frame within 1.5 mm (frame 5: 1 mm); within 20 mm: all, so no subset
    within = breathing_basis(m, (20.0, 20.0), (2.0, 2.0), 0.5, 1.5)
    assert within.tolist() == [True, True, False, True, False, True, False, True, True, False]
    assert breathing_basis(m, (20.0, 20.0), (2.0, 2.0), 0.5, 20.0) is None
    # every block of 8 frames has its share: a gasp that held the second half away
    g = torch.zeros(16, 2, 3, dtype=torch.float64)
    g[:, 0, 0] = g[:, 1, 1] = 1.0
    g[8:, 0, 2] = 10.0
    gasp = breathing_basis(g, (20.0, 20.0), (2.0, 2.0), 0.5, 3.0)
    assert gasp.tolist() == [True] * 8 + [True] * 4 + [False] * 4
    assert breathing_basis(m, (20.0, 20.0), (2.0, 2.0), 0.0, 0.0) is None
    assert breathing_basis(m, (20.0, 20.0), (2.0, 2.0), 1.0, 0.0) is None
