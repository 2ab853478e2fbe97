"""The MRD server end to end over loopback: results, bad input, concurrency, disconnects."""

from __future__ import annotations

import os
import re
import signal
import socket
import struct
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
from streaming_helpers import (
    LOOPBACK,
    encode,
    images_of,
    make_config,
    raw_session,
    running_server,
    small_study,
    study_images,
    texts_of,
    unknown_message,
    wait_threads_back,
)

from perfmoco.io.mrd import images_to_study
from perfmoco.io.mrd_header import parse_header
from perfmoco.io.stream import MessageId
from perfmoco.pipeline import process_study
from perfmoco.replay import stream_images


@pytest.fixture(scope="module")
def study_msgs():
    study = small_study(n_dynamics=12)
    header, images = study_images(study)
    return header, images


def _same_images(a, b):
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert x.image_series_index == y.image_series_index
        assert x.slice == y.slice and x.repetition == y.repetition
        assert np.array_equal(x.data, y.data, equal_nan=True)


def _assert_originals_back(msgs, originals):
    got = images_of(msgs)
    key = lambda im: (im.image_series_index, im.slice, im.image_index)  # noqa: E731
    _same_images(sorted(got, key=key), sorted(originals, key=key))


def _still_serves(server, images, header):
    res = stream_images(images[:3], header, host=LOOPBACK, port=server.address[1],
                        config_name="passthrough", timeout_s=30)
    assert res.closed_cleanly and len(res.images) == 3


def test_full_pipeline_matches_in_process(study_msgs):
    header, images = study_msgs
    config = make_config()
    with running_server(config) as server:
        res = stream_images(images, header, host=LOOPBACK, port=server.address[1],
                            config_name="perfmoco", timeout_s=60)
    assert res.closed_cleanly and res.error is None
    study = images_to_study(images, header, config=config.mrd, study_id="x")
    expected = process_study(study, config=config, method="none", quantify=True)
    _same_images(res.images, expected.to_images(config))
    def untimed(text):
        return [ln for ln in text.splitlines()[1:] if not ln.strip().startswith("time ")]

    assert untimed(res.texts[-1]) == untimed(expected.summary_text())
    assert all(f"perfmoco WARNING: {m}" in res.texts for m in expected.messages)
    # results named after the scan (the header's measurementID), not the connection
    scan = parse_header(header).measurementInformation.measurementID
    named = {im.meta.get("perfmoco_Study") for im in res.images if "perfmoco_Study" in im.meta}
    assert scan and named == {scan}


def test_moco_only_and_passthrough(study_msgs):
    header, images = study_msgs
    config = make_config()
    with running_server(config) as server:
        port = server.address[1]
        moco = stream_images(images, header, host=LOOPBACK, port=port, config_name="perfmoco-moco")
        passed = stream_images(images, header, host=LOOPBACK, port=port, config_name="passthrough")
    study = images_to_study(images, header, config=config.mrd)
    expected = process_study(study, config=config, method="none", quantify=False)
    _same_images(moco.images, expected.to_images(config))
    assert not any(im.meta.get("GADGETRON_DataRole") == "Flow_Map" for im in moco.images)
    _same_images(passed.images, images)
    assert passed.texts == []


def _bad_cases(header, images):
    """(name, client bytes, expected text) for every bad-input case of the issue."""
    too_short_h, too_short = study_images(small_study(n_dynamics=5))
    no_aif_h, no_aif = study_images(small_study(n_dynamics=12, with_aif=False))
    mixed = [im for im in images]
    small = mixed[3]
    import ismrmrd

    odd = ismrmrd.Image.from_array(small.data[0, 0, :20, :20].copy(), transpose=False)
    odd.setHead(_with_matrix(small.getHead(), odd))
    mixed = mixed[:3] + [odd] + mixed[4:]
    good = encode(header=header, images=images, close=False)
    return [
        ("truncated", good + encode(config_name=None, images=images[:1], close=False)[:150],
         "stream ended inside", images),
        ("unknown id", good + unknown_message(4242), "unknown MRD message id 4242", images),
        ("non-MRD header", encode(header="Dummy XML header", images=images),
         "not valid MRD XML", images),
        ("inconsistent sizes", encode(header=header, images=mixed), "", mixed),
        ("too short", encode(header=too_short_h, images=too_short), "dynamics", too_short),
        ("missing AIF", encode(header=no_aif_h, images=no_aif), "AIF", no_aif),
        ("unknown config", encode(config_name="recon-xyz", header=header, images=images),
         "unknown config 'recon-xyz'", images),
    ]


def _with_matrix(head, img):
    import ismrmrd

    h = ismrmrd.ImageHeader.from_buffer_copy(head)
    h.matrix_size[0], h.matrix_size[1] = img.matrix_size[0], img.matrix_size[1]
    return h


