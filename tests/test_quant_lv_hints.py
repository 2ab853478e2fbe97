"""The MBF step's LV search checked against where the motion correction found the LV."""

from __future__ import annotations

import numpy as np
import pytest

from perfmoco.config import QuantConfig
from perfmoco.phantom import LABELS, generate_phantom


@pytest.fixture(scope="module")
def still():
    return generate_phantom(seed=9982, motion="none", vendor="a")


def _true_lv(ph, k):
    return tuple(np.argwhere(ph.truth[f"s{k}_labels"] == LABELS["lv_blood"]).mean(axis=0))


def test_two_slices_taking_the_aorta_are_searched_again_near_the_corrections_lv(
        still, monkeypatch):
    """Two of three slices wrong: the stack check has no majority to go by (12642 a,
    breathing, DL correction: two slices' LV found in the chest wall and the air); where
    the correction found each LV on the uncorrected series settles it."""
    import perfmoco.quant.anatomy as quant_anatomy
    from perfmoco.anatomy import find_blood_pools
    from perfmoco.quant import quantify_study

    ph = still
    wrong = {ph.study.highres[k].images.ctypes.data: k for k in (1, 2)}
    aorta = {k: np.argwhere(ph.truth[f"s{k}_labels"] == LABELS["aorta"]).mean(axis=0)
             for k in (1, 2)}

    def own_search_takes_the_aorta(images, *, near_yx=None, **kw):
        k = wrong.get(images.ctypes.data)
        if k is not None and near_yx is None:
            kw["near_mm"] = 8.0
            return find_blood_pools(images, near_yx=aorta[k], **kw)
        return find_blood_pools(images, near_yx=near_yx, **kw)

    monkeypatch.setattr(quant_anatomy, "find_blood_pools", own_search_takes_the_aorta)
    # the stored arrays themselves reach the search (told apart by their memory above)
    monkeypatch.setattr(quant_anatomy, "flattened", lambda s: s.images)

    def recall(**kw):
        q = quantify_study(ph.study, config=QuantConfig(), **kw)
        return [(q.myocardium[k] & ph.truth[f"s{k}_myo_masks"][0]).sum()
                / ph.truth[f"s{k}_myo_masks"][0].sum() if k in q.myocardium else 0.0
                for k in (0, 1, 2)], q.warnings

    with pytest.warns(UserWarning):
        before, _ = recall()
    assert max(before[1:]) < 0.3  # the failure this is for: the aorta's "wall"
    hints = {k: _true_lv(ph, k) for k in (0, 1, 2)}
    with pytest.warns(UserWarning, match="where the motion correction found it"):
        after, msgs = recall(lv_hints=hints)
    assert min(after) > 0.85
    named = [m.split(":")[0] for m in msgs if "where the motion correction found it" in m]
    assert named == ["slice 1 (highres)", "slice 2 (highres)"]
    assert not any("other slices' LV" in m for m in msgs)  # checked first: nothing left
    # hints far from any pool change nothing found near them
    with pytest.warns(UserWarning):
        same, _ = recall(lv_hints={k: (2.0, 2.0) for k in (1, 2)})
    assert same == before


def test_process_study_hands_the_corrections_lv_to_the_quantification(still, monkeypatch):
    import perfmoco.pipeline as pipeline
    import perfmoco.quant as quant
    from perfmoco.moco.pipeline import correct_series

    class Still:  # the correction's own work is not what is tested here
        def correct(self, series, *, lv=None):
            return correct_series(series, method="none")

    seen = {}
    real = quant.quantify_study

    def recorder(study, **kw):
        seen.update(kw.get("lv_hints") or {})
        return real(study, **kw)

    monkeypatch.setattr(pipeline, "load_corrector", lambda config: Still())
    monkeypatch.setattr(quant, "quantify_study", recorder)
    result = pipeline.process_study(still.study)
    assert result.quant is not None
    assert sorted(seen) == [0, 1, 2]  # the high-resolution slices
    for k, yx in seen.items():
        sy, sx = still.study.highres[k].pixel_spacing_mm
        ty, tx = _true_lv(still, k)
        assert np.hypot((yx[0] - ty) * sy, (yx[1] - tx) * sx) < 8.0


def test_lv_hints_move_the_corrections_lv_into_the_corrected_frame(small_study):
    """The corrected frame at p shows the raw frame at p + d(p) (pull-back): an LV found
    at c in the raw frame of its peak lies at c - d there; other slices' fields differ."""
    from perfmoco.moco.checks import identity_result
    from perfmoco.moco.preprocess import LvLocation
    from perfmoco.pipeline import StudyResult

    moco, locs = [], []
    for s in small_study.slices:
        r = identity_result(s)
        d = np.zeros_like(r.displacement)
        d[3, 0], d[3, 1] = 6.0 + s.slice_index, -2.0  # only the peak frame moved
        moco.append(r._replace(displacement=d))
        locs.append(LvLocation((10.0, 12.0), 3))
    moco[1] = None  # a failed correction: no hint
    hints = StudyResult(small_study, moco, lv_locations=locs).lv_hints()
    assert sorted(hints) == [0, 2]  # high-resolution slices only, corrected ones only
    assert hints[0] == pytest.approx((4.0, 14.0))
    assert hints[2] == pytest.approx((2.0, 14.0))
    assert StudyResult(small_study, moco).lv_hints() == {}  # not located: none
