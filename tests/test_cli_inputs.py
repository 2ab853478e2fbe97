"""Bad files, paths and settings a user gives: one clear line, no work lost or half-written."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch

from perfmoco.cli import main


def _err(capsys):
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return err


@pytest.fixture()
def series(tmp_path):
    path = tmp_path / "s.npy"
    np.save(path, np.random.default_rng(0).random((12, 32, 32), np.float32))
    return path


@pytest.fixture()
def curves(tmp_path):
    t = np.arange(30) * 0.6
    aif = np.clip(t - 3, 0, None) * np.exp(-np.clip(t - 3, 0, None) / 3)
    np.save(tmp_path / "a.npy", aif)
    np.save(tmp_path / "g.npy", np.broadcast_to(0.1 * aif[:, None, None], (30, 8, 8)).copy())
    return ["quantify", "--gd", str(tmp_path / "g.npy"), "--aif", str(tmp_path / "a.npy")]


def test_unreadable_inputs_are_named(tmp_path, capsys, curves):
    (tmp_path / "empty.npy").write_bytes(b"")
    assert main(["correct", str(tmp_path / "empty.npy"), "-o", str(tmp_path / "o.npy")]) == 2
    assert "empty or cut short" in _err(capsys)
    out = ["--dt", "0.6", "-o", str(tmp_path / "m.npy")]
    assert main([*curves[:2], str(tmp_path / "empty.npy"), *curves[3:], *out]) == 2
    assert "empty.npy: empty or cut short" in _err(capsys)
    np.savez(tmp_path / "two.npz", a=np.ones(3), b=np.ones(3))
    assert main([*curves[:2], str(tmp_path / "two.npz"), *curves[3:], *out]) == 2
    assert "an .npz archive" in _err(capsys)
    (tmp_path / "folder").mkdir()
    assert main(["correct", str(tmp_path / "folder"), "-o", str(tmp_path / "o.npy")]) == 2
    assert "is a folder, not a file" in _err(capsys)
    (tmp_path / "text.npy").write_text("not an array\n" * 20)
    assert main(["correct", str(tmp_path / "text.npy"), "-o", str(tmp_path / "o.npy")]) == 2
    err = _err(capsys)
    assert "not a numeric .npy array" in err and "allow_pickle" not in err
    assert not (tmp_path / "m.npy").exists() and not (tmp_path / "o.npy").exists()


def test_output_paths_are_checked_before_the_work(tmp_path, capsys, series):
    base = ["correct", str(series), "--method", "none", "--pixel-spacing", "2"]
    assert main([*base, "-o", str(tmp_path / "o.txt")]) == 2
    assert "expected a .npy / .nii / .nii.gz / .h5 / .hdf5 / .mrd file name" in _err(capsys)
    (tmp_path / "taken").mkdir()
    assert main([*base, "-o", str(tmp_path / "taken")]) == 2
    assert "taken" in _err(capsys)
    assert main([*base, "-o", str(tmp_path / "o.npy"), "--displacement",
                 str(tmp_path / "d.txt")]) == 2
    assert "--displacement" in _err(capsys)
    assert not (tmp_path / "o.npy").exists()
    assert main([*base, "-o", str(tmp_path / "new" / "o.npy"), "--displacement",
                 str(tmp_path / "d.npy")]) == 0  # a missing folder is made
    assert (tmp_path / "new" / "o.npy").is_file() and (tmp_path / "d.npy").is_file()
    assert main(["phantom", str(tmp_path / "p.npy"), "--dynamics", "12"]) == 2
    assert "expected a .h5" in _err(capsys)
    for option, value in (("--dynamics", "3"), ("--heart-scale", "9"), ("--seed", "-5")):
        assert main(["phantom", str(tmp_path / "p.h5"), option, value]) == 2
        err = _err(capsys)
        assert f"error: {option} must be" in err and "None" not in err


@pytest.mark.parametrize("spacing", ["0", "1e-9", "500"])
def test_a_pixel_spacing_slip_is_refused(tmp_path, capsys, series, spacing):
    rc = main(["correct", str(series), "-o", str(tmp_path / "o.npy"), "--method", "none",
               f"--pixel-spacing={spacing}"])
    assert rc == 2
    assert "pixel spacing" in _err(capsys)


def test_quantify_refuses_a_slipped_time_step_and_a_flat_aif(tmp_path, capsys, curves):
    out = ["-o", str(tmp_path / "m.npy")]
    for dt in ("1e-6", "0.001", "100"):
        assert main([*curves, "--dt", dt, *out]) == 2
        assert "expected the curves' time step" in _err(capsys)
    np.save(tmp_path / "flat.npy", np.full(30, 2.0))
    assert main([*curves[:3], "--aif", str(tmp_path / "flat.npy"), "--dt", "0.6", *out]) == 2
    assert "does not rise" in _err(capsys)
    assert main([*curves, "--dt", "0.6", "-o", str(tmp_path / "m.txt")]) == 2
    assert "expected a .npy file name" in _err(capsys)
    assert not (tmp_path / "m.npy").exists()
    assert main([*curves, "--dt", "0.6", *out]) == 0  # the same curves, right: fitted


@pytest.mark.parametrize("setting, words", [
    ("moco.device=gpu", "moco.device must be"),
    ("server.method=foo", "server.method"),
])
def test_settings_of_a_few_words_are_checked_on_loading(tmp_path, capsys, series, setting,
                                                        words):
    rc = main(["correct", str(series), "-o", str(tmp_path / "o.npy"), "--set", setting])
    assert rc == 2
    assert words in _err(capsys)


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a CUDA GPU")
def test_a_gpu_asked_for_where_there_is_none_is_one_line(tmp_path, series):
    """As a user runs it: no traceback on the console, the reason named, originals kept."""
    out = subprocess.run(
        [sys.executable, "-m", "perfmoco.cli", "correct", str(series), "-o",
         str(tmp_path / "o.npy"), "--pixel-spacing", "2", "--set", "moco.device=cuda"],
        capture_output=True, text=True, timeout=300,
    )
    assert out.returncode == 2
    assert "Traceback" not in out.stderr
    assert "no CUDA GPU" in out.stderr.splitlines()[-1]
    # nothing is written, and the line says so (not the pipeline's "originals kept")
    assert "nothing written to" in out.stderr and "originals kept" not in out.stderr
    assert not (tmp_path / "o.npy").exists()


def test_serve_port_out_of_range(capsys):
    assert main(["serve", "--port", "99999"]) == 2
    assert "--port must be 0-65535" in _err(capsys)


@pytest.mark.parametrize("text, words", [
    ("stage: [unclosed", "not a readable YAML file"),
    ("- stage\n- affine1\n", "names its stage"),
    ("", "names its stage"),
    ("stage: affine1\nsteps: many\n", "steps must be int"),
    ("stage: affine1\nlr: fast\n", "lr must be float"),
    ("stage: affine1\nval_every: 0\n", "val_every must be >= 1"),
    ("stage: affine1\nbatch_size: -3\n", "batch_size must be >= 1"),
    ("stage: affine1\nlr: -1\n", "lr must be > 0"),
    ("stage: affine1\nspec: {channel: 8}\n", "unknown network setting spec.channel"),
    ("stage: affine1\ndata: {source: folder}\n", "data.folder is not set"),
])
def test_bad_training_configs_stop_before_any_work(tmp_path, capsys, text, words):
    cfg = tmp_path / "t.yaml"
    cfg.write_text(text)
    assert main(["train", "--config", str(cfg), "--out", str(tmp_path / "run")]) == 2
    assert words in _err(capsys)
    assert not (tmp_path / "run").exists()


def test_training_options_that_cannot_work(tmp_path, capsys):
    cfg = tmp_path / "t.yaml"
    cfg.write_text("stage: affine1\n")
    assert main(["train", "--config", str(cfg), "--max-steps", "-1"]) == 2
    assert "--max-steps must be at least 1" in _err(capsys)
    assert main(["train", "--config", str(cfg), "--out", str(tmp_path / "run"),
                 "--resume"]) == 2
    assert "no checkpoint" in _err(capsys)


def test_replay_says_when_the_study_was_not_processed(tmp_path, capsys):
    study = tmp_path / "p.h5"
    assert main(["phantom", str(study), "--dynamics", "12"]) == 0
    capsys.readouterr()
    out = tmp_path / "r.h5"
    assert main(["replay", str(study), "-o", str(out), "--method", "none",
                 "--set", "mrd.min_dynamics=40"]) == 1
    captured = capsys.readouterr()
    assert "at least 40" in captured.out and "not processed" in captured.err
    assert out.is_file()  # the images, passed back
    (tmp_path / "taken.h5").mkdir()
    assert main(["replay", str(study), "-o", str(tmp_path / "taken.h5")]) == 2
    assert "is a folder" in _err(capsys)
    assert not list(tmp_path.glob("*.part"))
    assert main(["replay", str(study), "-o", str(out), "--server", "127.0.0.1:9",
                 "--config", str(tmp_path / "c.yaml")]) == 2
    assert "--config is read here, not by the server" in _err(capsys)
    # the output named as the input: refused before anything is written over it
    size = study.stat().st_size
    assert main(["replay", str(study), "-o", str(tmp_path / "." / "p.h5")]) == 2
    assert "is the input" in _err(capsys)
    assert main(["correct", str(study), "-o", str(study), "--method", "none"]) == 2
    assert "is the input" in _err(capsys)
    assert study.stat().st_size == size
    # a server that is not there: which one, in one line
    import socket

    with socket.socket() as s:  # a loopback port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    assert main(["replay", str(study), "-o", str(out), "--server", f"127.0.0.1:{port}"]) == 2
    assert f"cannot reach the MRD server at 127.0.0.1:{port}" in _err(capsys)


def test_report_of_an_unreadable_file_is_one_line(tmp_path, capsys):
    page = tmp_path / "text.h5"
    page.write_text("not HDF5")
    assert main(["report", str(page)]) == 2
    err = _err(capsys)
    assert err.count(str(page)) == 1 and "not a readable HDF5 file" in err


def test_verbose_after_the_command_and_a_binary_config(tmp_path, capsys, series):
    from perfmoco.cli import build_parser

    assert build_parser().parse_args(["correct", "x.npy", "-o", "y.npy", "-v"]).verbose
    assert not build_parser().parse_args(["correct", "x.npy", "-o", "y.npy"]).verbose
    cfg = tmp_path / "c.yaml"
    cfg.write_bytes(bytes(range(256)))
    assert main(["correct", str(series), "-o", str(tmp_path / "o.npy"), "--config",
                 str(cfg)]) == 2
    assert f"{cfg}: not a text (YAML) file" in _err(capsys)


def test_batch_over_a_folder_without_studies(tmp_path, capsys):
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "notes.txt").write_text("no study here")
    assert main(["batch", str(tmp_path / "in"), "-o", str(tmp_path / "out")]) == 2
    assert "no study files" in _err(capsys)
    assert main(["batch", str(tmp_path / "in" / "notes.txt"), "-o", str(tmp_path / "o")]) == 2
    assert "is a file; give the folder that holds the studies" in _err(capsys)


def test_result_folders_are_checked_before_the_work(tmp_path, capsys):
    (tmp_path / "file").write_text("x")
    assert main(["evaluate", "--studies", "1", "--methods", "none", "--out",
                 str(tmp_path / "file")]) == 2
    assert "is a file; give a folder" in _err(capsys)
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a.npy").write_bytes(b"")  # the input folder is checked first
    assert main(["batch", str(tmp_path / "in"), "-o", str(tmp_path / "file")]) == 2
    assert "is a file; give a folder" in _err(capsys)


def test_a_small_matrix_read_for_its_interpolation_warns_of_nothing(tmp_path, curves):
    import warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert main([*curves, "--dt", "0.6", "--interpolation", "0", "-o",
                     str(tmp_path / "m.npy")]) == 0
    assert not [w for w in caught if issubclass(w.category, RuntimeWarning)]


def test_quantify_takes_curves_as_sites_save_them(tmp_path, capsys, curves):
    """A boolean mask, NaN outside it (a masked background), an AIF saved as a column."""
    out = ["--dt", "0.6", "-o", str(tmp_path / "m.npy")]
    g = np.load(tmp_path / "g.npy")
    mask = np.zeros((8, 8), bool)
    mask[2:6, 2:6] = True
    g[:, ~mask] = np.nan
    np.save(tmp_path / "g.npy", g)
    np.save(tmp_path / "mask.npy", mask)
    np.save(tmp_path / "a.npy", np.load(tmp_path / "a.npy")[:, None])
    assert main([*curves, "--mask", str(tmp_path / "mask.npy"), *out]) == 0, _err(capsys)
    mbf = np.load(tmp_path / "m.npy")
    assert np.isfinite(mbf).all() and (mbf[mask] > 0).all() and (mbf[~mask] == 0).all()


def test_quantify_names_curves_that_cannot_be_right(tmp_path, capsys, curves):
    """Curves that keep their pre-contrast level (the fit would read it as flow), tissue
    stored with time last, an empty mask: one line each, in the command's own terms."""
    out = ["--dt", "0.6", "-o", str(tmp_path / "m.npy")]
    g, a = np.load(tmp_path / "g.npy"), np.load(tmp_path / "a.npy")
    np.save(tmp_path / "g_off.npy", g + 0.3 * g.max())
    assert main([curves[0], "--gd", str(tmp_path / "g_off.npy"), *curves[3:], *out]) == 2
    assert "--gd: the mean of the pixels fitted starts at" in _err(capsys)
    np.save(tmp_path / "a_off.npy", a + 0.2 * a.max())
    assert main([*curves[:3], "--aif", str(tmp_path / "a_off.npy"), *out]) == 2
    assert "--aif: the AIF starts at" in _err(capsys)
    np.save(tmp_path / "g_last.npy", np.moveaxis(g, 0, -1))
    assert main([curves[0], "--gd", str(tmp_path / "g_last.npy"), *curves[3:], *out]) == 2
    assert "--gd looks like (Y, X, T)" in _err(capsys)
    np.save(tmp_path / "none.npy", np.zeros((8, 8), bool))
    assert main([*curves, "--mask", str(tmp_path / "none.npy"), *out]) == 2
    assert "--mask selects no pixel" in _err(capsys)
    assert not (tmp_path / "m.npy").exists()
