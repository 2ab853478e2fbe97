"""The Gadgetron gadget against the real ``gadgetron`` package connection code.

The test plays Gadgetron's side: it listens on a loopback port, starts
``python -m gadgetron PORT gadgets.perfmoco_gadget perfmoco`` (which connects
back, as Gadgetron's ``<execute>`` does), sends the chain configuration
(message 2), the MRD header (3), images (1022), an acquisition (1008) and
CLOSE (4), and reads what the gadget sends on.
"""

from __future__ import annotations

import json
import os
import re
import socket
import struct
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import ismrmrd
import numpy as np
import pytest
from streaming_helpers import LOOPBACK, images_of, small_study, study_images

from perfmoco.config import ConfigError, load_config
from perfmoco.io.stream import MessageId, MessageReader, MessageWriter
from perfmoco.session import run_study

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from gadgets.perfmoco_gadget import ExpectedStudy, config_from_chain  # noqa: E402

CHAIN_CONFIG = (
    "<configuration>"
    '<property name="pipeline" value="perfmoco"/>'
    '<property name="server.method" value="none"/>'
    "<property><name>mrd.min_dynamics</name><value>10</value></property>"
    "</configuration>"
)


class FakeGadgetron:
    """Gadgetron's side of an external-language connection, over loopback.

    ``mode="execute"``: listen, start ``python -m gadgetron PORT MODULE TARGET``
    and accept its connection.  ``mode="connect"``: start the gadget's own
    listener (``python -m gadgets.perfmoco_gadget --port 0``) and connect to it.
    """

    def __init__(self, tmp_path: Path, *, config_xml: str = CHAIN_CONFIG, mode="execute"):
        self.listener = None
        self.log_path = tmp_path / f"gadget-{mode}.log"
        env = {**os.environ, "PYTHONPATH": str(REPO), "GADGETRON_EXTERNAL_LOG_LEVEL": "INFO"}
        if mode == "execute":
            self.listener = socket.create_server((LOOPBACK, 0))
            self.listener.settimeout(60)
            cmd = ["-m", "gadgetron", str(self.listener.getsockname()[1]),
                   "gadgets.perfmoco_gadget", "perfmoco"]
        else:
            cmd = ["-m", "gadgets.perfmoco_gadget", "--host", LOOPBACK, "--port", "0",
                   "--max-connections", "1"]
        with open(self.log_path, "w") as log:
            self.proc = subprocess.Popen([sys.executable, *cmd], cwd=REPO, env=env, stdout=log,
                                         stderr=subprocess.STDOUT)
        try:
            self.sock = self.listener.accept()[0] if self.listener else self._connect()
        except (TimeoutError, OSError):
            self.stop()
            raise
        self.sock.settimeout(60)
        self.wfile = self.sock.makefile("wb")
        self.reader = MessageReader(self.sock.makefile("rb"), max_message_bytes=1 << 28)
        self.messages = iter(self.reader)
        self.send_text(2, config_xml)  # GADGET_MESSAGE_CONFIG

    def _connect(self) -> socket.socket:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and self.proc.poll() is None:
            match = re.search(r"event=listening host=\S+ port=(\d+)", self.log_path.read_text())
            if match:
                return socket.create_connection((LOOPBACK, int(match.group(1))), timeout=60)
            time.sleep(0.1)
        raise TimeoutError("the gadget listener did not start")

    def send_text(self, mid: int, text: str) -> None:
        data = text.encode()
        self.wfile.write(struct.pack("<HI", mid, len(data)) + data)
        self.wfile.flush()

    def send_images(self, images) -> None:
        w = MessageWriter(self.wfile)
        for img in images:
            w.image(img)
        w.flush()

    def send_raw(self, mid: int, body: bytes) -> None:
        self.wfile.write(struct.pack("<H", mid) + body)
        self.wfile.flush()

    def close(self) -> None:
        self.wfile.write(struct.pack("<H", 4))
        self.wfile.flush()

    def read(self, n_images: int | None = None) -> list:
        """Messages until ``n_images`` images arrived, or until CLOSE."""
        out = []
        for msg in self.messages:
            out.append(msg)
            if n_images is not None and len(images_of(out)) >= n_images:
                break
        return out

    def stop(self) -> str:
        try:
            self.proc.wait(timeout=60)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait(10)
            for s in (getattr(self, "sock", None), self.listener):
                if s is not None:
                    s.close()
        return self.log_path.read_text()


