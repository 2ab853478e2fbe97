"""The three-step pipeline: shapes, units, composition through the crops, bad input."""

import math

import numpy as np
import pytest
import torch

from perfmoco.config import MocoConfig
from perfmoco.moco import networks
from perfmoco.moco.losses import global_ncc_loss, stage_loss
from perfmoco.moco.pipeline import MotionCorrector, correct_series
from perfmoco.moco.synthetic import synthetic_series
from perfmoco.study import StudyError


def identity_models():
    torch.manual_seed(0)
    return {s: networks.RegNet(networks.default_spec(s)) for s in networks.STAGES}


#: The networks alone: no test-time refinement (it would correct the series' motion).
NETS_ONLY = MocoConfig(refine_iterations=0)


@pytest.fixture(scope="module")
def series():
    s, _, _ = synthetic_series(n_dynamics=16, shape=(96, 112), spacing_mm=2.0, seed=3)
    return s


def test_identity_networks_give_identity(series):
    res = MotionCorrector(identity_models(), config=NETS_ONLY).correct(series)
    t, ny, nx = series.images.shape
    assert res.corrected.shape == (t, ny, nx) and res.corrected.dtype == np.float32
    assert res.displacement.shape == (t, 2, ny, nx) and res.displacement.dtype == np.float32
    assert res.pd_corrected.shape == series.pd_images.shape
    assert res.pd_displacement.shape == (series.pd_images.shape[0], 2, ny, nx)
    assert res.reference_index == t - 10
    assert res.qc.shape == (t,) and res.qc.dtype == bool
    assert float(np.abs(res.displacement).max()) < 1e-4
    np.testing.assert_allclose(res.corrected, series.images, rtol=1e-4, atol=1e-2)


def test_a_signed_series_keeps_its_negative_values(series):
    """The bicubic resampling keeps magnitude images off zero; a series of negative
    values (signed or offset images) keeps them (it had come back all zeros)."""
    neg = series.replace(images=-series.images, pd_images=-series.pd_images)
    res = MotionCorrector(identity_models(), config=NETS_ONLY).correct(neg)
    np.testing.assert_allclose(res.corrected, neg.images, rtol=1e-4, atol=1e-2)
    # (moved by the PD alignment): not zeroed either
    assert np.abs(res.pd_corrected).mean() > 0.9 * np.abs(neg.pd_images).mean()


def test_known_affine_maps_exactly_through_crop_to_full_fov(series):
    """A step-1 net that always predicts a crop-pixel translation gives a constant
    full-FOV displacement of that translation times the crop/full pixel ratio."""
    models = identity_models()
    head = models["affine1"].net.output_block.fc
    half = (models["affine1"].crop - 1) / 2.0
    shift_crop = torch.tensor([3.0, -5.0])  # crop pixels (y, x)
    with torch.no_grad():
        head.bias.copy_(
            torch.tensor([1.0, 0.0, shift_crop[0] / half, 0.0, 1.0, shift_crop[1] / half])
        )
    # anchoring off, one step-1 pass: this checks the crop -> full-FOV mapping alone
    res = MotionCorrector(
        models, config=MocoConfig(anchor_reference=False, affine1_passes=1, refine_iterations=0,
                                  resample="bilinear", pd_align=False)
    ).correct(series)
    scale = models["affine1"].crop_spacing_mm / series.pixel_spacing_mm[0]
    expect = shift_crop.numpy() * scale  # full-FOV pixels
    np.testing.assert_allclose(res.displacement[:, 0], expect[0], atol=1e-3)
    np.testing.assert_allclose(res.displacement[:, 1], expect[1], atol=1e-3)
    # each further step-1 pass composes the (here constant) translation once more
    res3 = MotionCorrector(
        models, config=MocoConfig(anchor_reference=False, affine1_passes=3, refine_iterations=0,
                                  pd_align=False)
    ).correct(series)
    np.testing.assert_allclose(res3.displacement[:, 0], 3 * expect[0], atol=1e-3)
    np.testing.assert_allclose(res3.displacement[:, 1], 3 * expect[1], atol=1e-3)
    # resampled once from the originals with that displacement
    from perfmoco.moco.transforms import warp

    np.testing.assert_allclose(res.corrected, warp(series.images, res.displacement), atol=1e-2)
    assert res.pd_displacement[:, 0].mean() == pytest.approx(expect[0], abs=1e-3)


def test_bicubic_final_resampling_blurs_less_than_bilinear():
    """The default final resampling: a smooth ring shifted by half a pixel comes
    back closer to the analytic truth with bicubic than with bilinear weights."""
    from perfmoco.moco.transforms import identity_grid, sample

    def ring(dy, dx):
        g = identity_grid((64, 64)).double()
        r = torch.hypot(g[0] - 31.5 - dy, g[1] - 30.2 - dx)
        return torch.exp(-((r - 12.0) / 2.0) ** 2)[None].float()

    moved = ring(0.5, -0.5)  # anatomy at +(0.5, -0.5): pull back from p + (0.5, -0.5)
    coords = identity_grid((64, 64))[None] + torch.tensor([0.5, -0.5])[None, :, None, None]
    truth = ring(0.0, 0.0)
    err = {m: float((sample(moved, coords, mode=m) - truth)[:, 8:-8, 8:-8].abs().max())
           for m in ("bilinear", "bicubic")}
    assert err["bicubic"] < 0.35 * err["bilinear"]


