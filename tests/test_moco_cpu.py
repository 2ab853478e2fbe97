"""Torch threads from the cores other processes leave free (perfmoco.moco.cpu)."""

import os

import pytest

from perfmoco.moco import cpu


def _stat_sequence(*lines):
    it = iter(lines)
    return lambda _cpus: next(it)


def _no_own_use():
    return 0.0


def test_free_cores_counts_the_others_load_on_this_process_cores():
    cpus = os.sched_getaffinity(0)
    n = len(cpus)
    # over the window: 10 ticks per core, a quarter of them idle
    busy = cpu.free_cores(0.0, stat=_stat_sequence([(1000, 500)] * n, [(1010, 502.5)] * n),
                          own=_no_own_use)
    assert busy == pytest.approx(0.25 * n)
    idle = cpu.free_cores(0.0, stat=_stat_sequence([(0, 0)] * n, [(10, 10)] * n),
                          own=_no_own_use)
    assert idle == pytest.approx(n)
    assert cpu.free_cores(0.0, stat=_stat_sequence([(5, 0)] * n, [(5, 0)] * n)) is None
    # this process's own threads' use of the window counts as free
    clock = iter([0.0, 1.0])
    mine = cpu.free_cores(0.01, stat=_stat_sequence([(0, 0)] * n, [(10, 0)] * n),
                          own=lambda: next(clock) * 0.01)
    assert mine == pytest.approx(min(n, 1.0), abs=0.3)
    assert cpu.free_cores(0.0, stat=lambda _c: (_ for _ in ()).throw(OSError("no /proc"))) is None


def test_only_this_process_cores_are_read(tmp_path):
    """A process pinned to two idle cores of a busy host has two free cores."""
    stat = tmp_path / "stat"
    lines = ["cpu  100 0 0 900 0 0 0 0 0 0"] + [
        f"cpu{k} 10 0 0 90 0 0 0 0 0 0" for k in range(4)]
    stat.write_text("\n".join(lines) + "\nintr 1 2 3\n")
    assert cpu._stat_lines({1, 3}, str(stat)) == [(100, 90), (100, 90)]


def test_free_cores_reads_this_host():
    free = cpu.free_cores()
    assert free is None or 0.0 <= free <= len(os.sched_getaffinity(0))


def test_auto_threads_rounds_keeps_one_and_reuses_its_measurement(monkeypatch):
    import threading

    monkeypatch.setattr(cpu, "_last", threading.local())
    monkeypatch.setattr(os, "sched_getaffinity", lambda _pid: {0, 1, 2, 3})
    assert cpu.auto_threads(now=0.0, measure=lambda: 2.6) == 3
    assert cpu.auto_threads(now=1.0, measure=lambda: 0.0) == 3  # reused within REUSE_S
    assert cpu.auto_threads(now=cpu.REUSE_S + 1, measure=lambda: 0.2) == 1  # never 0
    # another thread (a study started beside this one) measures for itself
    seen = []
    t = threading.Thread(target=lambda: seen.append(
        cpu.auto_threads(now=cpu.REUSE_S + 2, measure=lambda: 3.2)))
    t.start()
    t.join()
    assert seen == [3]
    monkeypatch.setattr(cpu, "_last", threading.local())
    assert cpu.auto_threads(now=0.0, measure=lambda: None) == 4  # not measurable: all


def test_the_correction_runs_on_the_threads_chosen(monkeypatch):
    """moco.threads 0: the measured free cores; a number: that many, as set."""
    import torch

    from perfmoco.config import MocoConfig
    from perfmoco.moco import networks
    from perfmoco.moco.pipeline import MotionCorrector
    from perfmoco.moco.synthetic import synthetic_series

    s, _, _ = synthetic_series(n_dynamics=12, shape=(64, 64), spacing_mm=2.0, seed=3)
    torch.manual_seed(0)
    models = {k: networks.RegNet(networks.default_spec(k)) for k in networks.STAGES}
    before = torch.get_num_threads()
    seen = []
    monkeypatch.setattr("perfmoco.moco.pipeline.auto_threads", lambda: seen.append(1) or 1)
    try:
        MotionCorrector(models, config=MocoConfig(refine_iterations=0)).correct(s)
        assert seen and torch.get_num_threads() == 1
        MotionCorrector(models, config=MocoConfig(refine_iterations=0, threads=2)).correct(s)
        assert len(seen) == 1 and torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


def test_flush_to_zero_is_off_again_after_the_correction():
    """The networks run with denormals flushed to zero (~7x faster); what runs after them in
    the same thread (the quantification's numpy and LAPACK) gets IEEE arithmetic back: with
    it left on, the SVD of the temporal denoising had returned NaN for saturated curves."""
    import numpy as np
    import torch

    from perfmoco.config import MocoConfig
    from perfmoco.moco import networks
    from perfmoco.moco.pipeline import MotionCorrector
    from perfmoco.moco.synthetic import synthetic_series

    def denormals_kept() -> bool:
        return bool(np.array([1e-310]) * np.array([1.0]) != 0.0)

    s, _, _ = synthetic_series(n_dynamics=12, shape=(64, 64), spacing_mm=2.0, seed=3)
    torch.manual_seed(0)
    models = {k: networks.RegNet(networks.default_spec(k)) for k in networks.STAGES}
    assert denormals_kept()
    try:
        MotionCorrector(models, config=MocoConfig(refine_iterations=0, threads=1)).correct(s)
        assert denormals_kept()
        torch.set_flush_denormal(True)  # the state the correction runs in
        assert not denormals_kept()
    finally:
        torch.set_flush_denormal(False)
