"""``perfmoco evaluate``: the paper's comparison on a phantom cohort, with ground truth.

:func:`evaluate` generates (or reads) a cohort of phantom studies, corrects
every slice with each method, quantifies MBF, computes the paper's metrics
and the ground-truth metrics (:mod:`perfmoco.metrics`) per study, slice and
method, and writes a paper-shaped table, Wilcoxon signed-rank p-values,
Shapiro-Wilk normality tests, a boxplot figure like the paper's Figure 3,
per-study CSV files, runtimes and ``results.md`` (:mod:`.report`).

Studies run in parallel on a Dask ``LocalCluster`` (processes, one thread
each) or on a given scheduler; ``workers=0`` runs them in this process.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from perfmoco.config import Config
from perfmoco.evaluate.report import write_report
from perfmoco.evaluate.study import BUILTIN_METHODS, evaluate_study
from perfmoco.logs import quiet
from perfmoco.moco.result import MocoResult
from perfmoco.study import SliceSeries

__all__ = ["BUILTIN_METHODS", "EvaluationResult", "evaluate", "evaluate_study"]

log = logging.getLogger(__name__)

MethodFn = Callable[[SliceSeries], MocoResult]
#: Thread-pool sizes set to 1 in the worker processes (torch, BLAS, ITK are set in the task).
_THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


@dataclasses.dataclass
class EvaluationResult:
    """What :func:`evaluate` measured and wrote.

    Attributes
    ----------
    out_dir : Path
    methods : list of str
    slice_rows : list of dict
        One row per study, slice and method (``per_slice.csv``).
    segment_rows : list of dict
        SD and mean of pixel MBF per AHA segment (``segments.csv``).
    study_rows : list of dict
        Runtime per study and method (``runtime.csv``).
    table : list of dict
        The paper-shaped summary (``table.csv``, ``results.md``).
    pvalues : list of dict
        Wilcoxon signed-rank tests between methods (``wilcoxon.csv``).
    normality : list of dict
        Shapiro-Wilk tests per metric and method (``shapiro.csv``).
    files : dict of str to Path
        Every file written, by short name.
    """

    out_dir: Path
    methods: list[str]
    slice_rows: list[dict]
    segment_rows: list[dict]
    study_rows: list[dict]
    table: list[dict]
    pvalues: list[dict]
    normality: list[dict]
    files: dict[str, Path]


def _check_methods(methods) -> tuple[list[str], dict[str, MethodFn]]:
    """Method names in order, and the custom callables among them."""
    if isinstance(methods, str):
        methods = [m.strip() for m in methods.split(",") if m.strip()]
    if isinstance(methods, Mapping):
        names = list(methods)
        custom = {k: v for k, v in methods.items() if v is not None}
    else:
        names, custom = list(methods), {}
    if not names:
        raise ValueError("methods is empty; give at least one of none, dl, iterative")
    if len(set(names)) != len(names):
        raise ValueError(f"methods are repeated: {names}")
    for name in names:
        if name not in custom and name not in BUILTIN_METHODS:
            raise ValueError(f"unknown method {name!r}; known: {', '.join(BUILTIN_METHODS)}")
    return names, custom


def _preflight(names: Sequence[str], custom: Mapping, config: Config) -> None:
    """Fail before any work when a built-in method cannot run at all."""
    if "iterative" in names and "iterative" not in custom:
        from perfmoco.moco import iterative

        iterative._itk()  # raises with the install hint
    if "dl" in names and "dl" not in custom:
        from perfmoco.moco.pipeline import MotionCorrector

        MotionCorrector.load(None, device="cpu", config=config.moco)  # names missing weights


def _cohort(n_studies: int | None, seed: int, cohort_dir: str | Path | None) -> list[dict]:
    if cohort_dir is None:
        if n_studies is None or n_studies < 1:
            raise ValueError(f"n_studies must be >= 1, got {n_studies}")
        return [{"seed": seed + i} for i in range(n_studies)]
    from perfmoco.phantom.files import truth_path

    folder = Path(cohort_dir)
    found = sorted(folder.glob("*.h5"))
    files = [p for p in found if truth_path(p).is_file()]
    if len(files) < len(found):  # said, not skipped silently
        log.warning("%s: %d study file(s) without a *.truth.npz left out: %s", folder,
                    len(found) - len(files), ", ".join(p.name for p in found if p not in files))
    if not files:
        raise FileNotFoundError(f"{folder}: no study files (*.h5) with a *.truth.npz next to them")
    return [{"path": str(p)} for p in files[: n_studies or None]]


def _run_local(specs, names, custom, config, opts, progress):
    from tqdm.auto import tqdm

    out = []
    for spec in tqdm(specs, desc="studies", unit="study", disable=not progress):
        out.append(evaluate_study(spec, names, custom, config, **opts))
    return out


def _run_dask(specs, names, custom, config, opts, progress, workers, scheduler):
    import dask.distributed  # noqa: F401  (its first import sets its loggers' levels)

    with quiet("distributed"):  # the cluster's start/stop chatter
        return _on_cluster(specs, names, custom, config, opts, progress, workers, scheduler)


def _on_cluster(specs, names, custom, config, opts, progress, workers, scheduler):
    from dask.distributed import Client, LocalCluster, as_completed
    from tqdm.auto import tqdm

    cluster = None
    if scheduler:
        client = Client(scheduler)
    else:
        cluster = LocalCluster(
            n_workers=workers, threads_per_worker=1, processes=True,
            dashboard_address=":0", silence_logs=logging.WARNING,
            env=dict.fromkeys(_THREAD_VARS, "1"),  # one core per worker, BLAS included
        )
        client = Client(cluster)
    try:
        futures = [
            client.submit(evaluate_study, spec, names, custom, config, pure=False, **opts)
            for spec in specs
        ]
        results = {}
        bar = tqdm(total=len(futures), desc="studies", unit="study", disable=not progress)
        for fut in as_completed(futures):
            results[fut.key] = fut.result()
            bar.update(1)
        bar.close()
        return [results[f.key] for f in futures]
    finally:
        client.close()
        if cluster is not None:
            cluster.close()


def evaluate(
    *,
    n_studies: int | None = 20,
    seed: int = 0,
    methods: Sequence[str] | Mapping[str, MethodFn] | str = ("none", "dl"),
    out_dir: str | Path = "out/evaluate",
    workers: int | None = None,
    progress: bool = True,
    cohort_dir: str | Path | None = None,
    motion: str = "breathing",
    n_dynamics: int | None = None,
    quantify: bool = True,
    scheduler: str | None = None,
    config: Config | None = None,
) -> EvaluationResult:
    """Run the paper's comparison on a phantom cohort and write the results.

    Parameters
    ----------
    n_studies : int, keyword-only
        Studies to generate (seeds ``seed .. seed + n_studies - 1``), or the
        most to read from ``cohort_dir`` (``None`` = all).
    seed : int, keyword-only
        Seed of the first generated study.
    methods : sequence of str, str or mapping, keyword-only
        Built-in methods ``"none"``, ``"dl"``, ``"iterative"`` (a sequence or
        ``"none,dl"``), or ``{name: fn}`` with ``fn(series) -> MocoResult``
        (a name from the built-ins maps to its built-in when ``fn`` is None).
        The first method is the baseline of the p-values.
    out_dir : str or Path, keyword-only
        Folder for the tables, figure and ``results.md`` (created).
    workers : int, keyword-only, optional
        Dask worker processes (one thread each); default 2, or the CPUs
        available if fewer.  ``0`` runs everything in this process.
    progress : bool, keyword-only
        Show a progress bar.
    cohort_dir : str or Path, keyword-only, optional
        Read ``*.h5`` studies with ``*.truth.npz`` (``perfmoco phantom``
        output) instead of generating them.
    motion : str, keyword-only
        Motion of generated studies (``"breathing"``, ``"breathing+gasp"``, ...).
    n_dynamics : int, keyword-only, optional
        Dynamics of generated studies (default: the phantom's 60-75).
    quantify : bool, keyword-only
        Also quantify MBF (MBF metrics are NaN otherwise).
    scheduler : str, keyword-only, optional
        Address of a Dask scheduler to use instead of a local cluster.
    config : Config, keyword-only, optional
        Settings (motion correction, quantification); default the packaged ones.

    Returns
    -------
    EvaluationResult

    Raises
    ------
    ValueError
        Unknown or repeated method, bad ``n_studies`` / ``workers``.
    FileNotFoundError
        Missing DL weights, or no study in ``cohort_dir``.
    perfmoco.moco.iterative.IterativeUnavailableError
        ``iterative`` asked for without itk-elastix installed.
    """
    config = config or Config()
    names, custom = _check_methods(methods)
    _preflight(names, custom, config)
    specs = _cohort(n_studies, seed, cohort_dir)
    if workers is None:
        workers = min(2, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 2)
    if workers < 0:
        raise ValueError(f"workers must be >= 0, got {workers}")
    opts = {"motion": motion, "n_dynamics": n_dynamics, "quantify": quantify}
    if workers == 0 and not scheduler:
        per_study = _run_local(specs, names, custom, config, opts, progress)
    else:
        per_study = _run_dask(specs, names, custom, config, opts, progress, workers, scheduler)
    slice_rows = [r for s in per_study for r in s["slices"]]
    segment_rows = [r for s in per_study for r in s["segments"]]
    study_rows = [r for s in per_study for r in s["studies"]]
    out = Path(out_dir)
    rep = write_report(out, names, slice_rows, segment_rows, study_rows,
                       command=_command_line(len(specs), seed, names, cohort_dir, motion))
    return EvaluationResult(out_dir=out, methods=names, slice_rows=slice_rows,
                            segment_rows=segment_rows, study_rows=study_rows, **rep)


def _command_line(n, seed, names, cohort_dir, motion) -> str:
    cmd = f"perfmoco evaluate --studies {n} --seed {seed} --methods {','.join(names)}"
    if cohort_dir is not None:
        cmd += f" --cohort {cohort_dir}"
    if motion != "breathing":
        cmd += f" --motion {motion}"
    return cmd
