"""``perfmoco batch``: a folder of studies through the pipeline on Dask distributed.

Every MRD file (``.h5``, ``.hdf5``, ``.mrd``) and bare series (``.npy``,
``.nii``, ``.nii.gz``) at the top level of the input folder is one study
(``*.truth.npz`` phantom truth and other files are ignored).  Each study runs
as one Dask task (:func:`process_file`) on a local cluster of processes, or on
the workers of an existing scheduler (the output folder must then be on a
file system every worker can write to).

Per study, ``OUT_DIR/<study>/`` receives ``result.h5`` (originals, corrected
series and MBF maps as MRD), ``summary.json`` and, last, a ``DONE`` marker;
every file is written to a temporary name and renamed, so an interrupted run
leaves no half-written result.  A study whose ``DONE`` marker matches its
input (size and modification time) and its run (:func:`run_key`: the method, the
settings, the report, the pixel spacing given and the version) is skipped on the next
run; otherwise its earlier results are removed before it is run again.  A failing
study never stops the others: its error goes into its summary and the cohort
tables ``OUT_DIR/cohort.csv`` (one row per study) and
``OUT_DIR/cohort_segments.csv`` (one row per study, slice and AHA segment).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import os
import shutil
import sys
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from perfmoco import __version__
from perfmoco.batch_inputs import INPUT_SUFFIXES, find_inputs, study_names
from perfmoco.config import Config
from perfmoco.io.paths import check_pixel_spacing
from perfmoco.logs import log_failure, quiet, study_named
from perfmoco.report.cohort import json_safe, write_cohort_tables
from perfmoco.study import StudyError

__all__ = [
    "INPUT_SUFFIXES",
    "BatchResult",
    "find_inputs",
    "process_file",
    "run_batch",
    "write_cohort_tables",
]

log = logging.getLogger(__name__)

DONE_MARKER = "DONE"
#: A study's status where MBF maps were asked for and none could be made.
NO_MBF = "no_mbf"
SUMMARY_NAME = "summary.json"
RESULT_NAME = "result.h5"


@dataclasses.dataclass
class BatchResult:
    """What a batch run did.

    Attributes
    ----------
    summaries : list of dict
        One summary per input study (as in its ``summary.json``), input order.
    cohort_csv, segments_csv : Path
        The cohort tables.
    wall_s : float
        Wall time of the run, s.
    """

    summaries: list[dict[str, Any]]
    cohort_csv: Path
    segments_csv: Path
    wall_s: float

    @property
    def failed(self) -> list[dict[str, Any]]:
        """Summaries of the studies that produced no result."""
        return [s for s in self.summaries if s["status"] == "failed"]

    @property
    def without_mbf(self) -> list[dict[str, Any]]:
        """Summaries of the studies corrected but not quantified (e.g. no AIF slice)."""
        return [s for s in self.summaries if s["status"] == NO_MBF]

    def summary_text(self) -> str:
        """A few lines for the terminal: counts, failures, where the tables are."""
        n = len(self.summaries)
        resumed = sum(bool(s.get("resumed")) for s in self.summaries)
        counts = {k: sum(s["status"] == k for s in self.summaries)
                  for k in ("ok", "warnings", NO_MBF)}
        lines = [
            f"perfmoco batch: {n} studies in {self.wall_s:.1f} s: {counts['ok']} ok, "
            f"{counts['warnings']} with warnings, {counts[NO_MBF]} without MBF maps, "
            f"{len(self.failed)} failed"
            + (f" ({resumed} already done, skipped)" if resumed else "")
        ]
        lines += [f"  NO MBF {s['study']}: {(s.get('messages') or ['?'])[0]}"
                  for s in self.without_mbf]
        lines += [f"  FAILED {s['study']}: {s['error']}" for s in self.failed]
        lines.append(f"  cohort tables: {self.cohort_csv} and {self.segments_csv}")
        return "\n".join(lines)


def _stamp(path: Path) -> dict[str, int]:
    st = path.stat()
    return {"size": int(st.st_size), "mtime_ns": int(st.st_mtime_ns)}


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".part")
    tmp.write_text(text)
    os.replace(tmp, path)


def run_key(config: Config, *, method: str, quantify: bool, report: bool,
            pixel_spacing_mm: float | None) -> dict[str, Any]:
    """What a study's results depend on besides its file: a finished study is redone
    when any of it differs (the method, the settings, the report, the version).
    """
    settings = dataclasses.asdict(config)
    settings.get("moco", {}).pop("threads", None)  # how fast, not what comes out
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode())
    return {"method": method, "quantify": quantify, "report": report,
            "pixel_spacing_mm": pixel_spacing_mm, "settings": digest.hexdigest()[:16],
            "perfmoco_version": __version__}


def _is_done(study_dir: Path, stamp: dict[str, int], key: dict[str, Any]
             ) -> dict[str, Any] | None:
    """The earlier summary when the study finished for this same input and run, else None."""
    try:
        marker = json.loads((study_dir / DONE_MARKER).read_text())
        summary = json.loads((study_dir / SUMMARY_NAME).read_text())
    except (OSError, ValueError):
        return None
    if (marker.get("input") != stamp or marker.get("run") != json_safe(key)
            or not (study_dir / RESULT_NAME).is_file()):
        return None
    return summary


def _summarise(result, name: str) -> dict[str, Any]:
    import numpy as np

    from perfmoco.report.data import mbf_stats, slice_metrics, slice_views

    views = slice_views(result)
    slices = [slice_metrics(v) for v in views]
    hi = [v for v in views if v.mbf is not None]
    if hi:
        vals = [
            v.mbf[v.mbf_mask()] for v in hi
            if v.mbf.shape == v.myocardium.shape
        ]
        pooled = np.concatenate(vals) if vals else np.zeros(0)
        mbf = mbf_stats(pooled, np.ones(pooled.shape, bool))
    else:
        mbf = mbf_stats(None, None)
    segments = [dict(r) for r in getattr(result.quant, "segments", None) or []]
    burden = getattr(result.quant, "ischemic_burden", None)
    burden = burden() if callable(burden) else (float("nan"), 0)
    return {
        "study": name,
        "study_id": result.study.study_id,
        "method": result.method.value,
        "weights": result.weights,
        "messages": list(result.messages),
        "timings_s": dict(result.timings_s),
        "slices": slices,
        "mbf": mbf,
        "ischemic_burden": burden[0] if burden[1] else float("nan"),
        "segments": segments,
        "saturation_efficiency": dict(getattr(result.quant, "saturation_efficiency", {}) or {}),
        "field_strength_t": result.study.field_strength_t,
    }


def process_file(
    path: str | Path,
    out_dir: str | Path,
    *,
    config: Config | None = None,
    method: str = "dl",
    quantify: bool = True,
    report: bool = False,
    name: str | None = None,
    pixel_spacing_mm: float | None = None,
) -> dict[str, Any]:
    """Run one study file through the pipeline and write its outputs; never raises.

    Parameters
    ----------
    path : str or Path
        An MRD ``.h5`` study or a bare ``.npy`` / NIfTI series.
    out_dir : str or Path
        The batch output folder; this study's files go to ``out_dir/<name>/``.
    config : Config, keyword-only
    method : {'dl', 'iterative', 'none'}, keyword-only
    quantify : bool, keyword-only
        Compute MBF maps (needs an AIF slice).
    report : bool, keyword-only
        Also write the QA report (``report/report.html``) and add its images
        to ``result.h5``.
    name : str, keyword-only, optional
        Output folder name (default: the file name without its suffix).
    pixel_spacing_mm : float, keyword-only, optional
        Pixel size of bare ``.npy`` / NIfTI series (MRD files carry their own).

    Returns
    -------
    dict
        The study's summary (also written to ``summary.json``): ``status``
        is ``'ok'``, ``'warnings'`` (results written, problems in
        ``messages``), ``'no_mbf'`` (corrected images written, but MBF maps were
        asked for and none could be made; ``messages`` say why) or ``'failed'``
        (no result; ``error`` says why).
    """
    from perfmoco.io.files import SERIES_SUFFIXES, read_study, write_mrd_images
    from perfmoco.io.mrd import study_header
    from perfmoco.io.outputs import output_config
    from perfmoco.pipeline import process_study

    t0 = time.perf_counter()
    config = config or Config()
    path = Path(path)
    name = name or study_names([path])[0]
    study_dir = Path(out_dir) / name
    summary: dict[str, Any] = {
        "study": name, "input": str(path), "status": "failed", "error": "", "method": method,
        "resumed": False, "perfmoco_version": __version__,
    }
    with study_named(name):  # its log lines name it (workers run studies side by side)
        key = run_key(config, method=method, quantify=quantify, report=report,
                      pixel_spacing_mm=pixel_spacing_mm)
        try:
            study_dir.mkdir(parents=True, exist_ok=True)
            (study_dir / DONE_MARKER).unlink(missing_ok=True)
            # an earlier run's results go: a failed or different run must not leave them
            (study_dir / RESULT_NAME).unlink(missing_ok=True)
            shutil.rmtree(study_dir / "report", ignore_errors=True)
            bare = path.name.lower().endswith(SERIES_SUFFIXES)
            study = read_study(path, config=config.mrd,
                               pixel_spacing_mm=pixel_spacing_mm if bare else None)
            stamp = _stamp(path)  # after reading: the MRD reader may touch the file's mtime
            with warnings.catch_warnings(record=True) as caught:  # worker-local: into the summary
                warnings.simplefilter("always")
                result = process_study(study, config=config, method=method, quantify=quantify)
            for w in caught:
                if str(w.message) not in result.messages:
                    result.messages.append(str(w.message))
            images = result.to_images(config)
            if report:
                try:  # a report that cannot be drawn must not lose the study's results
                    from perfmoco.report import report_images, write_report

                    page = write_report(result, study_dir / "report", title=name)
                    summary["report"] = str(page.relative_to(study_dir))
                    images += report_images(result, config=output_config(config.mrd, result.study))
                except Exception as exc:
                    log_failure(log, "%s: QA report failed", path)
                    result.messages.append(f"QA report failed ({type(exc).__name__}: {exc})")
            summary.update(_summarise(result, name))
            write_mrd_images(study_dir / RESULT_NAME, study_header(study), images)
            summary["result"] = RESULT_NAME
            summary["status"] = (NO_MBF if quantify and not getattr(result.quant, "mbf_maps", None)
                                 else "warnings" if result.messages else "ok")
        except StudyError as exc:
            summary["error"] = str(exc)
        except Exception as exc:  # one study must never stop the batch
            log_failure(log, "%s: failed", path)
            summary["error"] = f"{type(exc).__name__}: {exc}"
        summary["runtime_s"] = time.perf_counter() - t0
        try:
            _write_atomic(study_dir / SUMMARY_NAME, json.dumps(json_safe(summary), indent=1))
            if summary["status"] != "failed":
                _write_atomic(study_dir / DONE_MARKER,
                              json.dumps(json_safe({"input": stamp, "run": key})))
        except OSError as exc:  # the first error, where there was one, stays first
            summary.update(status="failed", error="; ".join(
                e for e in (summary.get("error"), f"cannot write outputs: {exc}") if e))
    return json_safe(summary)


def _client(scheduler: str | None, workers: int | None):
    from dask.distributed import Client, LocalCluster

    if scheduler:
        return Client(scheduler, timeout="30s"), None
    n = workers or min(2, os.cpu_count() or 1)
    cluster = LocalCluster(
        n_workers=n, threads_per_worker=1, processes=True, dashboard_address=":0",
        silence_logs=logging.ERROR,
    )
    return Client(cluster), cluster


def run_batch(
    in_dir: str | Path,
    out_dir: str | Path,
    *,
    config: Config | None = None,
    method: str = "dl",
    scheduler: str | None = None,
    workers: int | None = None,
    quantify: bool = True,
    report: bool = False,
    client: Any = None,
    progress: bool = True,
    pixel_spacing_mm: float | None = None,
    inputs: Sequence[Path] | None = None,
) -> BatchResult:
    """Process every study of ``in_dir`` on Dask; skip the ones already done.

    Parameters
    ----------
    in_dir, out_dir : str or Path
        Folder of study files; folder for the results (created).
    config : Config, keyword-only
    method : {'dl', 'iterative', 'none'}, keyword-only
    scheduler : str, keyword-only, optional
        Address of a running Dask scheduler (``tcp://host:8786``); default: a
        local cluster of ``workers`` processes with one thread each.
    workers : int, keyword-only, optional
        Local worker processes (default ``min(2, cpu_count)``); each gets
        ``cpu_count // workers`` torch threads unless ``moco.threads`` is set.
    quantify, report : bool, keyword-only
        As in :func:`process_file`; ``report`` also writes ``OUT_DIR/index.html``.
    client : dask.distributed.Client, keyword-only, optional
        Use this client (and leave it open) instead of starting one.
    progress : bool, keyword-only
        Show a progress bar on stderr.
    pixel_spacing_mm : float, keyword-only, optional
        Pixel size of the bare ``.npy`` / NIfTI series (MRD files carry their own).
    inputs : sequence of Path, keyword-only, optional
        The study files, where the caller has listed them (default: :func:`find_inputs`).

    Returns
    -------
    BatchResult
    """
    from perfmoco.pipeline import Method

    t0 = time.perf_counter()
    method = Method(method).value
    if workers is not None and workers < 1:
        raise ValueError(f"workers must be at least 1, got {workers}")
    config = config or Config()
    out_dir = Path(out_dir)
    paths = list(inputs) if inputs is not None else find_inputs(in_dir)
    names = study_names(paths)
    out_dir.mkdir(parents=True, exist_ok=True)
    summaries: dict[str, dict[str, Any]] = {}
    todo = []
    key = run_key(config, method=method, quantify=quantify, report=report,
                  pixel_spacing_mm=pixel_spacing_mm)
    for path, name in zip(paths, names):
        done = _is_done(out_dir / name, _stamp(path), key)
        if done is not None:
            summaries[name] = {**done, "resumed": True}
        else:
            todo.append((path, name))
    if todo:
        if scheduler is None and client is None and config.moco.threads == 0:
            n = workers or min(2, os.cpu_count() or 1)
            threads = max(1, (os.cpu_count() or 1) // n)
            config = config.with_overrides({"moco.threads": threads})
        options = {"config": config, "method": method, "quantify": quantify, "report": report,
                   "pixel_spacing_mm": check_pixel_spacing(pixel_spacing_mm)}
        summaries.update(_run_tasks(todo, out_dir, options, scheduler, workers, client,
                                    progress))
    ordered = [summaries[n] for n in names]
    tables = write_cohort_tables(ordered, out_dir)
    result = BatchResult(ordered, tables[0], tables[1], time.perf_counter() - t0)
    if report:
        from perfmoco.report.cohort import write_cohort_index

        write_cohort_index(ordered, out_dir)
    return result


def _run_tasks(todo, out_dir, options, scheduler, workers, client,
               progress) -> dict[str, dict[str, Any]]:
    with contextlib.ExitStack() as stack:
        if client is None:  # our own client, closed (and its cluster) at the end
            import dask.distributed  # noqa: F401  (its first import sets its loggers' levels)

            stack.enter_context(quiet("distributed"))  # the cluster's start/stop chatter
            client, cluster = _client(scheduler, workers)
            if cluster is not None:
                stack.callback(cluster.close)
            stack.callback(client.close)
        return _gather(client, todo, out_dir, options, progress)


def _gather(client, todo, out_dir, options, progress) -> dict[str, dict[str, Any]]:
    """Submit every study, collect their summaries as they finish."""
    from dask.distributed import as_completed
    from tqdm import tqdm

    out: dict[str, dict[str, Any]] = {}
    futures = {
        client.submit(
            process_file, str(path.resolve()), str(out_dir.resolve()), **options,
            name=name, pure=False,
            key=f"perfmoco-study-{name}-{time.time_ns()}",
        ): (path, name)
        for path, name in todo
    }
    bar = tqdm(total=len(futures), desc="studies", unit="study", file=sys.stderr,
               disable=not progress)
    for fut in as_completed(futures):
        path, name = futures[fut]
        try:
            summary = fut.result()
        except Exception as exc:  # a worker died (KilledWorker) or lost contact
            summary = {"study": name, "input": str(path), "status": "failed",
                       "error": f"{type(exc).__name__}: {exc}", "method": options["method"]}
        out[name] = summary
        bar.set_postfix_str(f"{name}: {summary['status']}"[:50])
        bar.update(1)
    bar.close()
    return out
