"""The standalone MRD streaming server (``perfmoco serve``).

A client sends a config name (CONFIG_FILE), the MRD header, optional JSON
settings (TEXT), images and CLOSE; the server buffers the images, runs
:func:`perfmoco.pipeline.process_study` in a bounded worker pool and answers
with images (originals, ``MOCO`` series, ``Flow_Map`` maps), TEXT log lines
and CLOSE.  Whatever goes wrong, the originals go back with a TEXT message
saying why, the connection closes cleanly and the server keeps serving.

:class:`MrdServer` is the TCP accept loop (each connection in its own thread,
heavy work in a worker pool); the protocol logic of one study is
:class:`perfmoco.session.StudySession`, which knows no sockets.
"""

from __future__ import annotations

import concurrent.futures
import itertools
import logging
import signal
import socket
import sys
import threading
import time

from perfmoco.config import Config, load_config
from perfmoco.io.stream import MessageReader, MessageWriter, StreamError
from perfmoco.session import StudySession, kv, warm_up

__all__ = ["MrdServer", "serve"]

log = logging.getLogger(__name__)


def _drain_and_close(sock: socket.socket, *, seconds: float = 2.0, max_bytes: int = 1 << 26):
    """Half-close, then discard what the client still sends (bounded) before closing.

    Closing with unread input makes the kernel send a reset, which can make
    the client lose the reply it has not read yet.
    """
    try:
        sock.shutdown(socket.SHUT_WR)
        sock.settimeout(0.2)
        deadline, left = time.monotonic() + seconds, max_bytes
        while left > 0 and time.monotonic() < deadline:
            try:
                chunk = sock.recv(65536)
            except TimeoutError:
                continue
            if not chunk:
                break
            left -= len(chunk)
    except OSError:
        pass
    finally:
        sock.close()


class _ConnLog(logging.LoggerAdapter):
    def process(self, msg, kwargs):
        return f"conn={self.extra['conn']} {msg}", kwargs