def test_every_bad_input_gets_text_originals_and_close(study_msgs):
    header, images = study_msgs
    with running_server() as server:
        for name, data, expect, originals in _bad_cases(header, images):
            msgs, closed, error = raw_session(server.address, data)
            texts = texts_of(msgs)
            assert error is None and closed, name
            assert texts and any(expect in t for t in texts), (name, texts)
            assert any("ERROR" in t or "WARNING" in t or "not processed" in t for t in texts), name
            if name != "missing AIF":  # its results come back too; see the next test
                _assert_originals_back(msgs, originals)
            assert msgs[-1].id is MessageId.CLOSE
            _still_serves(server, images, header)


def test_missing_aif_still_returns_every_original(study_msgs):
    header, images = study_msgs
    no_aif_h, no_aif = study_images(small_study(n_dynamics=12, with_aif=False))
    with running_server() as server:
        res = stream_images(no_aif, no_aif_h, host=LOOPBACK, port=server.address[1])
    assert res.closed_cleanly
    assert any("AIF" in t for t in res.texts)
    originals = [im for im in res.images if im.image_series_index in {1, 2}]
    assert len(originals) == len(no_aif)


def test_oversized_message_refused_and_server_survives(study_msgs):
    header, images = study_msgs
    config = make_config(**{"server.max_message_bytes": 1 << 20})
    bomb = encode(header=header, images=images[:2], close=False) + struct.pack(
        "<HI", MessageId.TEXT, 1 << 30)
    with running_server(config) as server:
        msgs, closed, error = raw_session(server.address, bomb)
        assert closed and error is None
        assert any("limit" in t for t in texts_of(msgs))
        assert len(images_of(msgs)) == 2
        _still_serves(server, images, header)


def test_study_too_large_passes_images_through(study_msgs):
    header, images = study_msgs
    limit = 5 * images[0].data.nbytes
    with running_server(make_config(**{"server.max_study_bytes": limit})) as server:
        res = stream_images(images, header, host=LOOPBACK, port=server.address[1])
    assert res.closed_cleanly and any("max_study_bytes" in t for t in res.texts)
    _same_images(res.images, images)


def test_json_settings(study_msgs):
    header, images = study_msgs
    with running_server() as server:
        port = server.address[1]
        res = stream_images(images[:4], header, host=LOOPBACK, port=port, config_name="passthrough",
                            settings={"moco.no_such_key": 1})
        assert any("settings not applied" in t and "no_such_key" in t for t in res.texts)
        res = stream_images(images[:4], header, host=LOOPBACK, port=port, config_name="passthrough",
                            settings={"server.max_study_bytes": 1 << 40, "mrd.min_dynamics": 5})
        assert any("only be set by the operator" in t for t in res.texts)
        res = stream_images(images[:4], header, host=LOOPBACK, port=port, config_name="passthrough",
                            settings={"server.method": "magic"})
        assert any("server.method must be one of" in t for t in res.texts)
        # python-ismrmrd-server style {"parameters": {...}}; a config name selects a pipeline
        res = stream_images(images[:4], header, host=LOOPBACK, port=port, config_name="perfmoco",
                            settings={"version": "1", "parameters": {"config": "passthrough"}})
        assert len(res.images) == 4 and res.texts == []


def test_config_text_names_or_settings(study_msgs):
    import io

    from perfmoco.io.stream import MessageWriter

    header, images = study_msgs
    with running_server() as server:
        for text, expect_warning in (("passthrough", False), ("<gadgetron chain/>", True)):
            buf = io.BytesIO()
            w = MessageWriter(buf)
            w.config_text(text)
            w.header(header)
            for img in images[:3]:
                w.image(img)
            w.close()
            msgs, closed, _ = raw_session(server.address, buf.getvalue())
            assert closed and len(images_of(msgs)) >= 3
            assert any("CONFIG_TEXT" in t for t in texts_of(msgs)) == expect_warning


def test_acquisitions_and_waveforms_pass_through(study_msgs):
    import ismrmrd

    header, images = study_msgs
    acq = ismrmrd.Acquisition.from_array(np.ones((2, 8), np.complex64))
    wav = ismrmrd.Waveform.from_array(np.arange(6, dtype=np.uint32).reshape(2, 3))
    data = encode(header=header, config_name="passthrough", close=False)
    data += struct.pack("<H", 1008) + acq.to_bytes() + struct.pack("<H", 1026) + wav.to_bytes()
    data += encode(config_name=None, images=images[:2])
    with running_server() as server:
        msgs, closed, _ = raw_session(server.address, data)
    assert closed
    assert [m.payload for m in msgs if m.id is MessageId.ACQUISITION] == [acq.to_bytes()]
    assert [m.payload for m in msgs if m.id is MessageId.WAVEFORM] == [wav.to_bytes()]


