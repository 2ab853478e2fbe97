"""Shared helpers of the streaming tests: small studies, loopback servers, raw clients."""

from __future__ import annotations

import contextlib
import functools
import io
import socket
import struct
import threading

import numpy as np

from perfmoco.config import Config, load_config
from perfmoco.io.stream import MessageId, MessageReader, MessageWriter
from perfmoco.server import MrdServer
from perfmoco.study import PerfusionStudy, SliceRole, SliceSeries

LOOPBACK = "127.0.0.1"


def small_study(*, n_dynamics: int = 12, n_slices: int = 2, seed: int = 1,
                with_aif: bool = True) -> PerfusionStudy:
    """A small dual-sequence study: the phantom when it exists, else synthetic frames.

    ``n_dynamics`` below the phantom's minimum (10) gives the first dynamics
    of a 12-dynamic study (a study too short to correct).
    """
    if n_dynamics < 10:
        study = small_study(n_dynamics=12, n_slices=n_slices, seed=seed, with_aif=with_aif)
        return study.replace_slices(
            [s.replace(images=s.images[:n_dynamics], times_s=s.times_s[:n_dynamics])
             for s in study.slices])
    return _cached_study(n_dynamics, n_slices, seed, with_aif)


@functools.lru_cache(maxsize=8)
def _cached_study(n_dynamics: int, n_slices: int, seed: int, with_aif: bool) -> PerfusionStudy:
    try:
        from perfmoco.phantom import generate_phantom
    except ImportError:
        generate_phantom = None
    if generate_phantom is not None:
        ph = generate_phantom(seed=seed, n_dynamics=n_dynamics, motion="breathing")
        study = getattr(ph, "study", ph)
        if not with_aif:
            study = study.replace_slices([s for s in study.slices if s.role is not SliceRole.AIF])
        return study
    rng = np.random.default_rng(seed)
    times = np.arange(n_dynamics, dtype=np.float64) * 0.9
    yy, xx = np.mgrid[:32, :32]
    blob = np.exp(-((yy - 16.0) ** 2 + (xx - 16.0) ** 2) / 40.0).astype(np.float32)
    slices = []
    for k in range(n_slices):
        upslope = np.clip((np.arange(n_dynamics) - 3) / 4.0, 0, 1)[:, None, None]
        frames = 100 + 200 * upslope * blob + rng.normal(0, 2, (n_dynamics, 32, 32))
        slices.append(SliceSeries(frames.astype(np.float32), times + 0.1 * k, (2.0, 2.0),
                                  role=SliceRole.HIGHRES, slice_index=k))
    if with_aif:
        aif = 100 + 400 * np.clip((np.arange(n_dynamics) - 2) / 3.0, 0, 1)[:, None, None]
        aif = aif * np.ones((1, 24, 24)) + rng.normal(0, 2, (n_dynamics, 24, 24))
        slices.append(SliceSeries(aif.astype(np.float32), times + 0.05, (3.0, 3.0),
                                  role=SliceRole.AIF, slice_index=n_slices))
    return PerfusionStudy(slices=slices, study_id="synthetic")


def study_images(study: PerfusionStudy, config: Config | None = None):
    """``(header_xml, images)`` of a study as a scanner would send it."""
    from perfmoco.io.mrd import study_header, study_to_images

    config = config or load_config()
    return study_header(study), study_to_images(study, config=config.mrd)


def make_config(**overrides) -> Config:
    base = {"server.method": "none", "server.idle_timeout_s": 20, "server.workers": 2}
    base.update(overrides)
    return load_config(overrides=base)


@contextlib.contextmanager
def running_server(config: Config | None = None):
    """A server on a free loopback port; yields it, always shut down."""
    server = MrdServer(host=LOOPBACK, port=0, config=config or make_config())
    server.start()
    try:
        yield server
    finally:
        server.shutdown(timeout_s=10)


def raw_session(address, data: bytes, *, timeout_s: float = 30.0):
    """Send raw bytes, half-close, read the reply: ``(messages, closed_cleanly, error)``."""
    with socket.create_connection(address, timeout=timeout_s) as sock:
        try:
            sock.sendall(data)
            sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass
        reader = MessageReader(sock.makefile("rb"), max_message_bytes=1 << 28)
        msgs, error = [], None
        try:
            msgs = [m for m in _bounded(reader)]
        except Exception as exc:  # noqa: BLE001 - reported to the test
            error = exc
        return msgs, reader.closed_cleanly, error


def _bounded(reader, limit: int = 100000):
    for n, m in enumerate(reader):
        if n >= limit:
            raise RuntimeError("too many messages")
        yield m


def encode(*, config_name="perfmoco", header=None, settings=None, images=(), close=True,
           nul_terminate=False) -> bytes:
    """A client's message stream as bytes."""
    import json

    buf = io.BytesIO()
    w = MessageWriter(buf, nul_terminate=nul_terminate)
    if config_name is not None:
        w.config_file(config_name)
    if header is not None:
        w.header(header)
    if settings is not None:
        w.text(json.dumps(settings))
    for img in images:
        w.image(img)
    if close:
        w.close()
    return buf.getvalue()


def texts_of(msgs) -> list[str]:
    return [m.payload for m in msgs if m.id is MessageId.TEXT]


def images_of(msgs) -> list:
    return [m.payload for m in msgs if m.id is MessageId.IMAGE]


def unknown_message(mid: int = 4242) -> bytes:
    return struct.pack("<H", mid) + b"\x00" * 16


def wait_threads_back(baseline: int, timeout_s: float = 10.0) -> int:
    """Wait (bounded) until the thread count is back to ``baseline``; return it."""
    import time

    deadline = time.monotonic() + timeout_s
    while threading.active_count() > baseline and time.monotonic() < deadline:
        time.sleep(0.05)
    return threading.active_count()
