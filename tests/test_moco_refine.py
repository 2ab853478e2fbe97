"""Test-time affine refinement: recovery of known motion, and the dense step's non-rigid part."""

import math

import numpy as np
import torch

from perfmoco.config import MocoConfig
from perfmoco.moco import networks
from perfmoco.moco.decompose import pca_reference
from perfmoco.moco.pipeline import MotionCorrector
from perfmoco.moco.refine import refine_affine, remove_affine_part
from perfmoco.moco.synthetic import synthetic_series
from perfmoco.moco.transforms import identity_grid, sample


def _blobs(n=64, seed=0):
    """A smooth random image with structure at several scales (values ~0..1)."""
    g = torch.Generator().manual_seed(seed)
    img = torch.zeros(n, n)
    yy, xx = identity_grid((n, n))
    for _ in range(40):
        cy, cx = (torch.rand(2, generator=g) * (n - 1)).tolist()
        s = 2.0 + 6.0 * float(torch.rand(1, generator=g))
        img += float(torch.rand(1, generator=g)) * torch.exp(
            -((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * s * s)
        )
    return img / img.max()


def test_refinement_recovers_known_rotation_and_shift_against_a_fixed_reference():
    n, t = 64, 6
    fixed = _blobs(n)[None].expand(t, n, n).contiguous()
    rng = np.random.default_rng(1)
    angles = rng.uniform(-4, 4, t) * math.pi / 180
    shifts = rng.uniform(-2.5, 2.5, (t, 2))
    c = (n - 1) / 2.0
    rel = identity_grid((n, n)) - c
    true = torch.zeros(t, 2, 3, dtype=torch.float64)  # moving(q) = fixed(p): q = R (p - c) + c + s
    for k in range(t):
        ca, sa = math.cos(angles[k]), math.sin(angles[k])
        true[k, :, :2] = torch.tensor([[ca, -sa], [sa, ca]], dtype=torch.float64)
        true[k, :, 2] = torch.tensor([c, c], dtype=torch.float64) + torch.from_numpy(shifts[k]) - (
            true[k, :, :2] @ torch.tensor([c, c], dtype=torch.float64)
        )
    # moving = fixed seen through the inverse map, so that moving(true(p)) = fixed(p)
    inv = torch.linalg.inv(torch.cat([true, torch.tensor([[[0, 0, 1.0]]]).expand(t, 1, 3)], 1))
    coords = torch.einsum("tpq,qyx->tpyx", inv[:, :2, :2].float(), rel + c) + inv[:, :2, 2, None,
                                                                                  None].float()
    moving = sample(fixed, coords)
    est, rejected = refine_affine(moving, window_sigma_px=12.0, fixed=fixed, rounds=1, iterations=8)
    assert not rejected.any()
    centre = torch.tensor([c, c], dtype=torch.float64)
    err = (est[:, :, :2] @ centre + est[:, :, 2]) - (true[:, :, :2] @ centre + true[:, :, 2])
    assert float(err.norm(dim=1).max()) < 0.1  # pixels, started 1-3.5 px away
    ang = torch.atan2(est[:, 1, 0], est[:, 0, 0]).numpy()
    np.testing.assert_allclose(ang, angles, atol=0.3 * math.pi / 180)



def test_shape_only_refinement_recovers_scale_and_rotation_and_keeps_the_centre():
    n, t = 64, 5
    fixed = _blobs(n, seed=5)[None].expand(t, n, n).contiguous()
    rng = np.random.default_rng(2)
    scales = rng.uniform(0.94, 1.06, t)
    angles = rng.uniform(-3, 3, t) * math.pi / 180
    c = (n - 1) / 2.0
    lin = torch.zeros(t, 2, 2, dtype=torch.float64)  # moving(c + L (p - c)) = fixed(p)
    for k in range(t):
        ca, sa = math.cos(angles[k]), math.sin(angles[k])
        lin[k] = scales[k] * torch.tensor([[ca, -sa], [sa, ca]], dtype=torch.float64)
    rel = identity_grid((n, n)) - c
    coords = torch.einsum("tpq,qyx->tpyx", torch.linalg.inv(lin).float(), rel) + c
    moving = sample(fixed, coords)
    est, rejected = refine_affine(moving, window_sigma_px=12.0, fixed=fixed, rounds=1,
                                  iterations=8, translate=False)
    assert not rejected.any()
    centre = torch.tensor([c, c], dtype=torch.float64)
    # the crop centre is a fixed point of every map: no translation was fitted
    torch.testing.assert_close(est[:, :, :2] @ centre + est[:, :, 2], centre.expand(t, 2))
    np.testing.assert_allclose(est[:, :, :2].numpy(), lin.numpy(), atol=0.006)
    # the same frames with a shift as well: the shift is left alone (not absorbed)
    shifted = sample(fixed, coords + torch.tensor([1.5, -1.0])[:, None, None])
    est2, _ = refine_affine(shifted, window_sigma_px=12.0, fixed=fixed, rounds=1,
                            iterations=8, translate=False)
    torch.testing.assert_close(est2[:, :, :2] @ centre + est2[:, :, 2], centre.expand(t, 2))


def test_held_frames_keep_the_identity_while_the_others_are_refined():
    n, t = 64, 6
    fixed = _blobs(n, seed=3)[None].expand(t, n, n).contiguous()
    shifts = torch.tensor([[1.5, -1.0]] * t)
    g = identity_grid((n, n))
    moving = sample(fixed, g[None] - shifts[:, :, None, None])  # moving(p + s) = fixed(p)
    hold = torch.tensor([True, True, False, False, False, False])
    est, rejected = refine_affine(moving, window_sigma_px=12.0, fixed=fixed, rounds=1,
                                  iterations=8, hold=hold)
    assert not rejected.any()
    eye = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]], dtype=torch.float64)
    assert torch.equal(est[:2], eye.expand(2, 2, 3))
    np.testing.assert_allclose(est[2:, :, 2].numpy(), shifts[2:].double().numpy(), atol=0.1)


