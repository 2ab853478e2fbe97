"""Slice levels of studies with two high-resolution slices, and named levels."""

from __future__ import annotations

import pytest

from perfmoco.config import ConfigError, QuantConfig, load_config, parse_slice_levels
from perfmoco.quant import quantify_study
from perfmoco.study import SliceRole, StudyError

phantom = pytest.importorskip("perfmoco.phantom")


@pytest.fixture(scope="module")
def still():
    return phantom.generate_phantom(seed=0, motion="none")


def _keep(ph, positions):
    """The study with only the high-resolution slices at ``positions`` (0 basal) and the AIF."""
    hr = [s for s in ph.study.slices if s.role is not SliceRole.AIF]
    aif = [s for s in ph.study.slices if s.role is SliceRole.AIF]
    return ph.study.replace_slices([hr[i] for i in positions] + aif)


def _aha_agreement(ph, r) -> float:
    ok, n = 0, 0
    for s, m in r.myocardium.items():
        both = m & (ph.truth[f"s{s}_labels"] == phantom.LABELS["lv_myocardium"])
        ok += int((r.aha[s][both] == ph.truth[f"s{s}_aha"][both]).sum())
        n += int(both.sum())
    return ok / n


def test_mid_and_apical_slices_are_told_from_basal_and_mid(still):
    """Without the basal slice the mid and apical slices get segments 7-16 (the apical
    LV cavity is ~40 % of the mid one's), with a message; without the apical slice,
    1-12 as before. AHA labels agree with the truth on >= 90 % of the pixels either way
    (taking mid and apical as basal and mid, as before, agrees on none)."""
    with pytest.warns(UserWarning, match="taken as mid and apical"):
        low = quantify_study(_keep(still, [1, 2]), config=QuantConfig())
    assert sorted({r["segment"] for r in low.segments}) == list(range(7, 17))
    assert _aha_agreement(still, low) >= 0.9
    high = quantify_study(_keep(still, [0, 1]), config=QuantConfig())
    assert sorted({r["segment"] for r in high.segments}) == list(range(1, 13))
    assert not any("taken as" in w for w in high.warnings)
    assert _aha_agreement(still, high) >= 0.9
    wrong = quantify_study(_keep(still, [1, 2]),
                           config=QuantConfig(slice_levels="basal, mid"))
    assert _aha_agreement(still, wrong) < 0.1


def test_named_levels_must_match_the_slices(still):
    r = quantify_study(_keep(still, [0, 1]), config=QuantConfig(slice_levels="mid,apical"))
    assert sorted({row["segment"] for row in r.segments}) == list(range(7, 17))
    with pytest.raises(StudyError, match="names 3 level.*2 high-resolution slice"):
        quantify_study(_keep(still, [0, 1]), config=QuantConfig(slice_levels="basal,mid,apical"))


def test_slice_levels_setting_is_checked():
    assert parse_slice_levels("auto") is None
    assert parse_slice_levels(["mid", "apical"]) == ("mid", "apical")  # a YAML list
    assert load_config(overrides={"quant.slice_levels": "Mid, Apical"}).quant.slice_levels
    with pytest.raises(ConfigError, match="quant.slice_levels must be 'auto' or levels"):
        load_config(overrides={"quant.slice_levels": "mid,apex"})
    assert parse_slice_levels("basal mid apical") == ("basal", "mid", "apical")


def test_levels_that_do_not_match_leave_the_corrected_images_and_say_why(still, caplog):
    """The whole product with levels named for three slices on a two-slice study: the
    corrected images stay, the study's messages say why there is no MBF map, and the log
    carries the reason without a traceback."""
    from perfmoco.config import load_config
    from perfmoco.pipeline import process_study

    cfg = load_config(overrides={"quant.slice_levels": "basal,mid,apical"})
    res = process_study(_keep(still, [0, 1]), config=cfg, method="none")
    assert res.quant is None
    assert any("names 3 level(s)" in m and "2 high-resolution slice" in m for m in res.messages)
    failed = [r for r in caplog.records if "quantification failed" in r.getMessage()]
    assert failed and all(r.exc_info is None for r in failed)
