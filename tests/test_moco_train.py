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