def test_coarse_round_removes_a_residual_shared_by_many_frames():
    """40 % of the frames sit 2.2 px off together (the far end of deep breathing, which
    the networks under-correct) while a bolus passes: a 2-component PCA reference
    takes that shared offset in as a component and keeps it; starting with a
    1-component round (``coarse_rounds``) removes it."""
    n, t = 64, 30
    yy, xx = identity_grid((n, n))
    spot = torch.exp(-((yy - 30) ** 2 + (xx - 34) ** 2) / (2 * 6.0**2))
    bolus = torch.exp(-(((torch.arange(t) - 10.0) / 4.0) ** 2))
    frames = _blobs(n, seed=5)[None] + 1.5 * bolus[:, None, None] * spot[None]
    far = torch.arange(t) % 5 < 2
    shifts = torch.where(far[:, None], torch.tensor([2.0, 1.0]), torch.zeros(2))
    moving = sample(frames, identity_grid((n, n))[None] - shifts[:, :, None, None])
    centre = torch.full((2,), (n - 1) / 2.0, dtype=torch.float64)
    err = {}
    for coarse in (0, 1):
        est, rejected = refine_affine(moving, window_sigma_px=12.0, components=2, rounds=4,
                                      iterations=3, coarse_rounds=coarse)
        assert not rejected.any()
        pos = est[:, :, :2] @ centre + est[:, :, 2]  # where each frame's centre is sampled
        rel = pos - pos[~far].mean(0)
        err[coarse] = float((rel - shifts.double()).norm(dim=1)[far].mean())
    assert err[1] < 0.5 < 1.0 < err[0]


def test_coarse_round_fits_translation_alone_without_the_neighbours():
    """The coarse round's 1-component reference misses the enhancing myocardium,
    which a linear part would read as scale: it moves frames, never scales them, and
    its reference does not yet take the neighbours' residuals in."""
    frames = _enhancing_heart()
    n = frames.shape[-1]
    shifts = 1.5 * torch.randn(frames.shape[0], 2, generator=torch.Generator().manual_seed(1))
    moving = sample(frames, identity_grid((n, n))[None] - shifts[:, :, None, None])
    eye = torch.eye(2, dtype=torch.float64)
    coarse = {}
    for sigma in (0.0, 2.0):
        coarse[sigma], _ = refine_affine(moving, window_sigma_px=12.0, components=2, rounds=1,
                                         iterations=3, coarse_rounds=1, neighbour_sigma_px=sigma)
        assert torch.equal(coarse[sigma][:, :, :2], eye.expand(len(moving), 2, 2))
    assert torch.equal(coarse[0.0], coarse[2.0])
    moved = (coarse[0.0][:, :, 2] - coarse[0.0][:, :, 2].mean(0)).float()
    assert float((moved - (shifts - shifts.mean(0))).norm(dim=1).median()) < 0.3
    full, _ = refine_affine(moving, window_sigma_px=12.0, components=2, rounds=1,
                            iterations=3, coarse_rounds=0)
    assert not torch.equal(full[:, :, :2], eye.expand(len(moving), 2, 2))


