"""The command line: help for every command, clear one-line errors, no tracebacks."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from perfmoco.cli import build_parser, main

COMMANDS = ["demo", "phantom", "correct", "replay", "quantify", "train", "serve", "evaluate"]


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_help(command, capsys):
    with pytest.raises(SystemExit) as exc:
        main([command, "--help"])
    assert exc.value.code == 0
    assert "usage: perfmoco" in capsys.readouterr().out


def test_parser_lists_all_commands():
    text = build_parser().format_help()
    for command in COMMANDS:
        assert command in text


def _err(capsys):
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return err


def test_correct_missing_file_is_one_clear_line(tmp_path, capsys):
    rc = main(["correct", str(tmp_path / "nope.npy"), "-o", str(tmp_path / "o.npy")])
    assert rc == 2
    assert "no such file" in _err(capsys)


def test_correct_too_short_series(tmp_path, capsys):
    np.save(tmp_path / "s.npy", np.ones((5, 32, 32), np.float32))
    rc = main(["correct", str(tmp_path / "s.npy"), "-o", str(tmp_path / "o.npy"),
               "--method", "none", "--pixel-spacing", "2"])
    assert rc == 2
    assert "5 dynamics, at least 10" in _err(capsys)


def test_phantom_with_a_larger_heart_and_a_bad_heart_scale(tmp_path, capsys):
    from perfmoco.io.files import read_study

    assert main(["phantom", str(tmp_path / "p.h5"), "--dynamics", "12",
                 "--heart-scale", "1.3"]) == 0
    truth = np.load(tmp_path / "p.truth.npz")
    assert read_study(tmp_path / "p.h5").highres[0].n_dynamics == 12
    rc = main(["phantom", str(tmp_path / "q.h5"), "--heart-scale", "3"])
    assert rc == 2
    assert "--heart-scale must be in [0.7, 1.5]" in _err(capsys)  # the option, not the argument
    assert not (tmp_path / "q.h5").exists()
    assert "s0_labels" in truth


def test_bad_setting_is_named(tmp_path, capsys):
    np.save(tmp_path / "s.npy", np.ones((12, 32, 32), np.float32))
    rc = main(["correct", str(tmp_path / "s.npy"), "-o", str(tmp_path / "o.npy"),
               "--set", "moco.colour=blue"])
    assert rc == 2
    assert "unknown setting moco.colour" in _err(capsys)


def test_console_script_runs(tmp_path):
    out = subprocess.run(
        [sys.executable, "-m", "perfmoco.cli", "--version"], capture_output=True, text=True
    )
    assert out.returncode == 0 and out.stdout.startswith("perfmoco ")


def test_quantify_bad_interpolation_is_one_clear_line(tmp_path, capsys):
    t = np.arange(30) * 0.6
    aif = np.clip(t - 3, 0, None) * np.exp(-np.clip(t - 3, 0, None) / 3)
    np.save(tmp_path / "a.npy", aif)
    np.save(tmp_path / "g.npy", np.broadcast_to(0.1 * aif[:, None, None], (30, 8, 8)).copy())
    args = ["quantify", "--gd", str(tmp_path / "g.npy"), "--aif", str(tmp_path / "a.npy"),
            "--dt", "0.6", "-o", str(tmp_path / "m.npy")]
    assert main([*args, "--interpolation", "0.5"]) == 2
    assert "interpolation must be 0" in _err(capsys)
    assert main([*args, "--interpolation", "2"]) == 0
    assert np.load(tmp_path / "m.npy").shape == (8, 8)
    assert main([*args, "--no-denoise"]) == 0


def test_correct_an_mrd_study_writes_every_slices_fields(tmp_path, capsys):
    """``--displacement`` of a study: one field per slice, and its PD frames' beside it."""
    from streaming_helpers import small_study

    from perfmoco.io.files import write_study

    study = small_study(n_dynamics=12)
    write_study(study, tmp_path / "s.h5")
    assert main(["correct", str(tmp_path / "s.h5"), "-o", str(tmp_path / "c.h5"),
                 "--method", "none", "--displacement", str(tmp_path / "d.npz")]) == 0
    with np.load(tmp_path / "d.npz") as d:
        for s in study.slices:
            assert d[s.name].shape == (s.n_dynamics, 2, *s.shape)
            if s.pd_images.shape[0]:
                assert d[f"{s.name} PD"].shape == (s.pd_images.shape[0], 2, *s.shape)
        assert any(k.endswith(" PD") for k in d.files)
