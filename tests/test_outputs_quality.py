"""The MBF maps' fit quality sent beside them (``Quality_Map``) and read back from files."""

from __future__ import annotations

import dataclasses
import warnings

import numpy as np
import pytest

from perfmoco.config import MrdConfig, QuantConfig
from perfmoco.io.files import write_mrd_images
from perfmoco.io.mrd import study_header
from perfmoco.io.outputs import QUALITY_SCALE, result_to_images
from perfmoco.phantom import LABELS, generate_phantom
from perfmoco.pipeline import StudyResult
from perfmoco.quant import quantify_study
from perfmoco.report.load import load_result


def _role(img) -> str:
    return str(img.meta.get("GADGETRON_DataRole", ""))


@pytest.fixture(scope="module")
def spoiled():
    """A motion-free study whose mid slice has a patch of myocardium without perfusion
    signal (random values: a flow artefact, a signal void), and its quantification."""
    ph = generate_phantom(seed=2, motion="none")
    myo = ph.truth["s1_labels"] == LABELS["lv_myocardium"]
    ys, xs = np.nonzero(myo)
    cy, cx = ys[np.argmin(xs)], xs.min()  # the wall's leftmost pixel: a 7 x 7 patch there
    patch = np.zeros_like(myo)
    patch[cy - 3:cy + 4, cx:cx + 7] = True
    patch &= myo
    s1 = next(s for s in ph.study.highres if s.slice_index == 1)
    images = s1.images.copy()
    rng = np.random.default_rng(0)
    lo, hi = np.percentile(images[:, myo], [5, 95])
    images[:, patch] = rng.uniform(lo, hi, (images.shape[0], int(patch.sum())))
    study = ph.study.replace_slices([s1.replace(images=images) if s is s1 else s
                                     for s in ph.study.slices])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        quant = quantify_study(study, config=QuantConfig())
    return study, quant, patch


def test_the_quality_map_shows_where_the_mbf_map_is_flagged(spoiled, tmp_path):
    study, quant, patch = spoiled
    result = StudyResult(study=study, moco=[None] * len(study.slices), quant=quant)
    images = result_to_images(result, config=MrdConfig())
    maps = {int(im.slice): im for im in images if _role(im) == "Flow_Map"}
    quality = {int(im.slice): im for im in images if _role(im) == "Quality_Map"}
    assert sorted(quality) == sorted(maps) == [0, 1, 2]
    for k, q in quality.items():
        head, ref = q.getHead(), maps[k].getHead()
        assert head.image_series_index == MrdConfig().quality_series_index
        assert tuple(head.matrix_size) == tuple(ref.matrix_size)
        for name in ("position", "read_dir", "phase_dir", "slice_dir", "field_of_view"):
            assert tuple(getattr(head, name)) == pytest.approx(tuple(getattr(ref, name)))
        assert "SaturationTime_ms" not in maps[k].meta  # a frame's own, not the map's
    # the spoiled patch reads 0 (flagged) on its quality map, the rest of the wall good
    q1 = np.asarray(quality[1].data)[0, 0]
    myo = quant.myocardium[1]
    assert np.mean(q1[patch & myo] == 0) > 0.8
    rest = myo & ~patch
    assert np.mean(q1[rest] >= 100 * QuantConfig().r2_min) > 0.9
    assert np.all(q1[~myo] == 0) and q1.max() <= QUALITY_SCALE
    np.testing.assert_array_equal(q1 == 0, ~myo | quant.flagged[1])

    # a result file read back knows which pixels were flagged (the report greys them)
    path = tmp_path / "result.h5"
    write_mrd_images(path, study_header(study), images)
    back = load_result(path)
    for k in (0, 1, 2):
        want = quant.flagged[k] & (np.nan_to_num(quant.mbf_maps[k]) * 100 != 0)
        np.testing.assert_array_equal(back.quant.flagged[k], want)


def test_the_quality_map_can_be_left_out(spoiled):
    study, quant, _ = spoiled
    result = StudyResult(study=study, moco=[None] * len(study.slices), quant=quant)
    config = dataclasses.replace(MrdConfig(), quality_series_index=-1)
    images = result_to_images(result, config=config)
    assert not any(_role(im) == "Quality_Map" for im in images)
    assert sum(_role(im) == "Flow_Map" for im in images) == 3


def test_a_message_naming_several_slices_goes_on_each_of_their_maps():
    from perfmoco.io.outputs import _concerns

    many = "slice 0 (highres), slice 2 (highres): no PD frames found by brightness"
    assert [_concerns(many, k, 3) for k in (0, 1, 2)] == [True, False, True]
    assert _concerns("slice 3 (aif): saturation time 100 ms is not shorter", 1, 3)
    assert not _concerns("slice 1 (highres): LV found 49 mm from the other slices' LV", 2, 3)
    assert _concerns("no PD frames in the study", 2, 3)