def _enhancing_heart(n=64, t=40):
    """Perfectly aligned frames of a heart whose contrast passes RV, LV, then myocardium."""
    yy, xx = identity_grid((n, n))
    c = (n - 1) / 2.0
    r = torch.hypot(yy - c, xx - c)
    edge = lambda d: torch.sigmoid(d / 0.7)  # noqa: E731
    lv = edge(8 - r)
    myo = edge(12 - r) - lv
    rv = edge(7 - torch.hypot(yy - c, xx - c + 17)) * (1 - edge(12 - r))
    tt = torch.arange(t, dtype=torch.float32)
    pulse = lambda t0, w: torch.exp(-(((tt - t0) / w) ** 2))  # noqa: E731
    rv_c = 1.5 * pulse(10, 3)
    lv_c = 1.3 * pulse(13, 3.5) + 0.3 * (tt > 13) * torch.exp(-(tt - 13).clamp(min=0) / 30)
    myo_c = 0.6 * ((tt - 13) / 8).clamp(0, 1) * torch.exp(-(tt - 21).clamp(min=0) / 25)
    frames = (0.3 * _blobs(n, seed=3)[None] * (1 - edge(14 - r))[None]
              + 0.2 * (lv + myo + rv)[None] + lv_c[:, None, None] * lv
              + rv_c[:, None, None] * rv + myo_c[:, None, None] * myo)
    return frames + 0.01 * torch.randn(frames.shape, generator=torch.Generator().manual_seed(0))


def test_neighbour_residuals_keep_enhancing_frames_at_their_scale():
    """From a perfect alignment, a 2-component reference misses the myocardial
    enhancement and the affine fit shrinks the heart in those frames by several %;
    with the neighbours' smoothed residuals in the reference, far less."""
    frames = _enhancing_heart()
    drift = {}
    for sigma in (0.0, 2.0):
        est, _ = refine_affine(frames, window_sigma_px=12.0, components=2, rounds=4,
                               iterations=3, coarse_rounds=1, neighbour_sigma_px=sigma)
        scale = 0.5 * (est[:, 0, 0] + est[:, 1, 1]) - 1.0  # truth: 0 in every frame
        drift[sigma] = float(scale[16:30].abs().median())
    assert drift[0.0] > 0.03
    assert drift[2.0] < 0.4 * drift[0.0]


def test_neighbour_residuals_in_the_pca_reference():
    """A frame's reference gets its neighbours' residuals, smoothed, never its own."""
    frames = _enhancing_heart(t=20)
    plain = pca_reference(frames, components=1)
    assert torch.equal(pca_reference(frames, components=1, neighbour_sigma_px=0.0), plain)
    nbr = pca_reference(frames, components=1, neighbour_sigma_px=1.5)
    # the contrast one component misses is carried by the neighbours
    assert float((nbr - frames).abs().mean()) < 0.7 * float((plain - frames).abs().mean())
    # a one-off artefact of frame 8 enters no reference of its own frame
    hit = frames.clone()
    hit[8, 30:34, 30:34] += 5.0
    ref = pca_reference(hit, components=1, neighbour_sigma_px=1.5)
    assert float((hit[8] - ref[8])[30:34, 30:34].mean()) > 0.8 * 5.0


def test_pipeline_refinement_removes_per_frame_jitter_with_untrained_networks():
    """The refinement's job: the networks leave ~1-2 px of uncorrelated error per
    frame.  With identity networks that error is all the motion there is; the
    refinement (PCA reference rebuilt every round) takes most of it out.  (Frames
    with little contrast and structure, here the pre-contrast ones, keep their
    group's mean offset: the low-rank reference cannot tell it from anatomy.)"""
    rng = np.random.default_rng(7)
    jitter = rng.uniform(-2.0, 2.0, (30, 2))
    series, disp, _ = synthetic_series(
        n_dynamics=30, shape=(96, 104), spacing_mm=2.0, shift_px=jitter, seed=5
    )
    torch.manual_seed(0)
    models = {s: networks.RegNet(networks.default_spec(s)) for s in networks.STAGES}
    off = MotionCorrector(models, config=MocoConfig(refine_iterations=0)).correct(series)
    on = MotionCorrector(models).correct(series)
    ref = on.reference_index
    # aligned to the reference frame: correction[t] + true[t] = true[ref] (uniform shifts)
    want = disp[ref, :, 48, 52] - disp[:, :, 48, 52]
    err_off = np.linalg.norm(off.displacement[:, :, 48, 52] - want, axis=1)
    err_on = np.linalg.norm(on.displacement[:, :, 48, 52] - want, axis=1)
    assert np.median(err_off) > 1.0
    assert np.median(err_on) < 0.5 and np.median(err_on) < 0.4 * np.median(err_off)