@pytest.fixture(scope="module")
def study_msgs():
    return study_images(small_study(n_dynamics=12))


def test_config_from_chain_properties():
    config, pipeline = config_from_chain(ET.fromstring(CHAIN_CONFIG))
    assert pipeline == "perfmoco" and config.server.method == "none"
    assert config_from_chain(None)[1] == "perfmoco"
    with pytest.raises(ConfigError, match="no_such"):
        config_from_chain(ET.fromstring('<configuration><property name="moco.no_such" '
                                        'value="1"/></configuration>'))
    with pytest.raises(ConfigError, match="pipeline"):
        config_from_chain(ET.fromstring('<configuration><property name="pipeline" '
                                        'value="x"/></configuration>'))


def test_expected_study_from_header(study_msgs):
    header, images = study_msgs
    expected = ExpectedStudy(ismrmrd.xsd.CreateFromDocument(header))
    groups: dict = {}
    for n, img in enumerate(images):
        assert not expected.complete(groups) or n == len(images)
        groups.setdefault((img.image_series_index, img.slice), []).append(img)
    assert expected.complete(groups)
    assert not ExpectedStudy(None).complete(groups)


@pytest.fixture(scope="module")
def expected_output(study_msgs):
    header, images = study_msgs
    config, pipeline = config_from_chain(ET.fromstring(CHAIN_CONFIG))
    return run_study(images, header, config=config, pipeline=pipeline)


@pytest.mark.parametrize("mode", ["execute", "connect"])
def test_gadget_processes_when_header_count_is_reached(study_msgs, expected_output, tmp_path,
                                                      mode):
    header, images = study_msgs
    expected = expected_output
    acq = ismrmrd.Acquisition.from_array(np.ones((2, 8), np.complex64))
    gt = FakeGadgetron(tmp_path, mode=mode)
    try:
        gt.send_text(3, header)  # GADGET_MESSAGE_HEADER
        gt.send_raw(MessageId.ACQUISITION, acq.to_bytes())
        gt.send_images(images)
        # no CLOSE yet: the header's repetition count alone must trigger processing
        early = gt.read(n_images=len(expected.images))
        gt.close()
        rest = gt.read()
    finally:
        log = gt.stop()
    assert gt.proc.returncode == 0, log
    msgs = early + rest
    assert msgs[-1].id is MessageId.CLOSE
    assert not [m for m in msgs if m.id is MessageId.TEXT]  # Gadgetron refuses TEXT
    assert [m.payload for m in msgs if m.id is MessageId.ACQUISITION] == [acq.to_bytes()]
    got = images_of(msgs)
    assert len(got) == len(expected.images)
    sent = {(i.image_series_index, i.slice, i.image_index): dict(i.meta) for i in images}
    n_ours = 0
    for g, e in zip(got, expected.images):
        assert g.image_series_index == e.image_series_index and g.slice == e.slice
        assert np.array_equal(g.data, e.data)
        if "PERFMOCO_Status" in g.meta:  # perfmoco's outputs carry the study's status
            assert g.meta["PERFMOCO_Status"] in ("ok", "partial")
            n_ours += 1
        else:  # the originals go on as they came
            assert dict(g.meta) == sent[(g.image_series_index, g.slice, g.image_index)]
    assert n_ours == len(expected.images) - len(images)
    assert "event=study_sent" in log


def test_gadget_bad_study_passes_originals_with_meta(tmp_path):
    header, images = study_images(small_study(n_dynamics=5))  # too short to correct
    gt = FakeGadgetron(tmp_path)
    try:
        gt.send_text(3, header)
        gt.send_images(images)
        gt.close()
        msgs = gt.read()
    finally:
        log = gt.stop()
    assert gt.proc.returncode == 0, log
    got = images_of(msgs)
    assert len(got) == len(images)
    assert not [m for m in msgs if m.id is MessageId.TEXT]
    for g, e in zip(got, images):
        assert np.array_equal(g.data, e.data)
        assert g.meta["PERFMOCO_Status"] == "failed"
        assert "dynamics" in str(g.meta["PERFMOCO_Message"])
    assert "dynamics" in log  # the reason is in the log too


