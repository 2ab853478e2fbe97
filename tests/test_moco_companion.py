"""The AIF slice's pre-contrast frames follow a tissue slice's breathing (moco.companion)."""

import numpy as np
import pytest

from perfmoco.config import MocoConfig
from perfmoco.moco.companion import follow_tissue, follow_tissue_study, heart_track_mm
from perfmoco.moco.result import MocoResult
from perfmoco.study import SliceGeometry, SliceRole, SliceSeries

T, N_PRE = 40, 12
#: The block ends a frame before the first enhanced one (baseline.baseline_length's margin).
BLOCK = N_PRE - 1
AIF_MM, TISSUE_MM = 4.5, 2.0


def _breathing(phase: float = 0.0) -> np.ndarray:
    """True heart motion per frame, mm (y, x): a 4.6-beat breathing cycle."""
    t = np.arange(T)
    return np.stack([6.0 * np.sin(2 * np.pi * t / 4.6 + phase),
                     3.0 * np.cos(2 * np.pi * t / 4.6 + phase)], axis=1)


def _series(n: int, spacing: float, role: SliceRole, geometry=None) -> SliceSeries:
    """A disc (the LV) that enhances from frame ``N_PRE`` on, with a little noise."""
    rng = np.random.default_rng(n)
    yy, xx = np.mgrid[0:n, 0:n]
    disc = ((yy - n / 2) ** 2 + (xx - n / 2) ** 2) * spacing**2 <= 20.0**2
    curve = np.where(np.arange(T) >= N_PRE, 1.0 + 0.1 * (np.arange(T) - N_PRE), 0.0)
    images = 100.0 + 300.0 * curve[:, None, None] * disc[None] + rng.normal(0, 3, (T, n, n))
    return SliceSeries(images=images.astype(np.float32), times_s=np.arange(T) * 0.9,
                       pixel_spacing_mm=(spacing, spacing), role=role,
                       slice_index=3 if role is SliceRole.AIF else 0, geometry=geometry)


def _result(series: SliceSeries, field_px: np.ndarray) -> MocoResult:
    """A correction whose every frame is a translation by ``field_px`` (T, 2)."""
    n = series.shape[-1]
    disp = np.broadcast_to(field_px[:, :, None, None], (T, 2, n, n)).astype(np.float32)
    return MocoResult(series.images.copy(), disp.copy(), T - 10, np.zeros(T, bool),
                      np.zeros((0, n, n), np.float32), np.zeros((0, 2, n, n), np.float32))


def _aif_case(tissue_geometry=None, tissue_motion=None):
    """The AIF's correction right for the late frames, its block at its mean position."""
    motion = _breathing()
    aif = _series(48, AIF_MM, SliceRole.AIF)
    truth = motion / AIF_MM + np.array([0.3, -0.2])  # its own reference: another constant
    wrong = truth.copy()
    wrong[:N_PRE] = truth[:N_PRE].mean(axis=0)
    tissue = _series(96, TISSUE_MM, SliceRole.HIGHRES, tissue_geometry)
    tm = motion if tissue_motion is None else tissue_motion
    if tissue_geometry is not None:  # the tissue slice's image axes: (y, x) = (x, y) here
        tm = tm[:, ::-1]
    tissue_res = _result(tissue, tm / TISSUE_MM + np.array([1.0, 0.5]))
    return aif, _result(aif, wrong), truth, [(tissue, tissue_res, (48.0, 48.0))]


def _follow(aif, res, tissue):
    return follow_tissue(aif, res, (24.0, 24.0), tissue, radius_mm=40.0, spread_mm=1.0,
                         block_radius_mm=60.0)


def test_pre_contrast_frames_move_to_the_tissue_slices_track():
    aif, res, truth, tissue = _aif_case()
    out = _follow(aif, res, tissue)
    got = out.displacement[:, :, 24, 24]
    before = np.abs(res.displacement[:BLOCK, :, 24, 24] - truth[:BLOCK]).max()
    assert before > 0.8  # the block sat ~1 px (4.5 mm) off in some frames
    assert np.abs(got[:BLOCK] - truth[:BLOCK]).max() < 0.05
    np.testing.assert_array_equal(out.displacement[BLOCK:], res.displacement[BLOCK:])
    # the moved frames are the originals resampled once with the new field
    assert not np.allclose(out.corrected[:BLOCK], res.corrected[:BLOCK])
    np.testing.assert_array_equal(out.corrected[BLOCK:], res.corrected[BLOCK:])