def test_refinement_bound_keeps_the_networks_result():
    """A frame the refinement would move further than ``max_total_px`` keeps the identity."""
    n, t = 48, 4
    fixed = _blobs(n, seed=3)[None].expand(t, n, n).contiguous()
    shifts = torch.tensor([[0.5, 0.0], [3.0, 0.0], [0.0, -0.5], [0.0, 3.0]])
    moving = sample(fixed, identity_grid((n, n))[None] - shifts[:, :, None, None])
    est, rejected = refine_affine(moving, window_sigma_px=10.0, fixed=fixed, rounds=1,
                                  iterations=8, max_total_px=1.5)
    assert rejected.tolist() == [False, True, False, True]
    np.testing.assert_allclose(est[1], [[1, 0, 0], [0, 1, 0]], atol=1e-12)
    c = (n - 1) / 2.0
    moved_centre = est[:, :, :2] @ torch.tensor([c, c], dtype=torch.float64) + est[:, :, 2]
    np.testing.assert_allclose(moved_centre[0] - c, [0.5, 0.0], atol=0.1)  # q(p) = p + s


def test_remove_affine_part_keeps_only_the_non_rigid_field():
    t, n = 3, 48
    g = identity_grid((n, n)) - (n - 1) / 2.0
    rng = np.random.default_rng(2)
    aff = torch.zeros(t, 2, n, n)
    for k in range(t):
        a = torch.from_numpy(rng.normal(0, 0.05, (2, 2))).float()
        b = torch.from_numpy(rng.normal(0, 2.0, 2)).float()
        aff[k] = torch.einsum("pq,qyx->pyx", a, g) + b[:, None, None]
    bump = torch.zeros(t, 2, n, n)
    bump[:, 0] = 1.5 * torch.exp(-((g[0] - 6) ** 2 + (g[1] + 4) ** 2) / 30.0)
    np.testing.assert_allclose(remove_affine_part(aff, window_sigma_px=10.0), 0.0, atol=1e-4)
    np.testing.assert_allclose(
        remove_affine_part(aff + bump, window_sigma_px=10.0),
        remove_affine_part(bump, window_sigma_px=10.0),
        atol=1e-4,
    )
    # a local bump is mostly kept
    kept = remove_affine_part(bump, window_sigma_px=10.0)
    assert float(kept[:, 0].max()) > 0.5 * float(bump[:, 0].max())


