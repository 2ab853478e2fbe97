"""``perfmoco replay``: in-process and through a server, MRD HDF5 grouped by series."""

from __future__ import annotations

import socket

import h5py
import numpy as np
import pytest
from streaming_helpers import LOOPBACK, make_config, running_server, small_study

from perfmoco.io.files import read_mrd_images, write_study
from perfmoco.io.mrd import images_to_study
from perfmoco.pipeline import process_study
from perfmoco.replay import parse_address, replay


@pytest.fixture(scope="module")
def study_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("replay") / "study.h5"
    write_study(small_study(n_dynamics=12), path)
    return path


def _key(im):
    return (im.image_series_index, im.slice, im.image_index, im.repetition)


def _assert_same(a, b):
    a, b = sorted(a, key=_key), sorted(b, key=_key)
    assert [_key(x) for x in a] == [_key(y) for y in b]
    for x, y in zip(a, b):
        assert np.array_equal(x.data, y.data, equal_nan=True)
        assert x.meta.get("GADGETRON_DataRole") == y.meta.get("GADGETRON_DataRole")


def _groups_have_one_matrix(path):
    with h5py.File(path, "r") as f:
        names = [n for n in f["dataset"] if n.startswith("image_")]
        for name in names:
            data = f["dataset"][name]["data"]
            assert data.ndim == 5  # (N, cha, z, y, x): one matrix size per group
        return sorted(names)


def test_in_process_matches_process_study(study_file, tmp_path):
    config = make_config()
    out = tmp_path / "out.h5"
    summary = replay(study_file, out, config=config, method="none")
    header, images = read_mrd_images(study_file)
    expected = process_study(images_to_study(images, header, config=config.mrd), config=config,
                             method="none").to_images(config)
    _, got = read_mrd_images(out)
    _assert_same(got, expected)
    assert summary.images_sent == len(images) and summary.images_received == len(expected)
    assert str(out) in str(summary)
    names = _groups_have_one_matrix(out)
    assert names == sorted(f"image_{k}" for k in summary.series)


def test_server_mode_equals_in_process(study_file, tmp_path):
    config = make_config()
    with running_server(config) as server:
        host, port = server.address
        via_server = replay(study_file, tmp_path / "srv.h5", server=f"{host}:{port}",
                            method="none")
    local = replay(study_file, tmp_path / "local.h5", config=config, method="none")
    assert via_server.closed_cleanly and local.closed_cleanly
    assert via_server.series == local.series
    _assert_same(read_mrd_images(tmp_path / "srv.h5")[1], read_mrd_images(tmp_path / "local.h5")[1])
    _groups_have_one_matrix(tmp_path / "srv.h5")
    untimed = [t for t in via_server.texts if "time " not in t]
    assert len(untimed) == len([t for t in local.texts if "time " not in t])


def test_passthrough_config_name(study_file, tmp_path):
    with running_server() as server:
        host, port = server.address
        s = replay(study_file, tmp_path / "p.h5", server=f"{host}:{port}",
                   config_name="passthrough")
    _assert_same(read_mrd_images(tmp_path / "p.h5")[1], read_mrd_images(study_file)[1])
    assert s.texts == []


def test_bad_addresses_and_unreachable_server(study_file, tmp_path):
    for bad in ("localhost", "host:", ":9002", "host:port", "host:70000"):
        with pytest.raises(ValueError, match="HOST:PORT"):
            parse_address(bad)
    assert parse_address("[::1]:9002") == ("::1", 9002)
    with socket.socket() as s:  # a loopback port nobody listens on
        s.bind((LOOPBACK, 0))
        port = s.getsockname()[1]
    with pytest.raises(OSError):
        replay(study_file, tmp_path / "x.h5", server=f"{LOOPBACK}:{port}")


def test_cli_replay(study_file, tmp_path):
    cli = pytest.importorskip("perfmoco.cli")
    out = tmp_path / "cli.h5"
    assert cli.main(["replay", str(study_file), "-o", str(out), "--method", "none"]) == 0
    assert _groups_have_one_matrix(out)


def test_a_problem_the_summary_repeats_is_printed_once(tmp_path):
    from perfmoco.replay import ReplaySummary

    texts = ["perfmoco WARNING: slice 2: 40% of myocardial pixels flagged",
             "perfmoco WARNING: the study's own problem",
             "perfmoco: study s, method dl\n  warning: slice 2: 40% of myocardial pixels flagged"]
    out = str(ReplaySummary(10, 20, {1: 10}, texts, tmp_path / "o.h5", True))
    assert out.count("40% of myocardial pixels flagged") == 1
    assert "perfmoco WARNING: the study's own problem" in out  # not in the summary: kept