def test_qc_flags_of_the_moved_frames_follow_the_tissue_slices():
    """The AIF slice's flags on its block judged its own placing of those frames, which
    following replaces; a heartbeat the tissue slice flags too (a mistrigger) stays
    flagged, and so do frames after the block."""
    aif, res, truth, tissue = _aif_case()
    own = np.zeros(T, bool)
    own[[1, 4, 5, BLOCK + 3]] = True  # dark frames its correction could not place; a late one
    t_series, t_res, c = tissue[0]
    t_qc = np.zeros(T, bool)
    t_qc[[5, 20]] = True  # a mistriggered heartbeat (5) and a late frame of its own
    out = _follow(aif, res._replace(qc=own), [(t_series, t_res._replace(qc=t_qc), c)])
    assert np.abs(out.displacement[:BLOCK, :, 24, 24] - truth[:BLOCK]).max() < 0.05
    assert np.flatnonzero(out.qc).tolist() == [5, BLOCK + 3]
    # nothing flagged on the block: the result's flags are passed on as they were
    quiet = np.zeros(T, bool)
    quiet[BLOCK + 3] = True
    out = _follow(aif, res._replace(qc=quiet), tissue)
    assert out.qc is quiet


def test_a_tissue_slice_with_other_image_axes_is_turned_into_the_aifs():
    swapped = SliceGeometry(read_dir=(0.0, 1.0, 0.0), phase_dir=(1.0, 0.0, 0.0),
                            slice_dir=(0.0, 0.0, -1.0))
    aif, res, truth, tissue = _aif_case(tissue_geometry=swapped)
    got = _follow(aif, res, tissue).displacement[:BLOCK, :, 24, 24]
    assert np.abs(got - truth[:BLOCK]).max() < 0.05


def test_a_header_with_zeroed_directions_counts_as_the_common_grid():
    zeros = SliceGeometry(read_dir=(0.0, 0.0, 0.0), phase_dir=(0.0, 0.0, 0.0))
    aif, res, truth, tissue = _aif_case()
    t_series, t_res, c = tissue[0]
    got = _follow(aif, res, [(t_series.replace(geometry=zeros), t_res, c)])
    assert np.abs(got.displacement[:BLOCK, :, 24, 24] - truth[:BLOCK]).max() < 0.05


def test_a_tissue_slice_that_breathes_otherwise_is_not_followed():
    aif, res, _, tissue = _aif_case(tissue_motion=_breathing(phase=1.5))
    assert _follow(aif, res, tissue) is res


def test_heart_track_reads_the_field_about_the_lv_in_patient_mm():
    s = _series(48, AIF_MM, SliceRole.AIF)
    field = np.zeros((T, 2, 48, 48), np.float32)
    field[:, 0] = 1.0  # one pixel down the image's y (phase) axis
    field[:, :, :4] = 9.0  # far from the LV: outside the disc
    track = heart_track_mm(s, field, (24.0, 24.0), radius_mm=40.0)
    np.testing.assert_allclose(track, np.tile([0.0, AIF_MM, 0.0], (T, 1)))


def test_the_study_step_is_off_by_setting_and_passes_failed_slices_over():
    aif, res, _, tissue = _aif_case()
    t_series, t_res, _ = tissue[0]
    slices, results = [t_series, aif], [t_res, res]
    off = follow_tissue_study(slices, results, [(48.0, 48.0), (24.0, 24.0)],
                              config=MocoConfig(aif_follow_tissue=False))
    assert off[1] is res
    failed = follow_tissue_study(slices, [None, res], [(48.0, 48.0), (24.0, 24.0)],
                                 config=MocoConfig())
    assert failed[1] is res and failed[0] is None
    on = follow_tissue_study(slices, results, [(48.0, 48.0), (24.0, 24.0)],
                             config=MocoConfig())
    assert on[1] is not res and on[0] is t_res


@pytest.mark.parametrize("n_frames", [N_PRE + 4])
def test_too_short_a_series_is_left_as_it_is(n_frames):
    aif, res, _, tissue = _aif_case()
    short = aif.replace(images=aif.images[:n_frames], times_s=aif.times_s[:n_frames])
    r = res._replace(corrected=res.corrected[:n_frames], displacement=res.displacement[:n_frames],
                     qc=res.qc[:n_frames])
    assert _follow(short, r, tissue) is r


PHANTOM_SEED = 12212


@pytest.fixture(scope="module")
def corrected_phantom():
    """A breathing phantom, every slice corrected by the shipped networks (as acquired)."""
    from perfmoco.config import Config
    from perfmoco.moco.pipeline import MotionCorrector
    from perfmoco.phantom import generate_phantom
    from perfmoco.pipeline import stack_locations

    ph = generate_phantom(seed=PHANTOM_SEED, vendor="a")
    mc = MotionCorrector.load(device="cpu")
    locs = stack_locations(ph.study, Config())
    return ph, [mc.correct(s, lv=lv) for s, lv in zip(ph.study.slices, locs)], locs, mc.config