class MrdServer:
    """TCP accept loop; each connection in its own thread, studies in a worker pool.

    Parameters
    ----------
    host : str, keyword-only
        Address to bind (default loopback only).
    port : int, keyword-only
        Port; 0 picks a free one (see :attr:`address`).
    config : Config, keyword-only, optional
        Settings (default: the packaged configuration).
    """

    def __init__(self, *, host: str = "127.0.0.1", port: int = 9002,
                 config: Config | None = None) -> None:
        self.config = config or load_config()
        self.host, self.port = host, int(port)
        self._listener: socket.socket | None = None
        self._stop = threading.Event()
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        self._conns: dict[int, tuple[socket.socket, threading.Thread]] = {}
        self._accept_thread: threading.Thread | None = None
        self._pool = concurrent.futures.ThreadPoolExecutor(
            max_workers=max(1, self.config.server.workers), thread_name_prefix="perfmoco-worker")

    @property
    def address(self) -> tuple[str, int]:
        """``(host, port)`` actually bound."""
        if self._listener is None:
            raise RuntimeError("the server is not started")
        return self._listener.getsockname()[:2]

    def start(self) -> MrdServer:
        """Bind, listen and accept in a background thread."""
        self._listener = socket.create_server((self.host, self.port), backlog=16)
        self._listener.settimeout(0.2)
        self._accept_thread = threading.Thread(target=self._accept_loop, name="perfmoco-accept",
                                               daemon=True)
        self._accept_thread.start()
        threading.Thread(target=self._warm_up, name="perfmoco-warmup", daemon=True).start()
        log.info(kv("listening", host=self.address[0], port=self.address[1],
                     workers=self.config.server.workers))
        return self

    def _warm_up(self) -> None:
        log.info(kv("warm_up", seconds=warm_up(self.config)))

    def serve_forever(self) -> None:
        """Start (if needed) and block until :meth:`shutdown` or Ctrl-C."""
        if self._listener is None:
            self.start()
        while not self._stop.wait(0.5):
            pass

    def _accept_loop(self) -> None:
        while not self._stop.is_set():
            try:
                sock, addr = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                if self._stop.is_set():
                    return
                raise
            cid = next(self._ids)
            thread = threading.Thread(target=self._handle, args=(sock, addr, cid),
                                      name=f"perfmoco-conn-{cid}", daemon=True)
            with self._lock:
                self._conns[cid] = (sock, thread)
            thread.start()

    def _run(self, fn, *args, **kwargs):
        return self._pool.submit(fn, *args, **kwargs).result()

    def _handle(self, sock: socket.socket, addr, cid: int) -> None:
        clog = _ConnLog(log, {"conn": cid})
        peer = f"{addr[0]}:{addr[1]}"
        cfg = self.config.server
        sock.settimeout(cfg.idle_timeout_s)
        rfile, wfile = sock.makefile("rb"), sock.makefile("wb")
        session = StudySession(MessageWriter(wfile), config=self.config, runner=self._run,
                               log=clog, study_id=f"conn{cid}", name_from_header=True)
        try:
            reader = MessageReader(rfile, max_message_bytes=cfg.max_message_bytes)
            for n, msg in enumerate(reader):
                if n == 0:  # logged once it speaks: health checks connect every 30 s
                    clog.info(kv("connected", peer=peer))
                session.handle(msg)
            if reader.bytes_read == 0 and not reader.closed_cleanly:
                clog.debug(kv("empty_connection", peer=peer))  # a health check or port probe
            elif not reader.closed_cleanly:
                session.abort("the stream ended without a CLOSE message")
        except StreamError as exc:
            session.abort(str(exc))
        except TimeoutError:
            session.abort(f"no data for {cfg.idle_timeout_s:g} s (server.idle_timeout_s)")
        except OSError as exc:
            clog.info(kv("client_gone", error=exc))
        except Exception:  # never let one connection take the server down
            clog.exception(kv("connection_failed"))
            session.abort("internal server error")
        finally:
            for f in (wfile, rfile):
                try:
                    f.close()
                except OSError:
                    pass
            _drain_and_close(sock)
            with self._lock:
                self._conns.pop(cid, None)
            clog.info(kv("closed"))

    def shutdown(self, *, timeout_s: float = 5.0) -> None:
        """Stop accepting, end open connections, wait for their threads (bounded)."""
        self._stop.set()
        if self._listener is not None:
            self._listener.close()
        if self._accept_thread is not None:
            self._accept_thread.join(timeout_s)
        with self._lock:
            conns = list(self._conns.values())
        for sock, _ in conns:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        deadline = time.monotonic() + timeout_s
        for _, thread in conns:
            thread.join(max(0.0, deadline - time.monotonic()))
        self._pool.shutdown(wait=False, cancel_futures=True)
        log.info(kv("stopped", open_connections=len(self._conns)))

    def __enter__(self) -> MrdServer:
        return self.start() if self._listener is None else self

    def __exit__(self, *exc) -> None:
        self.shutdown()


def serve(*, host: str = "127.0.0.1", port: int = 9002, config: Config | None = None) -> None:
    """Run the MRD server until Ctrl-C (blocking); logs go to stderr.

    Parameters
    ----------
    host : str, keyword-only
        Address to bind; ``0.0.0.0`` exposes it to the network (containers).
    port : int, keyword-only
    config : Config, keyword-only, optional
    """
    pkg = logging.getLogger("perfmoco")
    if not pkg.handlers and not logging.getLogger().handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
        pkg.addHandler(handler)
        pkg.setLevel(logging.INFO)
    if log.getEffectiveLevel() > logging.INFO:  # e.g. the CLI's WARNING default
        log.setLevel(logging.INFO)  # connection events are the server's audit trail
    server = MrdServer(host=host, port=port, config=config)
    if threading.current_thread() is threading.main_thread():
        # Ctrl-C stops the server even where its launcher ignored SIGINT (a background job
        # of a script), and SIGTERM (``docker stop``, systemd) stops it the same clean way
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGTERM, _terminate)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        log.info(kv("interrupted"))
    finally:
        server.shutdown()


def _terminate(signum, frame) -> None:
    """SIGTERM: end :func:`serve` as Ctrl-C does (stop accepting, close, log)."""
    raise KeyboardInterrupt