def test_anchoring_keeps_the_reference_frame_in_place(series):
    """A net that moves every frame alike moves the series, not the alignment:
    anchored, the reference frame (and so every frame) keeps its position."""
    models = identity_models()
    half = (models["affine1"].crop - 1) / 2.0
    with torch.no_grad():
        models["affine1"].net.output_block.fc.bias.copy_(
            torch.tensor([1.0, 0.0, 3.0 / half, 0.0, 1.0, -5.0 / half])
        )
    res = MotionCorrector(models, config=NETS_ONLY).correct(series)
    np.testing.assert_allclose(res.displacement[res.reference_index], 0.0, atol=1e-3)
    np.testing.assert_allclose(res.displacement, 0.0, atol=1e-3)


def test_anchor_to_frame_removes_the_reference_translation():
    from perfmoco.moco.transforms import anchor_to_frame, identity_grid

    ident = identity_grid((40, 50))
    shift = torch.tensor([[2.0, -3.0], [2.5, -1.0], [0.0, 0.0]])  # (T, 2) pixels
    phi = ident[None] + shift[:, :, None, None]
    out = anchor_to_frame(phi, 0, centre_yx=(20, 25), radius_px=8)
    disp = (out - ident[None])[:, :, 5:-5, 5:-5]
    np.testing.assert_allclose(disp[0], 0.0, atol=1e-5)
    np.testing.assert_allclose(disp[1, 0], 0.5, atol=1e-5)
    np.testing.assert_allclose(disp[1, 1], 2.0, atol=1e-5)


def test_anchor_to_frame_undoes_a_rotation_and_scale_shared_by_every_frame():
    """Networks that turn an equal pair by some degrees turn the whole series:
    anchored, the reference frame keeps its acquired geometry, and each frame
    keeps its alignment to it."""
    from perfmoco.moco.transforms import anchor_to_frame, identity_grid

    ident = identity_grid((60, 60)).double()
    c = torch.tensor([30.0, 28.0], dtype=torch.float64)
    th = math.radians(12.0)
    rot = torch.tensor([[math.cos(th), -math.sin(th)], [math.sin(th), math.cos(th)]],
                       dtype=torch.float64)
    common = rot @ torch.diag(torch.tensor([0.93, 1.0], dtype=torch.float64))

    def affine(lin, shift):  # q -> c + lin (q - c) + shift
        return (c[:, None, None] + torch.einsum("ij,jyx->iyx", lin, ident - c[:, None, None])
                + torch.tensor(shift, dtype=torch.float64)[:, None, None])

    # frame 0 (reference): only the shared transform; frame 1: also moved by (1.5, -2)
    phi = torch.stack([affine(common, (0.7, -0.4)), affine(common, (0.7 + 1.5, -0.4 - 2.0))])
    out = anchor_to_frame(phi.float(), 0, centre_yx=(30.0, 28.0), radius_px=15)
    inner = (slice(None), slice(None), slice(15, 45), slice(15, 45))
    disp = (out.double() - ident[None])[inner]
    np.testing.assert_allclose(disp[0].numpy(), 0.0, atol=2e-3)
    # frame 1 relative to the reference: its own (1.5, -2) move, seen through the shared map
    rel = torch.linalg.solve(common, torch.tensor([1.5, -2.0], dtype=torch.float64))
    np.testing.assert_allclose(disp[1, 0].numpy(), float(common[0] @ rel), atol=2e-3)
    np.testing.assert_allclose(disp[1, 1].numpy(), float(common[1] @ rel), atol=2e-3)


def test_method_none_is_identity(series):
    res = correct_series(series, method="none")
    assert not res.qc.any() and not res.displacement.any()
    np.testing.assert_array_equal(res.corrected, series.images)
    with pytest.raises(ValueError, match="method"):
        correct_series(series, method="iterative-typo")


@pytest.mark.parametrize(
    "change, message",
    [
        ("few", "at least 10"),
        ("nan", "non-finite"),
        ("blank", "blank"),
    ],
)
def test_bad_input_raises_clear_study_error(series, change, message):
    im = series.images.copy()
    if change == "few":
        bad = series.replace(images=im[:7], times_s=series.times_s[:7])
    elif change == "nan":
        im[4, 10, 10] = np.nan
        bad = series.replace(images=im)
    else:  # more than a fifth of the dynamics lost (one or two are filled: test_moco_trained)
        im[::2] = 0.0
        bad = series.replace(images=im)
    with pytest.raises(StudyError, match=message):
        correct_series(bad, corrector=MotionCorrector(identity_models()))