def _block_residual_mm(ph, res, n: int) -> float:
    """Mean distance (mm) of the AIF slice's first ``n`` frames from its reference frame,
    over the true myocardium (the correction composed with the true motion)."""
    from perfmoco.metrics._common import compose_displacement

    comp = compose_displacement(res.displacement, ph.truth["aif_displacement"])
    myo = ph.truth["aif_labels"] == 8
    r = (comp - comp[res.reference_index : res.reference_index + 1])[:, :, myo].mean(axis=2)
    spacing = np.asarray(ph.study.aif.pixel_spacing_mm)
    return float(np.linalg.norm(r[:n] * spacing, axis=1).mean())


def test_on_a_phantom_the_aifs_pre_contrast_frames_come_nearer_the_reference(corrected_phantom):
    ph, results, locs, config = corrected_phantom
    k = next(i for i, s in enumerate(ph.study.slices) if s.role is SliceRole.AIF)
    followed = follow_tissue_study(ph.study.slices, results, locs, config=config)
    before = _block_residual_mm(ph, results[k], 8)
    after = _block_residual_mm(ph, followed[k], 8)
    assert after < 0.75 * before and after < 1.2, (before, after)  # 1.50 -> 0.89 mm
    for i, r in enumerate(results):  # the tissue slices are left as they were
        if i != k:
            assert followed[i] is r


def test_process_study_runs_the_step_after_the_dl_correction_only(monkeypatch, small_study):
    import perfmoco.moco.companion as companion
    import perfmoco.pipeline as pipeline
    from perfmoco.moco.pipeline import correct_series

    class Identity:
        config = MocoConfig()

        def correct(self, series, *, lv=None):
            return correct_series(series, method="none")

    calls = []

    def record(slices, results, centres=None, *, config):
        calls.append([s.name for s in slices])
        if len(calls) == 2:
            raise ValueError("no LV found")  # a failure keeps the slices' own corrections
        return results

    monkeypatch.setattr(pipeline, "load_corrector", lambda config: Identity())
    monkeypatch.setattr(companion, "follow_tissue_study", record)
    assert pipeline.process_study(small_study, quantify=False).ok
    assert calls == [[s.name for s in small_study.slices]]
    failed = pipeline.process_study(small_study, quantify=False)
    assert failed.ok and all(r is not None for r in failed.moco)
    pipeline.process_study(small_study, quantify=False, method="none")
    assert len(calls) == 2


def test_correct_slices_passes_over_a_failing_slice_or_raises(small_study):
    from perfmoco.moco.pipeline import correct_series
    from perfmoco.moco.whole_study import correct_slices

    bad = small_study.slices[1].name

    def correct(series, *, lv=None):
        if series.name == bad:
            raise ValueError("blank frame")
        return correct_series(series, method="none")

    seen, steps = [], []
    out = correct_slices(small_study, correct, config=MocoConfig(),
                         failed=lambda s, exc: seen.append((s.name, str(exc))), step=steps.append)
    assert [r is None for r in out] == [s.name == bad for s in small_study.slices]
    assert seen == [(bad, "blank frame")] and len(steps) == len(small_study.slices)
    with pytest.raises(ValueError, match="blank frame"):
        correct_slices(small_study, correct, config=MocoConfig())


def test_a_short_pre_contrast_block_follows_with_its_margin_frame():
    """A scan started three frames before the bolus (a block of two frames and the margin
    frame, :func:`perfmoco.moco.precontrast.block_length`): all three move to the tissue
    slice's track, the frames from the bolus on stay as they were."""
    cut = N_PRE - 3
    aif, res, truth, [(tissue, t_res, c)] = _aif_case()

    def shorter(s, r):
        s = s.replace(images=s.images[cut:], times_s=s.times_s[cut:])
        return s, r._replace(corrected=r.corrected[cut:], displacement=r.displacement[cut:],
                             qc=r.qc[cut:], reference_index=r.reference_index - cut)

    aif, res = shorter(aif, res)
    tissue, t_res = shorter(tissue, t_res)
    truth = truth[cut:]
    out = _follow(aif, res, [(tissue, t_res, c)])
    got = out.displacement[:, :, 24, 24]
    assert np.abs(res.displacement[:3, :, 24, 24] - truth[:3]).max() > 0.3
    assert np.abs(got[:3] - truth[:3]).max() < 0.05
    np.testing.assert_array_equal(out.displacement[3:], res.displacement[3:])
