"""perfmoco as a Gadgetron external-language (Python) gadget.

Chain usage (see ``config/perfmoco-chain-execute.xml``)::

    <external>
        <execute name="gadgets.perfmoco_gadget" target="perfmoco" type="python"/>
        <configuration>
            <property name="pipeline" value="perfmoco"/>       <!-- or perfmoco-moco -->
            <property name="server.method" value="dl"/>        <!-- any perfmoco.yaml key -->
        </configuration>
    </external>

Images are buffered per ``(image_series_index, slice)``; the study is
processed as soon as the MRD header's expected repetitions have arrived for
every slice (or at the end of the stream), and the originals, the corrected
series and the MBF maps are sent on.  Every other message goes straight
through (``connection.filter``).  Gadgetron refuses TEXT from an external
gadget, so problems go to the log (stderr) and to image meta
(``PERFMOCO_Status``, ``PERFMOCO_Message``; the summary in
``PERFMOCO_Summary`` on the maps): on perfmoco's outputs, the originals going on
as they came, and on the originals only where the study gave no outputs.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict

import ismrmrd

from perfmoco.config import Config, load_config
from perfmoco.session import PIPELINES, StudyOutput, kv, run_study, warm_up

__all__ = ["ExpectedStudy", "config_from_chain", "listen", "main", "perfmoco"]

log = logging.getLogger("perfmoco.gadget")


def config_from_chain(configuration) -> tuple[Config, str]:
    """Settings from a chain's ``<configuration>`` element.

    Parameters
    ----------
    configuration : xml.etree.ElementTree.Element or None
        ``connection.config``; ``<property name="section.key" value="..."/>``
        (or ``<property><name/><value/></property>``) override keys of
        ``config/perfmoco.yaml``; ``pipeline`` picks ``perfmoco`` /
        ``perfmoco-moco`` / ``passthrough``; ``config_file`` names a YAML file.

    Returns
    -------
    config : Config
    pipeline : str

    Raises
    ------
    perfmoco.config.ConfigError
        For unknown keys or values of the wrong type, or an unknown pipeline.
    """
    overrides: dict[str, str] = {}
    pipeline, config_file = "perfmoco", None
    for prop in [] if configuration is None else configuration.iter():
        if not str(prop.tag).endswith("property"):
            continue
        name = prop.get("name") or (prop.findtext("name") or "").strip()
        value = prop.get("value")
        value = (prop.findtext("value") or "").strip() if value is None else value
        if name == "pipeline":
            pipeline = value
        elif name == "config_file":
            config_file = value or None
        elif name:
            overrides[name] = value
    from perfmoco.config import ConfigError

    if pipeline not in PIPELINES:
        raise ConfigError(f"pipeline must be one of {sorted(PIPELINES)}, got {pipeline!r}")
    return load_config(config_file, overrides=overrides), pipeline


class ExpectedStudy:
    """When a study is complete, from the MRD header's encoding limits.

    Encoding 0 holds the high-resolution slices (``slice`` limits) and each
    further encoding one AIF slice (the dual-sequence layout); every slice
    expects ``repetition.maximum + 1`` images of its encoding (matched by
    matrix size, else the smallest count).  Without usable limits the study
    is complete only at the end of the stream.
    """

    def __init__(self, header) -> None:
        self.reps: dict[tuple[int, int], int] = {}
        self.n_slices = 0
        try:
            for k, enc in enumerate(header.encoding):
                lim = enc.encodingLimits
                n_rep = int(lim.repetition.maximum) + 1
                m = enc.reconSpace.matrixSize
                self.reps[(int(m.x), int(m.y))] = n_rep
                n_sl = int(lim.slice.maximum) - int(lim.slice.minimum) + 1
                self.n_slices += n_sl if k == 0 else 1
        except (AttributeError, TypeError, ValueError):
            self.reps, self.n_slices = {}, 0

    def complete(self, groups: dict[tuple[int, int], list[ismrmrd.Image]]) -> bool:
        """True when every expected slice has all its repetitions."""
        if not self.reps or len(groups) < self.n_slices:
            return False
        fallback = min(self.reps.values())
        for images in groups.values():
            nx, ny = images[0].matrix_size[:2]
            if len(images) < self.reps.get((nx, ny), fallback):
                return False
        return True


def _ours(img: ismrmrd.Image) -> bool:
    """Whether ``img`` is one of perfmoco's outputs (a step of ours in its history)."""
    history = img.meta.get("GADGETRON_ImageProcessingHistory", [])
    return any(str(h).startswith("PERFMOCO") for h in
               ([history] if isinstance(history, str) else history))


