from __future__ import annotations

import pytest

from perfmoco.config import ConfigError, load_config


def test_packaged_defaults_load_and_match_the_dataclasses():
    cfg = load_config()
    assert cfg.server.host == "127.0.0.1"
    assert cfg.moco.affine_crop == 128 and cfg.moco.nonrigid_crop == 96


def test_overrides_are_typed_and_checked(tmp_path):
    cfg = load_config(overrides={"moco.device": "cpu", "quant.hematocrit": "0.4",
                                 "quant.exclude_qc_frames": "false", "server.port": "9100"})
    assert cfg.moco.device == "cpu" and cfg.quant.hematocrit == 0.4
    assert cfg.quant.exclude_qc_frames is False and cfg.server.port == 9100
    with pytest.raises(ConfigError, match="unknown setting moco.nope"):
        load_config(overrides={"moco.nope": 1})
    with pytest.raises(ConfigError, match="server.port must be a number"):
        load_config(overrides={"server.port": "abc"})
    with pytest.raises(ConfigError, match=r"moco.resample must be one of \['bicubic'"):
        load_config(overrides={"moco.resample": "sinc"})
    with pytest.raises(ConfigError, match="unknown configuration section 'x'"):
        load_config(overrides={"x.y": 1})
    p = tmp_path / "c.yaml"
    p.write_text("quant: [1, 2")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(p)
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "missing.yaml")


@pytest.mark.parametrize("setting, value, message", [
    ("moco.baseline_radius_mm", "0", r"moco.baseline_radius_mm must be > 0, got 0.0"),
    ("moco.aif_follow_spread_mm", "-1", r"moco.aif_follow_spread_mm must be > 0"),
    ("moco.refine_window_mm", "-5", r"moco.refine_window_mm must be > 0"),
    ("moco.refine_extra_rounds", "-1", r"moco.refine_extra_rounds must be >= 0"),
    ("moco.reference_from_end", "0", r"moco.reference_from_end must be >= 1"),
    ("moco.dilation_max", "1", r"moco.dilation_max must be in \(0, 1\)"),
    ("moco.qc_threshold", "nan", r"moco.qc_threshold must be in \(0, 2\]"),
    ("quant.hematocrit", "0.95", r"quant.hematocrit must be in \[0, 0.9\)"),
    ("quant.t1_blood_s", "0", r"quant.t1_blood_s must be > 0"),
    ("quant.r2_min", "1.5", r"quant.r2_min must be <= 1"),
    ("quant.slice_delay_window_s", "-0.1", r"quant.slice_delay_window_s must be >= 0"),
    ("quant.segment_shape_range", "0.5", r"quant.segment_shape_range must be 0 \(off\) or >= 1"),
    ("quant.saturation_efficiency_aif", "1.2",
     r"quant.saturation_efficiency_aif must be in \[0, 1\]"),
    ("quant.saturation_efficiency_highres", "-0.1",
     r"quant.saturation_efficiency_highres must be in \[0, 1\]"),
    ("server.port", "70000", r"server.port must be in \[0, 65535\]"),
    ("server.workers", "0", r"server.workers must be >= 1"),
    ("mrd.min_dynamics", "2", r"mrd.min_dynamics must be >= 3"),
    ("mrd.pd_frames", "-2", r"mrd.pd_frames must be >= -1"),
    ("moco.first_pass_rate", "1.5", r"moco.first_pass_rate must be"),
    ("mrd.quality_series_index", "-3", r"mrd.quality_series_index must be >= -1"),
])
def test_out_of_range_settings_are_named(setting, value, message):
    with pytest.raises(ConfigError, match=message):
        load_config(overrides={setting: value})


def test_in_range_edges_are_accepted():
    cfg = load_config(overrides={"quant.hematocrit": "0", "server.port": "0",
                                 "moco.refine_neighbour_mm": "0", "quant.r2_min": "-1",
                                 "moco.qc_threshold": "2"})
    assert cfg.quant.hematocrit == 0 and cfg.server.port == 0
    assert cfg.moco.refine_neighbour_mm == 0 and cfg.moco.qc_threshold == 2


def test_a_measured_efficiency_of_1_counts_as_set():
    """0 (the default) is "not measured": the ideal 1 is used but the studies that rest on
    it are marked; a site's measured 1.0 (ideal saturation) is a setting like any other."""
    from perfmoco.config import QuantConfig

    unset = load_config().quant
    assert unset.no_pd_efficiency(aif=True) == ("quant.saturation_efficiency_aif", 1.0)
    assert not unset.no_pd_efficiency_set(aif=True) and not unset.no_pd_efficiency_set(aif=False)
    one = load_config(overrides={"quant.saturation_efficiency_highres": "1.0"}).quant
    assert one.no_pd_efficiency_set(aif=False) and not one.no_pd_efficiency_set(aif=True)
    assert one.no_pd_efficiency(aif=False)[1] == 1.0
    q = QuantConfig(saturation_efficiency_aif=0.85)
    assert q.no_pd_efficiency(aif=True)[1] == 0.85 and q.no_pd_efficiency_set(aif=True)


def test_native_t1s_follow_the_scans_field_strength():
    from perfmoco.config import T1_AT_1P5T_S, QuantConfig

    q = QuantConfig()
    same, note = q.for_field_strength(3.0)
    assert same is q and note is None
    assert q.for_field_strength(None) == (q, None)
    at15, note = q.for_field_strength(1.5)
    assert (at15.t1_blood_s, at15.t1_myocardium_s) == T1_AT_1P5T_S and "1.5 T native" in note
    own = QuantConfig(t1_blood_s=1.6, t1_myocardium_s=1.1)  # a site's own values are kept
    assert own.for_field_strength(1.5) == (own, None)
    one, note = QuantConfig(t1_blood_s=1.6).for_field_strength(1.5)  # the other one moves
    assert (one.t1_blood_s, one.t1_myocardium_s) == (1.6, T1_AT_1P5T_S[1])
    assert "quant.t1_myocardium_s 1.03 s" in note and "t1_blood_s" not in note
    kept, note = q.for_field_strength(0.55)
    assert kept is q and "0.55 T scan" in note and "quant.t1_blood_s" in note
