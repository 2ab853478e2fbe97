"""``moco.compile``: the compiled networks give the uncompiled result; failures fall back."""

import dataclasses
import logging

import numpy as np
import pytest
import torch

from perfmoco.moco.pipeline import COMPILE_BATCH, WEIGHTS_DIR, MotionCorrector
from perfmoco.phantom import generate_phantom

pytestmark = pytest.mark.skipif(not (WEIGHTS_DIR / "dense.pt").is_file(),
                                reason="no shipped weights")


@pytest.fixture(scope="module")
def series():
    # 37 dynamics + PD frames: calls of several batch sizes, none a multiple of the compiled one
    return generate_phantom(seed=9302, motion="breathing", n_dynamics=37).study.highres[1]


@pytest.fixture(scope="module")
def eager():
    return MotionCorrector.load(device="cpu")


def test_compiled_networks_give_the_uncompiled_correction(series, eager):
    compiled = MotionCorrector(eager.models, config=dataclasses.replace(eager.config,
                                                                        compile=True))
    assert compiled.compile_networks() > 0
    got, want = compiled.correct(series), eager.correct(series)
    assert not compiled._compile_failed and set(compiled._compiled) == set(eager.models)
    assert series.n_dynamics % COMPILE_BATCH != 0
    # float rounding differs between the kernels (and with the CPU's instruction set),
    # and the refinement iterates on it: a few pixels of one frame may move by ~0.05 px
    diff = np.abs(got.displacement - want.displacement)
    assert np.percentile(diff, 99.9) < 0.02 and diff.max() < 0.1
    np.testing.assert_array_equal(got.qc, want.qc)


def test_a_failing_compilation_falls_back_to_the_uncompiled_networks(series, eager, monkeypatch,
                                                                     caplog):
    def broken(*args, **kwargs):
        raise RuntimeError("no C++ compiler")

    monkeypatch.setattr(torch, "compile", broken)
    mc = MotionCorrector(eager.models, config=dataclasses.replace(eager.config, compile=True))
    with caplog.at_level(logging.WARNING):
        got = mc.correct(series)
    assert "running them uncompiled" in caplog.text
    np.testing.assert_array_equal(got.displacement, eager.correct(series).displacement)


def test_the_server_warm_up_compiles_the_corrector_its_studies_use():
    from perfmoco.config import load_config
    from perfmoco.pipeline import load_corrector
    from perfmoco.session import warm_up

    config = load_config(overrides={"moco.compile": True})
    assert warm_up(config) > 0
    mc = load_corrector(config)
    assert mc is load_corrector(config)  # one per process: compiled once
    assert set(mc._compiled) == {"affine1", "affine2", "dense"}
