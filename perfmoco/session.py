"""The protocol logic of one MRD study session, independent of sockets.

:class:`StudySession` consumes received messages (:class:`~perfmoco.io.stream.Message`)
and writes its replies to an *outbox* (a :class:`~perfmoco.io.stream.MessageWriter`
on a socket in the server, a collector in the in-process replay).  On CLOSE it
runs :func:`run_study`: MRD images -> study -> :func:`perfmoco.pipeline.process_study`
-> images.  Problems never lose images: the originals go back with a TEXT line
saying why.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any, Protocol

import ismrmrd

from perfmoco.config import Config, ConfigError
from perfmoco.io.mrd_header import parse_header
from perfmoco.io.stream import Message, MessageId
from perfmoco.logs import log_failure, study_named
from perfmoco.study import StudyError

__all__ = ["NOT_PROCESSED", "PIPELINES", "Outbox", "StudyOutput", "StudySession", "kv",
           "run_study", "warm_up"]

log = logging.getLogger(__name__)

#: Config names a client may ask for -> (correct, quantify).
PIPELINES: dict[str, tuple[bool, bool]] = {
    "perfmoco": (True, True),
    "perfmoco-moco": (True, False),
    "passthrough": (False, False),
}
#: The only server.* setting a client may change (limits stay the operator's).
_CLIENT_SERVER_KEYS = {"server.method"}
_METHODS = {"dl", "iterative", "none"}


class Outbox(Protocol):
    """Where a session's replies go (a :class:`MessageWriter` or a collector)."""

    def image(self, image: ismrmrd.Image) -> None: ...  # noqa: D102
    def text(self, text: str) -> None: ...  # noqa: D102
    def raw(self, message_id: MessageId | int, body: bytes) -> None: ...  # noqa: D102
    def close(self) -> None: ...  # noqa: D102


class StudyOutput:
    """What one study sends back.

    Attributes
    ----------
    images : list of ismrmrd.Image
        Originals plus results, or the originals alone.
    problems : list of str
        One line per problem (empty when everything asked for ran).
    ok : bool
        False when the study was not processed at all (originals only).
    summary : str or None
        :meth:`perfmoco.pipeline.StudyResult.summary_text` when the pipeline ran.
    name : str
        The study's name in its results ("" where it was not read).
    """

    def __init__(self, images: list[ismrmrd.Image], problems: list[str], ok: bool,
                 summary: str | None = None, name: str = "") -> None:
        self.images, self.problems, self.ok, self.summary = images, problems, ok, summary
        self.name = name

    @property
    def texts(self) -> list[str]:
        """The TEXT lines a streaming client gets: problems, then the summary."""
        return self.problems + ([self.summary] if self.summary else [])


#: Starts of the TEXT messages that say a study was passed back unprocessed (a client
#: such as ``perfmoco replay`` tells its user from them; warnings start otherwise).
NOT_PROCESSED = ("perfmoco: study not processed", "perfmoco: internal error",
                 "perfmoco: processing failed", "perfmoco: not processed", "perfmoco ERROR:")


def kv(event: str, **fields: Any) -> str:
    """One structured log line: ``event=... key=value ...`` (values with spaces quoted)."""
    parts = [f"event={event}"]
    for k, v in fields.items():
        v = f"{v:.3f}" if isinstance(v, float) else str(v)
        parts.append(f"{k}={json.dumps(v) if (' ' in v or not v) else v}")
    return " ".join(parts)


def warm_up(config: Config | None = None) -> float:
    """Import the pipeline's heavy modules (torch, MONAI, fitting) ahead of the first study.

    Parameters
    ----------
    config : Config, optional
        With ``moco.compile`` (and the ``dl`` method) the motion corrector is
        also loaded and its networks compiled now (~1 min the first time on a
        machine, seconds once inductor's cache holds the kernels).

    Returns
    -------
    float
        Seconds spent.  Missing optional stages are skipped silently; they
        are reported when a study needs them.
    """
    t0 = time.perf_counter()
    import importlib

    for name in ("perfmoco.io.mrd", "perfmoco.pipeline", "perfmoco.io.outputs",
                 "perfmoco.moco.pipeline", "perfmoco.quant"):
        try:
            importlib.import_module(name)
        except Exception as exc:  # an unfinished stage must not stop the server
            log.debug("warm-up: %s not imported (%s)", name, exc)
    if config is not None and config.moco.compile and config.server.method == "dl":
        try:
            from perfmoco.pipeline import load_corrector

            load_corrector(config).compile_networks()
        except Exception as exc:  # reported again when a study needs the corrector
            log.warning("warm-up: networks not compiled (%s)", exc)
    return time.perf_counter() - t0


