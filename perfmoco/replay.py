"""Replay an MRD image file through perfmoco, in-process or through an MRD server.

``perfmoco replay IN.h5 -o OUT.h5`` runs the same session logic the server
and the gadget use (:class:`perfmoco.session.StudySession`) in-process.  With
``--server HOST:PORT`` it is an MRD streaming client: it sends the config
name, the header, optional JSON settings, every image and CLOSE to a running
server (ours or any MRD server), and writes what comes back to MRD HDF5, one
``image_N`` group per ``image_series_index``.
"""

from __future__ import annotations

import json
import logging
import socket
import threading
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import ismrmrd

from perfmoco.config import Config, load_config
from perfmoco.io.stream import (
    DEFAULT_MAX_MESSAGE_BYTES,
    Message,
    MessageId,
    MessageReader,
    MessageWriter,
    StreamError,
)
from perfmoco.session import NOT_PROCESSED, StudySession

__all__ = ["ClientResult", "ReplaySummary", "parse_address", "replay", "stream_images"]

log = logging.getLogger(__name__)


class ClientResult(NamedTuple):
    """What an MRD server sent back in one session.

    Attributes
    ----------
    images : list of ismrmrd.Image
        Images in arrival order.
    texts : list of str
        TEXT messages (log lines, errors).
    closed_cleanly : bool
        The server ended with CLOSE (not a dropped connection).
    error : str or None
        Why the session did not end cleanly, if it did not.
    """

    images: list[ismrmrd.Image]
    texts: list[str]
    closed_cleanly: bool
    error: str | None = None


class ReplaySummary(NamedTuple):
    """Outcome of :func:`replay`; ``str()`` gives a short report."""

    images_sent: int
    images_received: int
    series: dict[int, int]
    texts: list[str]
    out_path: Path
    closed_cleanly: bool

    @property
    def processed(self) -> bool:
        """False where the study came back unprocessed (the texts say why)."""
        return self.closed_cleanly and not any(t.startswith(NOT_PROCESSED) for t in self.texts)

    def __str__(self) -> str:
        series = ", ".join(f"{k}: {v}" for k, v in sorted(self.series.items())) or "none"
        said = "\n".join(self.texts)  # a problem the summary repeats is printed once
        lines = [
            f"sent {self.images_sent} images, received {self.images_received} "
            f"(per series index {series}); wrote {self.out_path}",
            *[t for t in self.texts if not (
                t.startswith("perfmoco WARNING: ") and (
                    f"warning: {t[18:]}" in said or f"problem: {t[18:]}" in said))],
        ]
        if not self.closed_cleanly:
            lines.append("warning: the session did not end with CLOSE")
        return "\n".join(lines)


def parse_address(address: str) -> tuple[str, int]:
    """``'host:port'`` or ``'[v6addr]:port'`` -> ``(host, port)``; ValueError if malformed."""
    host, sep, port = str(address).rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"server address must look like HOST:PORT, got {address!r}")
    return host, int(port)


def _receive(reader: MessageReader, images: list, texts: list, state: dict) -> None:
    try:
        for msg in reader:
            if msg.id is MessageId.IMAGE:
                images.append(msg.payload)
            elif msg.id is MessageId.TEXT:
                texts.append(msg.payload)
            elif msg.id is MessageId.CLOSE:
                state["closed"] = True
    except (StreamError, OSError) as exc:
        state["error"] = str(exc)


def stream_images(
    images: Sequence[ismrmrd.Image],
    header: str | None,
    *,
    host: str,
    port: int,
    config_name: str = "perfmoco",
    settings: Mapping[str, Any] | None = None,
    timeout_s: float = 600.0,
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
) -> ClientResult:
    """One MRD client session: send a study, collect the reply.

    Parameters
    ----------
    images : sequence of ismrmrd.Image
        Sent in the given order.
    header : str or None
        MRD XML header (a server may refuse a study without one).
    host, port : keyword-only
        The server.
    config_name : str, keyword-only
        Sent as CONFIG_FILE (``perfmoco``, ``perfmoco-moco``, ``passthrough``).
    settings : mapping, keyword-only, optional
        Sent as a JSON TEXT message after the header (``{"server.method": "none"}``).
    timeout_s : float, keyword-only
        Socket timeout, and how long to wait for the reply after CLOSE.
    max_message_bytes : int, keyword-only
        Largest reply message accepted.

    Returns
    -------
    ClientResult
    """
    got_images: list[ismrmrd.Image] = []
    texts: list[str] = []
    state: dict[str, Any] = {"closed": False, "error": None}
    try:
        sock = socket.create_connection((host, int(port)), timeout=timeout_s)
    except OSError as exc:  # refused, unreachable, no such host: say which server
        raise OSError(f"cannot reach the MRD server at {host}:{port} ({exc.strerror or exc})"
                      ) from None
    with sock:
        rfile, wfile = sock.makefile("rb"), sock.makefile("wb")
        reader = MessageReader(rfile, max_message_bytes=max_message_bytes)
        receiver = threading.Thread(
            target=_receive, args=(reader, got_images, texts, state),
            name="perfmoco-replay-recv", daemon=True,
        )
        receiver.start()
        writer = MessageWriter(wfile)
        try:
            writer.config_file(config_name)
            if header is not None:
                writer.header(header)
            if settings:
                writer.text(json.dumps(dict(settings)))
            for img in images:
                writer.image(img)
            writer.close()
        except OSError as exc:  # the server closed early: its reply says why
            log.warning("sending stopped: %s", exc)
            state["error"] = state["error"] or f"sending stopped: {exc}"
        receiver.join(timeout_s)
        if receiver.is_alive():
            state["error"] = f"no complete reply within {timeout_s:g} s"
            sock.shutdown(socket.SHUT_RDWR)
            receiver.join(5.0)
        for f in (wfile, rfile):
            try:
                f.close()
            except OSError:
                pass
    return ClientResult(got_images, texts, bool(state["closed"]), state["error"])