@pytest.mark.parametrize("name", ["perfmoco-chain-execute.xml", "perfmoco-chain-connect.xml",
                                  "perfmoco-chain-connect-compose.xml"])
def test_chain_files_match_the_gadget(name):
    import importlib
    import inspect

    from gadgets import perfmoco_gadget

    root = ET.parse(REPO / "config" / name).getroot()
    assert root.findtext("version") == "2"
    readers = {r.findtext("classname") for r in root.iter("reader")}
    writers = {w.findtext("classname") for w in root.iter("writer")}
    assert "ImageReader" in readers and "ImageWriter" in writers
    external = root.find("stream/external")
    config, pipeline = config_from_chain(external.find("configuration"))  # keys must exist
    assert pipeline == "perfmoco"
    execute, connect = external.find("execute"), external.find("connect")
    if execute is not None:
        assert execute.get("type") == "python"
        target = getattr(importlib.import_module(execute.get("name")), execute.get("target"))
        assert callable(target) and list(inspect.signature(target).parameters) == ["connection"]
    else:
        default_port = inspect.signature(perfmoco_gadget.listen).parameters["port"].default
        assert int(connect.get("port")) == default_port
        # Gadgetron connects to the first address a name resolves to: never "localhost"
        assert connect.get("address") in ("127.0.0.1", "perfmoco-gadget")


def test_docker_files_match_the_code():
    """No Docker engine here: check the images install and start what the tests exercise."""
    import yaml

    gt = (REPO / "docker" / "Dockerfile.gadgetron").read_text()
    # the base image's tag is a build argument (Gadgetron publishes `latest` and CI
    # run numbers, no release tags): a deployment passes `latest@sha256:<digest>`
    assert re.search(r"^ARG GADGETRON_TAG=\S+$", gt, re.M)
    assert "FROM ${GADGETRON_IMAGE}:${GADGETRON_TAG}" in gt and "@sha256" in gt
    assert "torch==2.13.0" in gt and "-c constraints.txt" in gt
    for chain in ("perfmoco-chain-execute.xml", "perfmoco-chain-connect.xml",
                  "perfmoco-chain-connect-compose.xml"):
        assert (REPO / "config" / chain).is_file() and f"config/{chain}" in gt
    assert "share/gadgetron/python" in gt and "share/gadgetron/config" in gt
    assert "import gadgetron, gadgets.perfmoco_gadget" in gt
    compose = yaml.safe_load((REPO / "docker" / "compose.yaml").read_text())
    services = compose["services"]
    for svc in services.values():
        if "build" in svc:
            build = svc["build"]
            assert (REPO / "docker" / build["context"] / build["dockerfile"]).is_file()
        for port in svc.get("ports", []):
            assert port.startswith("127.0.0.1:")  # published on loopback unless a site opts in
    gadget = services["perfmoco-gadget"]
    assert gadget["entrypoint"][-2:] == ["-m", "gadgets.perfmoco_gadget"]
    assert gadget["command"][gadget["command"].index("--port") + 1] == "18000"
    srv = (REPO / "docker" / "Dockerfile.server").read_text()
    assert "torch==2.13.0" in srv and "download.pytorch.org/whl/cpu" in srv
    entry = next(line for line in srv.splitlines() if line.startswith("ENTRYPOINT"))
    args = json.loads(entry[len("ENTRYPOINT"):])
    assert args[:4] == ["perfmoco", "serve", "--host", "0.0.0.0"]
    overrides = dict(a.split("=", 1) for a in args[args.index("--set") + 1 :: 2])
    cfg = load_config(overrides=overrides)  # every override is a real setting
    assert cfg.moco.compile and "g++" in srv  # inductor builds its kernels with it
