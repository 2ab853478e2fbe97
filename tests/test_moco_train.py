"""``perfmoco train``: checkpoints, validation history, resume and fine-tuning (tiny runs)."""

import json

import pytest
import torch
import yaml

from perfmoco.moco import networks
from perfmoco.moco.pipeline import WEIGHTS_DIR
from perfmoco.moco.train import train_main


def _config(tmp_path, **over):
    cfg = {
        "stage": "affine1",
        "out_dir": str(tmp_path / "run"),
        "steps": 4,
        "batch_size": 2,
        "val_every": 2,
        "ckpt_every": 2,
        "threads": 1,
        "data": {"source": "synthetic", "train_seeds": [0, 2], "val_seeds": [50, 51],
                 "cache_dir": str(tmp_path / "cache"), "workers": 1},
    }
    cfg.update(over)
    path = tmp_path / f"{cfg['stage']}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_checkpoints_history_and_resume(tmp_path):
    best = train_main(_config(tmp_path))
    net, meta = networks.load(best)
    info = meta["train_info"]
    assert info["config"]["stage"] == "affine1" and info["config"]["steps"] == 4
    assert info["step"] in (2, 4) and "val_loss" in info["metrics"]
    # the steps' own time (what bench_gpu.py divides by the steps), within the whole run's
    assert 0 < info["step_seconds"] < info["train_seconds"]
    hist = json.loads((tmp_path / "run" / "affine1_history.json").read_text())
    assert [h["step"] for h in hist] == [2, 4]
    # resume: continues from step 4 to 6 with the saved optimiser state
    train_main(_config(tmp_path, steps=6), resume=True)
    hist = json.loads((tmp_path / "run" / "affine1_history.json").read_text())
    assert [h["step"] for h in hist] == [2, 4, 6]


@pytest.mark.skipif(not (WEIGHTS_DIR / "affine1.pt").is_file(), reason="no shipped weights")
def test_init_from_shipped_weights(tmp_path):
    path = train_main(_config(tmp_path, steps=0, init="shipped"))
    got, _ = networks.load(path)
    shipped, _ = networks.load(WEIGHTS_DIR / "affine1.pt")
    for a, b in zip(got.state_dict().values(), shipped.state_dict().values()):
        assert torch.equal(a, b)


def test_init_missing_file_is_clear(tmp_path):
    with pytest.raises(FileNotFoundError, match="init weights"):
        train_main(_config(tmp_path, init=str(tmp_path / "nope.pt")))


def test_a_rate_written_without_a_dot_is_a_number(tmp_path):
    """YAML reads 2e-4 as text; the setting takes it as the number it says."""
    from perfmoco.moco.train import load_train_config

    path = tmp_path / "t.yaml"
    path.write_text("stage: affine1\nlr: 2e-4\n")
    assert load_train_config(path)["lr"] == 2e-4


def test_ctrl_c_keeps_the_steps_done_and_resume_continues(tmp_path, monkeypatch):
    import perfmoco.moco.train as train

    real, calls = train._step_loss, []

    def interrupted(*a, **k):
        calls.append(a[5])  # train: a step, not a validation
        if sum(calls) == 4:  # during the fourth step
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr(train, "_step_loss", interrupted)
    with pytest.raises(KeyboardInterrupt):
        train_main(_config(tmp_path, steps=6, ckpt_every=100, val_every=2))
    state = torch.load(tmp_path / "run" / "affine1_state.pt", weights_only=False)
    assert state["step"] == 3  # three steps done, kept (the checkpoints were due at 6)
    assert (tmp_path / "run" / "affine1_last.pt").is_file()
    monkeypatch.setattr(train, "_step_loss", real)
    train_main(_config(tmp_path, steps=6, ckpt_every=100, val_every=2), resume=True)
    hist = json.loads((tmp_path / "run" / "affine1_history.json").read_text())
    assert [h["step"] for h in hist] == [2, 4, 6]


def test_a_site_folder_of_one_file_or_hdf5_studies(tmp_path):
    from perfmoco.io.files import write_study
    from perfmoco.phantom import generate_phantom

    folder = tmp_path / "site"
    folder.mkdir()
    write_study(generate_phantom(seed=12528, n_dynamics=12).study, folder / "a.hdf5")
    data = {"source": "folder", "folder": str(folder), "cache_dir": ""}
    with pytest.raises(ValueError, match="1 study / series file.*at least 2"):
        train_main(_config(tmp_path, data=data))
    write_study(generate_phantom(seed=12529, n_dynamics=12).study, folder / "b.hdf5")
    assert train_main(_config(tmp_path, data=data, steps=1, val_every=1)).is_file()


def test_weights_filed_under_another_stage_are_refused(tmp_path):
    import shutil

    from perfmoco.moco.pipeline import MotionCorrector

    if not (WEIGHTS_DIR / "dense.pt").is_file():
        pytest.skip("no shipped weights")
    for s in networks.STAGES:
        shutil.copy(WEIGHTS_DIR / f"{s}.pt", tmp_path / f"{s}.pt")
    shutil.copy(WEIGHTS_DIR / "dense.pt", tmp_path / "affine1.pt")
    with pytest.raises(ValueError, match="affine1.pt holds the dense stage's weights"):
        MotionCorrector.load(tmp_path)


@pytest.mark.skipif(not (WEIGHTS_DIR / "affine1.pt").is_file(), reason="no shipped weights")
def test_a_later_stage_on_the_shipped_earlier_ones(tmp_path):
    """A site retraining only affine2 takes the shipped affine1 for its inputs."""
    path = train_main(_config(tmp_path, stage="affine2", previous_dir="shipped", steps=1,
                              val_every=1))
    assert networks.load(path)[1]["stage"] == "affine2"


def test_retraining_an_earlier_stage_says_the_later_ones_are_stale(tmp_path, caplog):
    import logging

    run = tmp_path / "run"
    run.mkdir()
    networks.save(run / "dense.pt", networks.RegNet(networks.default_spec("dense")),
                  stage="dense")
    with caplog.at_level(logging.WARNING, logger="perfmoco.moco.train"):
        train_main(_config(tmp_path, steps=1, val_every=1))
    assert "dense.pt, trained on the affine1 this run replaces" in caplog.text