class _Collector:
    """An outbox that keeps what a session sends (in-process replay)."""

    def __init__(self) -> None:
        self.images: list[ismrmrd.Image] = []
        self.texts: list[str] = []
        self.closed = False

    def image(self, image: ismrmrd.Image) -> None:
        self.images.append(image)

    def text(self, text: str) -> None:
        self.texts.append(text)

    def raw(self, message_id, body: bytes) -> None:
        pass  # an image file holds no acquisitions or waveforms

    def close(self) -> None:
        self.closed = True


def run_in_process(
    images: Sequence[ismrmrd.Image],
    header: str | None,
    *,
    config: Config,
    config_name: str = "perfmoco",
    study_id: str = "replay",
) -> ClientResult:
    """The server's session logic without sockets: same messages, same replies;
    ``study_id`` names the study in its log lines and results (the file's name).
    """
    out = _Collector()
    session = StudySession(out, config=config, study_id=study_id)
    session.handle(Message(MessageId.CONFIG_FILE, config_name, 0))
    if header is not None:
        session.handle(Message(MessageId.HEADER, header, 0))
    for img in images:
        session.handle(Message(MessageId.IMAGE, img, 0))
    session.handle(Message(MessageId.CLOSE, None, 0))
    return ClientResult(out.images, out.texts, out.closed)


def replay(
    in_path: str | Path,
    out_path: str | Path,
    *,
    server: str | None = None,
    config_name: str = "perfmoco",
    config: Config | None = None,
    method: str | None = None,
    settings: dict[str, str] | None = None,
) -> ReplaySummary:
    """Run an MRD image file through perfmoco and write the results.

    Parameters
    ----------
    in_path : str or Path
        MRD HDF5 file with ``image_*`` groups (and ideally an XML header).
    out_path : str or Path
        MRD HDF5 file to write (replaced), one ``image_N`` group per series.
    server : str, keyword-only, optional
        ``HOST:PORT`` of an MRD server; ``None`` runs in-process.
    config_name : str, keyword-only
        ``perfmoco`` (full), ``perfmoco-moco`` (correction only) or
        ``passthrough``; sent as CONFIG_FILE to a server.
    config : Config, keyword-only, optional
        Settings for the in-process run (default: packaged configuration).
    method : str, keyword-only, optional
        Correction method (``dl``, ``iterative``, ``none``); sent to a server
        as JSON settings ``{"server.method": ...}``.
    settings : dict, keyword-only, optional
        Further ``section.key`` settings sent to a server with ``method`` (it
        applies those its operator allows and says which it did not).

    Returns
    -------
    ReplaySummary

    Raises
    ------
    StudyError
        When the input file cannot be read.
    ValueError
        For a malformed server address.
    OSError
        When the server cannot be reached.
    """
    from perfmoco.io.files import read_mrd_images, write_mrd_images

    header, images = read_mrd_images(in_path)
    if server is None:
        config = config or load_config()
        if method:
            config = config.with_overrides({"server.method": method})
        result = run_in_process(images, header, config=config, config_name=config_name,
                                study_id=Path(in_path).name.split(".")[0])
    else:
        host, port = parse_address(server)
        settings = {**(settings or {}), **({"server.method": method} if method else {})}
        result = stream_images(images, header, host=host, port=port, config_name=config_name,
                               settings=settings or None)
    for text in result.texts:
        log.info("server: %s", text)
    if result.error:
        log.warning("session problem: %s", result.error)
    write_mrd_images(out_path, header, result.images)
    series = Counter(int(img.image_series_index) for img in result.images)
    return ReplaySummary(len(images), len(result.images), dict(series), list(result.texts),
                         Path(out_path), result.closed_cleanly)