def test_internal_failure_becomes_study_error(series):
    mc = MotionCorrector(identity_models())

    def broken(*a, **k):
        raise RuntimeError("boom")

    mc._run_net = broken
    with pytest.raises(StudyError, match="slice 0.*failed.*boom"):
        correct_series(series, corrector=mc)
    with pytest.raises(StudyError, match="slice 0.*failed.*boom"):
        mc.correct(series)
    # the caller's fallback keeps every image
    kept = correct_series(series, method="none")
    np.testing.assert_array_equal(kept.corrected, series.images)


def test_missing_weights_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="affine1.pt.*perfmoco train"):
        MotionCorrector.load(tmp_path)
    with pytest.raises(StudyError, match="weights missing"):
        s, _, _ = synthetic_series(n_dynamics=12, shape=(64, 64))
        correct_series(s, config=MocoConfig(weights_dir=str(tmp_path)))


def test_checkpoint_round_trip_carries_spec_and_version(tmp_path):
    net = identity_models()["dense"]
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.01 * torch.randn_like(p))
    networks.save(tmp_path / "dense.pt", net, stage="dense", train_info={"step": 7})
    back, meta = networks.load(tmp_path / "dense.pt", device="cpu")
    assert meta["stage"] == "dense" and meta["train_info"]["step"] == 7
    assert meta["perfmoco_version"] and meta["spec"] == net.spec
    x = torch.rand(2, 1, 96, 96)
    torch.testing.assert_close(back(x, x), net.eval()(x, x))
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(Exception, match="junk"):
        networks.load(tmp_path / "junk.pt")


@pytest.mark.parametrize("stage", ["affine1", "dense"])
def test_batchnorm_folded_into_the_convolutions_gives_the_same_output(stage):
    """Non-trivial norm statistics (as after training), folded for inference: the same
    displacement and affine map within rounding, no batch norm left; a training-mode
    network is refused."""
    torch.manual_seed(0)
    net = networks.RegNet(networks.default_spec(stage))
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
        for p in net.parameters():
            p.add_(0.01 * torch.randn_like(p))
    with pytest.raises(ValueError, match="eval mode"):
        networks.fuse_batchnorm(net)
    net.eval()
    n = net.crop
    x, y = torch.rand(3, 1, n, n), torch.rand(3, 1, n, n)
    with torch.inference_mode():
        before = net.predict(x, y)
    n_norms = sum(isinstance(m, torch.nn.BatchNorm2d) for m in net.modules())
    assert n_norms > 5
    networks.fuse_batchnorm(net)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in net.modules())
    with torch.inference_mode():
        after = net.predict(x, y)
    torch.testing.assert_close(after[0], before[0], atol=1e-4, rtol=1e-4)
    if before[1] is not None:
        torch.testing.assert_close(after[1], before[1], atol=1e-4, rtol=1e-4)


def test_losses_at_perfect_alignment():
    x = torch.rand(2, 1, 32, 32)
    assert float(global_ncc_loss(x, x)) == pytest.approx(-1.0, abs=1e-4)
    zero = torch.zeros(2, 2, 32, 32)
    dense = stage_loss("dense", zero, moving=x, fixed=x, lncc_kernel=9)
    assert float(dense) == pytest.approx(-1.0, abs=1e-2)  # -LNCC = -1, bending 0
    a1 = stage_loss("affine1", zero, moving=x, fixed=x, low_moving=x, low_fixed=x)
    a1_off = stage_loss("affine1", zero, moving=x, fixed=x, low_moving=x, low_fixed=x.flip(-1))
    assert float(a1) < float(a1_off)


def test_steps_can_be_switched_off(series):
    cfg = MocoConfig(affine2_passes=0, dense_step=False, refine_iterations=0)
    res = MotionCorrector(identity_models(), config=cfg).correct(series)
    assert res.displacement.shape == (series.n_dynamics, 2, *series.shape)
    assert float(np.abs(res.displacement).max()) < 1e-4


@pytest.mark.filterwarnings("ignore")
def test_a_mistriggered_frame_is_not_the_reference():
    """Fresh 11867 a's basal slice (mistriggers): step 1's maps put dynamic 62, a
    mistriggered frame, nearest the median breathing position and it became the
    reference; every other frame's true myocardium then met its own at Dice 0.83.
    QC flags it, and its unflagged neighbour anchors the result."""
    from perfmoco.config import Config
    from perfmoco.moco.data import slice_truth
    from perfmoco.moco.evaluate import corrected_true_masks
    from perfmoco.phantom import generate_phantom
    from perfmoco.pipeline import stack_locations

    cfg = Config()
    ph = generate_phantom(seed=11867, motion="mistrigger", vendor="a")
    s = ph.study.slices[0]
    r = MotionCorrector.load(device="cpu", config=cfg.moco).correct(
        s, lv=stack_locations(ph.study, cfg)[0])
    assert not r.qc[r.reference_index]
    masks, _ = corrected_true_masks(slice_truth(ph.truth, s), r.displacement)
    ref = masks[r.reference_index]
    dice = [2 * (m & ref).sum() / (m.sum() + ref.sum()) for m in masks]
    assert np.mean(dice) > 0.92  # 0.83 with the mistriggered reference