def _tag(output: StudyOutput, pipeline: str) -> None:
    """The study's status on perfmoco's outputs, or on the originals where there are none
    (a failed study: the originals are all the console gets, and the reason rides on them).
    """
    status = "ok" if output.ok and not output.problems else ("partial" if output.ok else "failed")
    message = [p.removeprefix("perfmoco WARNING: ") for p in output.problems] or ["none"]
    for img in [i for i in output.images if _ours(i)] or output.images:
        img.meta["PERFMOCO_Status"] = status
        img.meta["PERFMOCO_Pipeline"] = pipeline
        if output.problems:
            img.meta["PERFMOCO_Message"] = message
        if output.summary and "Flow_Map" in str(img.meta.get("GADGETRON_DataRole", "")):
            img.meta["PERFMOCO_Summary"] = output.summary


def _process(connection, images, header_xml, config, pipeline, study_no) -> None:
    t0 = time.perf_counter()
    study_id = f"gadget{study_no}"
    output = run_study(images, header_xml, config=config, pipeline=pipeline, study_id=study_id,
                       name_from_header=True)  # results named after the scan
    for text in output.problems:
        log.warning(kv("problem", study=study_id, text=text))
    if output.summary:
        log.info("%s\n%s", kv("summary", study=study_id), output.summary)
    _tag(output, pipeline)
    for img in output.images:
        connection.send(img)
    log.info(kv("study_sent", study=study_id, images_in=len(images),
                images_out=len(output.images), seconds=time.perf_counter() - t0,
                **({"name": output.name} if output.name else {})))  # as its results name it


def perfmoco(connection) -> None:
    """Gadgetron entry point: buffer images, process complete studies, pass the rest.

    Parameters
    ----------
    connection : gadgetron.external.Connection
        Gives ``config`` (the chain's ``<configuration>``), ``header`` (parsed
        MRD header), ``raw_bytes.header``, iteration and ``send``.
    """
    try:
        config, pipeline = config_from_chain(connection.config)
    except ValueError as exc:  # ConfigError: report and keep the scan flowing
        log.error(kv("bad_configuration", error=exc, fallback="passthrough"))
        config, pipeline = load_config(), "passthrough"
    raw = getattr(getattr(connection, "raw_bytes", None), "header", None)
    header_xml = raw.decode("utf-8", "replace").rstrip("\x00") if isinstance(raw, bytes) else raw
    expected = ExpectedStudy(connection.header)
    log.info(kv("started", pipeline=pipeline, method=config.server.method,
                expected_slices=expected.n_slices))
    if pipeline != "passthrough":  # import torch & co. now, not after the last image
        log.info(kv("warm_up", seconds=warm_up(config)))
    connection.filter(ismrmrd.Image)  # acquisitions, waveforms, arrays: straight through
    groups: dict[tuple[int, int], list[ismrmrd.Image]] = defaultdict(list)
    order: list[ismrmrd.Image] = []
    studies = 0
    try:
        for image in connection:
            groups[(int(image.image_series_index), int(image.slice))].append(image)
            order.append(image)
            if expected.complete(groups):
                studies += 1
                _process(connection, order, header_xml, config, pipeline, studies)
                groups.clear()
                order = []
    except Exception:
        log.exception(kv("stream_failed", buffered=len(order)))
        raise
    if order:  # end of stream before the header's count: process what came
        studies += 1
        log.info(kv("end_of_stream", buffered=len(order)))
        _process(connection, order, header_xml, config, pipeline, studies)


def listen(*, host: str = "127.0.0.1", port: int = 18000, max_connections: int | None = None):
    """Serve Gadgetron ``<connect port=.../>`` chains: one thread per connection.

    Parameters
    ----------
    host : str, keyword-only
        Address to bind (loopback by default; ``0.0.0.0`` in a container).
    port : int, keyword-only
        Port; 0 picks a free one (logged as ``event=listening``).
    max_connections : int, keyword-only, optional
        Stop after this many connections (tests); default: serve until Ctrl-C.
    """
    import socket
    import threading

    from gadgetron.external import Connection

    def handle(sock: socket.socket) -> None:
        try:
            with Connection(sock) as connection:
                perfmoco(connection)
        except Exception:  # one failing scan must not stop the listener
            log.exception(kv("connection_failed"))

    with socket.create_server((host, port)) as server:
        log.info(kv("listening", host=host, port=server.getsockname()[1]))
        threads, served = [], 0
        while max_connections is None or served < max_connections:
            sock, _ = server.accept()
            served += 1
            thread = threading.Thread(target=handle, args=(sock,), name=f"perfmoco-gadget-{served}")
            thread.start()
            threads = [t for t in threads if t.is_alive()] + [thread]
        for thread in threads:
            thread.join()


def main(argv: list[str] | None = None) -> int:
    """``python -m gadgets.perfmoco_gadget [--host H] [--port P]``: the connect-mode process."""
    import argparse
    import sys

    p = argparse.ArgumentParser(description=main.__doc__)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=18000)
    p.add_argument("--max-connections", type=int, default=None)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s %(message)s")
    try:
        listen(host=args.host, port=args.port, max_connections=args.max_connections)
    except KeyboardInterrupt:
        log.info(kv("interrupted"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