def _four_at_once(images, header, config, config_name, timeout_s):
    study = images_to_study(images, header, config=config.mrd)
    expected = process_study(study, config=config, method=config.server.method,
                             quantify=config_name == "perfmoco").to_images(config)
    results = [None] * 4
    with running_server(config) as server:
        def client(k):
            results[k] = stream_images(images, header, host=LOOPBACK, port=server.address[1],
                                       config_name=config_name, timeout_s=timeout_s)

        threads = [threading.Thread(target=client, args=(k,)) for k in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout_s + 30)
    for res in results:
        assert res is not None and res.closed_cleanly
        _same_images(res.images, expected)


def test_four_simultaneous_studies(study_msgs):
    header, images = study_msgs
    _four_at_once(images, header, make_config(), "perfmoco-moco", timeout_s=120)


@pytest.mark.slow
def test_load_four_full_studies_deep_learning():
    header, images = study_images(small_study(n_dynamics=40))
    config = make_config(**{"server.method": "dl", "server.idle_timeout_s": 600})
    _four_at_once(images, header, config, "perfmoco", timeout_s=900)


def _quiet_thread_count(timeout_s: float = 10.0) -> int:
    """Thread count once no connection thread is left (bounded wait)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not [t for t in threading.enumerate() if t.name.startswith("perfmoco-conn")]:
            break
        time.sleep(0.05)
    return threading.active_count()


def test_disconnect_mid_study_leaks_no_thread(study_msgs):
    header, images = study_msgs
    baseline = threading.active_count()
    with running_server() as server:
        _still_serves(server, images, header)  # starts the pool's worker thread
        during = _quiet_thread_count()
        for abrupt in (False, True):
            sock = socket.create_connection(server.address, timeout=10)
            sock.sendall(encode(header=header, images=images[:5], close=False)[:-100])
            if abrupt:  # reset instead of a clean FIN
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            sock.close()
        assert _quiet_thread_count() <= during  # (the warm-up thread may have ended)
        _still_serves(server, images, header)
        assert _quiet_thread_count() <= during
    assert wait_threads_back(baseline) <= baseline


def test_idle_timeout_closes_with_explanation(study_msgs):
    header, images = study_msgs
    with running_server(make_config(**{"server.idle_timeout_s": 0.5})) as server:
        with socket.create_connection(server.address, timeout=10) as sock:
            sock.sendall(encode(header=header, images=images[:2], close=False))
            from perfmoco.io.stream import MessageReader

            t0 = time.monotonic()
            reader = MessageReader(sock.makefile("rb"))
            msgs = list(reader)
            assert time.monotonic() - t0 < 8
        assert reader.closed_cleanly
        assert any("no data for 0.5 s" in t for t in texts_of(msgs))
        assert len(images_of(msgs)) == 2


@pytest.mark.parametrize("sig", ["SIGINT", "SIGTERM"])
def test_serve_binds_loopback_and_stops_on_ctrl_c_or_sigterm(tmp_path, sig):
    """Ctrl-C and SIGTERM (``docker stop``) end the server cleanly, also when it was
    started with SIGINT ignored (as a script's background job is)."""
    code = ("import signal; signal.signal(signal.SIGINT, signal.SIG_IGN); "  # as inherited
            "from perfmoco.server import serve; from perfmoco.config import load_config; "
            "serve(host='127.0.0.1', port=0, config=load_config())")
    proc = subprocess.Popen([sys.executable, "-c", code], stderr=subprocess.PIPE, text=True,
                            cwd=tmp_path, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        line, deadline = "", time.monotonic() + 60
        while "event=listening" not in line and time.monotonic() < deadline:
            line = proc.stderr.readline()
            if not line and proc.poll() is not None:
                break
        match = re.search(r"host=(\S+) port=(\d+)", line)
        assert match, line
        assert match.group(1) == "127.0.0.1"
        with socket.create_connection((LOOPBACK, int(match.group(2))), timeout=10):
            pass
        proc.send_signal(getattr(signal, sig))
        rest = proc.communicate(timeout=30)[1]
        assert proc.returncode == 0, rest
        assert "event=interrupted" in rest and "event=stopped" in rest
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


def test_empty_connection_is_a_probe_not_an_error(study_msgs, caplog):
    header, images = study_msgs
    with running_server() as server:
        with caplog.at_level("DEBUG", logger="perfmoco.server"):
            socket.create_connection(server.address, timeout=10).close()
            _still_serves(server, images, header)
    assert "event=empty_connection" in caplog.text
    assert "event=stream_error" not in caplog.text
    # a probe is not logged at INFO (health checks connect every 30 s); a client is
    info = [r.getMessage() for r in caplog.records if r.levelname == "INFO"]
    assert not any("empty_connection" in m for m in info)
    assert sum("event=connected" in m for m in info) == 1