def test_components_of_one_breathing_position_let_the_refinement_undo_a_heart_size_change():
    """Two of every five frames (a deep breath) show the heart 7 % larger, one more
    2 %: the apex slides through the slice.  Components learned from all frames,
    with the neighbours' residuals, carry that into those frames' references and
    the refinement keeps part of it; learned from the frames near the usual
    position, less."""
    frames = _enhancing_heart()
    t, n = frames.shape[0], frames.shape[-1]
    depth = torch.tensor([0.0, 0.3, 1.0, 1.0, 0.3]).repeat(t // 5 + 1)[:t]
    size = 1.0 + 0.07 * depth
    c = (n - 1) / 2.0
    rel = identity_grid((n, n)) - c
    moved = sample(frames, rel[None] / size[:, None, None, None] + c)
    err = {}
    for basis in (None, depth < 0.5):
        est, rejected = refine_affine(moved, window_sigma_px=12.0, components=2, rounds=4,
                                      iterations=3, coarse_rounds=1, neighbour_sigma_px=2.0,
                                      basis=basis)
        assert not rejected.any()
        scale = 0.5 * (est[:, 0, 0] + est[:, 1, 1])  # truth: size
        err[basis is None] = (float((scale - size)[depth > 0.5].abs().median()),
                              float((scale - size)[depth < 0.5].abs().median()))
    assert err[True][0] > 0.028  # deep frames: 3 % or more of the 7 % left
    assert err[False][0] < 0.022 and err[False][1] < 0.022


def test_a_frame_that_would_scale_past_the_bound_keeps_its_shift_and_stops_at_the_bound():
    """A heart 14 % larger and 1.5 px off: the fit's linear part stops at the 10 % bound
    (steps beyond it are refused) and its shift is still found, instead of the whole
    refinement of that frame being dropped (a deep breath at the apex)."""
    n, t = 64, 3
    fixed = _blobs(n, seed=5)[None].expand(t, n, n).contiguous()
    c = (n - 1) / 2.0
    rel = identity_grid((n, n)) - c
    size = torch.tensor([1.0, 1.05, 1.14])
    shift = torch.tensor([[1.5, -1.0], [0.0, 1.0], [1.5, -1.0]])
    moving = sample(fixed, rel[None] / size[:, None, None, None] + c - shift[:, :, None, None])
    est, rejected = refine_affine(moving, window_sigma_px=12.0, fixed=fixed, rounds=2,
                                  iterations=8)
    assert not rejected.any()
    scale = torch.linalg.svdvals(est[:, :, :2])
    assert float((scale - 1.0).abs().max()) <= 0.1 + 1e-4
    assert float(scale[2].min()) > 1.08  # as far as the bound lets it
    np.testing.assert_allclose(scale[:2].mean(dim=1).numpy(), [1.0, 1.05], atol=0.01)
    centre = torch.tensor([c, c], dtype=torch.float64)
    moved = est[:, :, :2] @ centre + est[:, :, 2] - centre  # where the centre is sampled
    want = size[:, None] * shift  # the centre samples c + size * shift
    np.testing.assert_allclose(moved[:2].numpy(), want[:2].numpy(), atol=0.15)
    assert float((moved[2] - want[2].double()).norm()) < 0.6  # the 14 % one: near it


def test_normal_equations_equal_those_of_the_jacobian():
    """J^T W J and J^T W r from the products in pairs equal those of the explicit
    Jacobian (columns d/dy * (y, x, 1), d/dx * (y, x, 1))."""
    from perfmoco.moco.normal_equations import coordinate_pairs, normal_equations

    g = torch.Generator().manual_seed(0)
    t, h, w = 4, 12, 10
    iy, ix, r = (torch.randn(t, h, w, generator=g, dtype=torch.float64) for _ in range(3))
    win = torch.rand(h, w, generator=g, dtype=torch.float64)
    ys, xs = torch.randn(h, w, generator=g, dtype=torch.float64), torch.randn(
        h, w, generator=g, dtype=torch.float64)
    jac = torch.stack([iy * ys, iy * xs, iy, ix * ys, ix * xs, ix], 1).reshape(t, 6, -1)
    jw = jac * win.reshape(1, 1, -1)
    hess, grad = normal_equations(iy, ix, r, win, coordinate_pairs(ys, xs))
    torch.testing.assert_close(hess, jw @ jac.transpose(1, 2))
    torch.testing.assert_close(grad, (jw @ r.reshape(t, -1, 1))[..., 0])


def test_extra_rounds_run_only_while_the_frames_still_move(monkeypatch):
    """Frames 3 px off a fixed reference with one Gauss-Newton step per round: one round
    leaves them off, the extra rounds take them there; frames already in place take no
    extra round (counted by the references built)."""
    import perfmoco.moco.refine as refine

    n, t = 64, 6
    fixed = _blobs(n)[None].expand(t, n, n).contiguous()
    yy, xx = identity_grid((n, n))
    moving = sample(fixed, torch.stack([yy + 3.0, xx - 2.0])[None].expand(t, 2, n, n))
    c = torch.tensor([(n - 1) / 2.0] * 2, dtype=torch.float64)

    def err(est):  # where each frame's centre is sent, against the true (-3, 2) px
        return float(((est[:, :, :2] @ c + est[:, :, 2]) - c - torch.tensor(
            [-3.0, 2.0], dtype=torch.float64)).norm(dim=1).max())

    kw = dict(window_sigma_px=12.0, fixed=fixed, rounds=1, iterations=1, max_step_px=1.5)
    one, _ = refine_affine(moving, extra_rounds=0, **kw)
    more, _ = refine_affine(moving, extra_rounds=6, **kw)
    assert err(one) > 1.5 and err(more) < 0.3
    built = []
    real = refine.pca_reference
    monkeypatch.setattr(refine, "pca_reference",
                        lambda *a, **k: built.append(1) or real(*a, **k))
    still = _blobs(n, seed=3)[None].expand(t, n, n) + 0.01 * torch.randn(t, n, n)
    refine_affine(still, window_sigma_px=12.0, rounds=2, extra_rounds=6, iterations=3)
    assert len(built) == 2
