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