def run_study(
    images: list[ismrmrd.Image],
    header: str | None,
    *,
    config: Config,
    pipeline: str = "perfmoco",
    study_id: str = "study",
    name_from_header: bool = False,
) -> StudyOutput:
    """Process one buffered study; never raises, never loses an original.

    Parameters
    ----------
    images : list of ismrmrd.Image
        Every image received, in any order.
    header : str or None
        The MRD XML header of the session.
    config : Config, keyword-only
        Settings; ``config.server.method`` picks the correction method.
    pipeline : {'perfmoco', 'perfmoco-moco', 'passthrough'}, keyword-only
        Full pipeline, correction only, or originals only.
    study_id : str, keyword-only
        Name used in logs and the results.
    name_from_header : bool, keyword-only
        Name the results after the header's ``measurementID`` where it has one (a
        stream's studies: the scan's own name), ``study_id`` otherwise.

    Returns
    -------
    StudyOutput
        Originals plus results, or the originals alone with the reason.
    """
    correct, quantify = PIPELINES.get(pipeline, (False, False))
    if not correct:
        return StudyOutput(list(images), [], ok=True)
    from perfmoco.io.mrd import images_to_study
    from perfmoco.io.mrd_header import header_measurement_id, parse_header
    from perfmoco.pipeline import process_study

    try:
        study = images_to_study(images, header, config=config.mrd, study_id=study_id)
        if name_from_header:
            study.study_id = header_measurement_id(parse_header(header)) or study_id
    except StudyError as exc:
        msg = f"perfmoco: study not processed: {exc}; the {len(images)} images are passed back"
        return StudyOutput(list(images), [msg], ok=False)
    except Exception as exc:  # a bug must not lose the study
        log_failure(log, kv("study_failed", study=study_id, stage="convert"))
        text = f"perfmoco: internal error ({exc}); images passed back"
        return StudyOutput(list(images), [text], ok=False)
    try:
        with study_named(study_id):  # a server's workers run studies side by side
            result = process_study(study, config=config, method=config.server.method,
                                   quantify=quantify)
        out = result.to_images(config, originals=list(images))  # as they came in
    except Exception as exc:  # process_study records data problems; this is a bug or bad method
        log_failure(log, kv("study_failed", study=study_id, stage="process"))
        text = f"perfmoco: processing failed ({exc}); images passed back"
        return StudyOutput(list(images), [text], ok=False)
    problems = [f"perfmoco WARNING: {m}" for m in result.messages]
    return StudyOutput(out, problems, ok=True, summary=result.summary_text(),
                       name=study.study_id)


def _settings(text: str) -> tuple[dict[str, Any], str | None, list[str]]:
    """Parse JSON settings into flat overrides, a pipeline name and notes; ValueError if none."""
    data = json.loads(text)
    if not isinstance(data, Mapping):
        raise ValueError("JSON settings must be an object")
    params = data.get("parameters", data) if isinstance(data.get("parameters"), Mapping) else data
    flat: dict[str, Any] = {}
    pipeline, notes = None, []
    for key, value in params.items():
        if isinstance(value, Mapping):
            flat.update({f"{key}.{k}": v for k, v in value.items()})
        elif "." in key:
            flat[key] = value
        elif key == "config" and value in PIPELINES:
            pipeline = value
        elif key not in ("version", "config", "customconfig"):
            notes.append(key)
    return flat, pipeline, notes


class StudySession:
    """The protocol logic of one study, independent of sockets.

    Parameters
    ----------
    out : Outbox
        Receives the replies.
    config : Config, keyword-only
        Server settings (clients may override pipeline settings, not limits).
    runner : callable, keyword-only, optional
        ``runner(fn, *args, **kw)`` runs the heavy processing (the server's
        worker pool); default: call directly.
    log : logging.LoggerAdapter or Logger, keyword-only, optional
    study_id : str, keyword-only
    name_from_header : bool, keyword-only
        See :func:`run_study`.
    """

    def __init__(self, out: Outbox, *, config: Config, runner: Callable | None = None,
                 log: logging.Logger | logging.LoggerAdapter = log,
                 study_id: str = "study", name_from_header: bool = False) -> None:
        self.out, self.config, self.log, self.study_id = out, config, log, study_id
        self.name_from_header = name_from_header
        self.runner = runner or (lambda fn, *a, **kw: fn(*a, **kw))
        self.pipeline = "perfmoco"
        self.header: str | None = None
        self.images: list[ismrmrd.Image] = []
        self.buffered_bytes = 0
        self.problem: str | None = None  # set: no processing, originals go back
        self.overflow = False
        self.closed = False

    def _problem(self, text: str) -> None:
        self.log.warning(kv("bad_input", reason=text))
        self.out.text(f"perfmoco ERROR: {text}")
        self.problem = self.problem or text

    def handle(self, msg: Message) -> None:
        """Handle one received message (CLOSE runs the study and replies)."""
        mid, payload = msg.id, msg.payload
        if mid is MessageId.IMAGE:
            self._image(payload)
        elif mid in (MessageId.ACQUISITION, MessageId.WAVEFORM):
            self.out.raw(mid, payload)  # not ours: straight back, untouched
        elif mid is MessageId.CONFIG_FILE:
            if payload in PIPELINES:
                self.pipeline = payload
            else:
                self._problem(f"unknown config {payload!r} (known: {', '.join(PIPELINES)}); "
                              "images will be passed back unprocessed")
                self.pipeline = "passthrough"
        elif mid is MessageId.CONFIG_TEXT:
            self._settings_text(payload, what="CONFIG_TEXT", bare_name=True)
        elif mid is MessageId.HEADER:
            self.header = payload
            try:
                parse_header(payload)
            except StudyError as exc:
                self._problem(f"{exc}; images will be passed back unprocessed")
        elif mid is MessageId.TEXT:
            self._settings_text(payload, what="TEXT", bare_name=False)
        elif mid is MessageId.CLOSE:
            self.finish()

    def _settings_text(self, text: str, *, what: str, bare_name: bool) -> None:
        if bare_name and text.strip() in PIPELINES:
            self.pipeline = text.strip()
            return
        try:
            flat, pipeline, ignored = _settings(text)
        except ValueError:
            self.log.info(kv("text_ignored", kind=what, chars=len(text)))
            if what == "CONFIG_TEXT":
                self.out.text(f"perfmoco WARNING: CONFIG_TEXT is neither a config name "
                              f"({', '.join(PIPELINES)}) nor JSON settings; using "
                              f"{self.pipeline!r}")
            return
        refused = sorted(
            k for k in flat if k.startswith("server.") and k not in _CLIENT_SERVER_KEYS
        )
        if refused:
            self.out.text(f"perfmoco WARNING: settings {refused} can only be set by the operator")
        method = flat.get("server.method")
        if method is not None and str(method) not in _METHODS:
            self.out.text(f"perfmoco WARNING: server.method must be one of {sorted(_METHODS)}, "
                          f"got {method!r}; keeping {self.config.server.method!r}")
            refused.append("server.method")
        try:
            self.config = self.config.with_overrides(
                {k: v for k, v in flat.items() if k not in refused})
        except ConfigError as exc:
            self.out.text(f"perfmoco WARNING: settings not applied: {exc}")
            return
        self.pipeline = pipeline or self.pipeline
        if ignored:
            self.out.text(f"perfmoco WARNING: unknown settings ignored: {sorted(ignored)}")
        self.log.info(kv("settings", applied=len(flat) - len(refused), pipeline=self.pipeline))

    def _image(self, image: ismrmrd.Image) -> None:
        if self.overflow:
            self.out.image(image)
            return
        self.images.append(image)
        self.buffered_bytes += image.data.nbytes
        if self.buffered_bytes > self.config.server.max_study_bytes:
            self.overflow = True
            self._problem(f"study larger than {self.config.server.max_study_bytes} bytes "
                          "(server.max_study_bytes); images are passed back unprocessed")
            for img in self.images:
                self.out.image(img)
            self.images = []

    def finish(self) -> StudyOutput:
        """Run the study (unless a problem stopped it), send everything back, then CLOSE."""
        t0 = time.perf_counter()
        self.log.info(kv("study_received", images=len(self.images), pipeline=self.pipeline,
                          bytes=self.buffered_bytes))
        if self.problem is not None or not self.images:
            output = StudyOutput(self.images, [], ok=self.problem is None)
        else:
            try:
                output = self.runner(run_study, self.images, self.header, config=self.config,
                                     pipeline=self.pipeline, study_id=self.study_id,
                                     name_from_header=self.name_from_header)
            except Exception as exc:  # the pool is shut down, or similar
                output = StudyOutput(self.images, [f"perfmoco: not processed ({exc})"], ok=False)
        for img in output.images:
            self.out.image(img)
        for text in output.texts:
            self.out.text(text)
        self.closed = True
        self.out.close()
        why = {} if output.ok else {"reason": (output.texts or [self.problem or "?"])[0][:200]}
        named = {"study": output.name} if output.name else {}  # as its results name it
        self.log.info(kv("study_done", ok=output.ok, images_out=len(output.images),
                          seconds=time.perf_counter() - t0, **named, **why))
        return output

    def abort(self, reason: str) -> None:
        """The stream broke: explain, pass the originals back, CLOSE (best effort)."""
        if self.closed:
            return
        self.closed = True
        self.log.warning(kv("stream_error", reason=reason, images=len(self.images)))
        try:
            self.out.text(f"perfmoco ERROR: {reason}; the {len(self.images)} images received "
                          "are passed back unprocessed")
            for img in self.images:
                self.out.image(img)
            self.out.close()
        except OSError as exc:
            self.log.info(kv("client_gone", error=exc))


