"""One study through the whole product: validate, correct every slice, quantify.

:func:`process_study` is what the CLI, the MRD server, the Gadgetron gadget
and the batch runner call.  It never raises for problems with the data or a
stage: each problem is recorded in :attr:`StudyResult.messages` and the
originals always stay in the result, so no image is ever lost.
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import logging
import time
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np

from perfmoco.config import Config
from perfmoco.frames import blank_frames
from perfmoco.logs import log_failure
from perfmoco.moco.result import MocoResult
from perfmoco.study import PerfusionStudy, SliceRole, StudyError

__all__ = ["Method", "StudyResult", "load_corrector", "process_study", "stack_locations"]

log = logging.getLogger(__name__)


class Method(str, enum.Enum):
    """Motion-correction methods."""

    NONE = "none"
    DL = "dl"
    ITERATIVE = "iterative"


@dataclasses.dataclass
class StudyResult:
    """Everything one study produced.

    Attributes
    ----------
    study : PerfusionStudy
        The study as received (originals, never modified).
    moco : list of MocoResult or None
        Per entry of ``study.slices``: the correction, ``None`` where it failed
        or was not run.
    quant : Any
        ``perfmoco.quant.QuantResult`` or ``None`` when not run or failed.
    method : Method
    messages : list of str
        Problems met on the way, for the user (log, TEXT messages, report).
    timings_s : dict of str to float
        Wall time per stage, s.
    weights : str
        The motion-correction weights that ran (``shipped`` or their folder, and a hash of
        the files); ``""`` where none ran.
    """

    study: PerfusionStudy
    moco: list[MocoResult | None]
    quant: Any = None
    method: Method = Method.DL
    messages: list[str] = dataclasses.field(default_factory=list)
    timings_s: dict[str, float] = dataclasses.field(default_factory=dict)
    weights: str = ""
    #: Each slice's LV as the correction found it on the uncorrected series (its
    #: ``LvLocation``, checked against the stack; None: not located).
    lv_locations: list = dataclasses.field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when every stage that was asked for ran without a problem."""
        return not self.messages

    def corrected_study(self) -> PerfusionStudy:
        """The study with each slice's dynamics and PD frames replaced by the corrected ones."""
        slices = []
        for s, m in zip(self.study.slices, self.moco):
            if m is None:
                slices.append(s)
            else:
                pd = m.pd_corrected if m.pd_corrected.shape[0] else s.pd_images
                slices.append(s.replace(images=m.corrected, pd_images=pd))
        return self.study.replace_slices(slices)

    def _per_slice(self, field: str, *, highres_only: bool = False) -> dict[int, np.ndarray]:
        return {
            s.slice_index: getattr(m, field)
            for s, m in zip(self.study.slices, self.moco)
            if m is not None and (s.role is SliceRole.HIGHRES or not highres_only)
        }

    def lv_hints(self) -> dict[int, tuple[float, float]]:
        """Per high-resolution ``slice_index``: where the correction found the LV, moved
        into the corrected frame (pixels), for the quantification's own search.
        """
        out = {}
        for s, m, loc in zip(self.study.slices, self.moco, self.lv_locations):
            if m is None or loc is None or s.role is not SliceRole.HIGHRES:
                continue
            t = min(max(int(loc.peak_index), 0), m.displacement.shape[0] - 1)
            iy, ix = (min(max(int(round(v)), 0), n - 1)
                      for v, n in zip(loc.centre_yx, m.displacement.shape[2:]))
            d = m.displacement[t, :, iy, ix]  # pull-back: corrected p shows raw p + d
            out[s.slice_index] = (float(loc.centre_yx[0] - d[0]), float(loc.centre_yx[1] - d[1]))
        return out

    def qc_flags(self) -> dict[int, np.ndarray]:
        """QC-flagged dynamics per high-resolution ``slice_index``."""
        return self._per_slice("qc", highres_only=True)

    def summary_text(self) -> str:
        """A short plain-text summary: what ran, how long, problems, MBF segments."""
        lines = [f"perfmoco: study {self.study.study_id}, method {self.method.value}"
                 + (f", weights {self.weights}" if self.weights else "")]
        # a bare series file (one slice, no MRD header) has no times of its own
        timed = self.study.mrd_header is not None or len(self.study.slices) > 1
        for s, m in zip(self.study.slices, self.moco):
            state = "not corrected" if m is None else f"corrected, {int(m.qc.sum())} QC-flagged"
            lines.append(f"  {s.name}: {_protocol(s, timed)}, {state}")
        if self.quant is not None and hasattr(self.quant, "summary_text"):
            lines.append(self.quant.summary_text())
        for k, v in self.timings_s.items():
            lines.append(f"  time {k}: {v:.2f} s")
        shown = set(getattr(self.quant, "warnings", None) or [])  # already in the MBF summary
        lines.extend(f"  problem: {msg}" for msg in self.messages if msg not in shown)
        return "\n".join(lines)

    def to_images(self, config: Config | None = None, originals: list | None = None) -> list:
        """All images to send back: originals, corrected series, MBF maps (ismrmrd.Image).

        ``originals``: the images as received, passed back untouched (default: rebuilt
        from the study).
        """
        from perfmoco.io.outputs import result_to_images

        return result_to_images(self, config=(config or Config()).mrd, originals=originals)


def _protocol(s, timed: bool) -> str:
    """A slice's dynamics, their interval (``timed``), PD frames and saturation time (with
    its source).
    """
    text = f"{s.n_dynamics} dynamics"
    text += f" every {s.interval_s:.2f} s" if timed and s.n_dynamics > 1 else ""
    text += f", {s.pd_images.shape[0]} PD frames"
    if s.saturation_time_s:
        text += f", TS {1000 * s.saturation_time_s:.3g} ms"
        text += f" ({s.saturation_time_source})" if s.saturation_time_source else ""
    elif timed:
        text += ", no TS in the data (quantification names the default it used)"
    return text


def load_corrector(config: Config):
    """The motion corrector of these settings, loaded once per process.

    A server or gadget reuses it from study to study: the weights are read once,
    and with ``moco.compile`` the networks are compiled once (see
    :func:`perfmoco.session.warm_up`).
    """
    return _corrector_for(config.moco)


@functools.lru_cache(maxsize=2)
def _corrector_for(moco):
    from perfmoco.moco.pipeline import MotionCorrector

    return MotionCorrector.load(moco.weights_dir or None, device=moco.device, config=moco)


def stack_locations(study: PerfusionStudy, config: Config) -> list:
    """Each slice's LV, checked against the other slices' (None: found per slice).

    What :func:`process_study` hands the motion correction (``lv=``).
    """
    if config.moco.stack_lv_tolerance_mm <= 0 or len(study.slices) < 3:
        return [None] * len(study.slices)
    from perfmoco.moco.stack import locate_lv_stack

    try:
        return locate_lv_stack(study.slices, tolerance_mm=config.moco.stack_lv_tolerance_mm)
    except Exception as exc:  # a heuristic failing must not stop the correction
        log.warning("LV stack check failed (%s); each slice on its own", exc)
        return [None] * len(study.slices)


def _correct(study: PerfusionStudy, method: Method, config: Config, result: StudyResult, step):
    out = _corrections(study, method, config, result, step)
    for s, m in zip(study.slices, out):  # lost frames: QC-flagged whatever the method
        blank = np.flatnonzero(blank_frames(s.images))
        if blank.size and m is not None:
            m.qc[blank] = True
            result.messages.append(f"{s.name}: blank (constant) dynamics {blank.tolist()} "
                                   "(frames lost before perfmoco): sent back as received, "
                                   "QC-flagged and left out of the fits")
    return out


def _corrections(study: PerfusionStudy, method: Method, config: Config, result: StudyResult,
                 step) -> list:
    """Every slice's :class:`MocoResult` by ``method``; on ``result`` it records the
    weights used, the LV locations the slices were checked against (``lv_locations``,
    for :meth:`StudyResult.lv_hints`) and a message for each slice that failed.
    """
    if method is Method.NONE:
        from perfmoco.moco.pipeline import correct_series

        return [correct_series(s, method="none", config=config.moco) for s in study.slices]
    if method is Method.ITERATIVE:
        from perfmoco.moco.iterative import correct_iterative

        run = functools.partial(correct_iterative, config=config.moco)
    else:
        corrector = load_corrector(config)
        run, result.weights = corrector.correct, getattr(corrector, "weights_id", "")
    from perfmoco.moco.whole_study import correct_slices

    def failed(s, exc):
        result.messages.append(f"{s.name}: motion correction failed ({exc}); originals kept")
        log.warning("%s: motion correction failed: %s", s.name, exc)

    result.lv_locations = stack_locations(study, config)
    return correct_slices(study, run, result.lv_locations, config=config.moco,
                          follow_tissue=method is Method.DL, failed=failed, step=step)


def process_study(
    study: PerfusionStudy,
    *,
    config: Config | None = None,
    method: Method | str = Method.DL,
    quantify: bool = True,
    progress: Callable[[str], None] | None = None,
) -> StudyResult:
    """Correct and quantify one study; never lose the originals.

    Parameters
    ----------
    study : PerfusionStudy
        The received study.
    config : Config, keyword-only
        All settings (default: the packaged defaults).
    method : {'dl', 'iterative', 'none'}, keyword-only
        Motion-correction method.
    quantify : bool, keyword-only
        Also compute MBF maps (needs an AIF slice).
    progress : callable, keyword-only, optional
        Called with a short text after each step.

    Returns
    -------
    StudyResult
        Always returned; problems are in ``messages``.
    """
    config = config or Config()
    method = Method(method)
    step = progress or (lambda _msg: None)
    study = study.with_finite_pixels()
    result = StudyResult(study=study, moco=[None] * len(study.slices), method=method)
    for note in study.notes:  # what was done to the data as received
        log.warning("%s", note)
        result.messages.append(note)
    try:
        study.validate(min_dynamics=config.mrd.min_dynamics)
    except StudyError as exc:
        result.messages.append(f"study not processed: {exc}; originals passed through")
        return result

    t0 = time.perf_counter()
    try:
        result.moco = _correct(study, method, config, result, step)
    except Exception as exc:  # a failing model load must not lose the study
        log_failure(log, "motion correction failed")
        result.messages.append(f"motion correction failed ({exc}); originals kept")
    result.timings_s["motion correction"] = time.perf_counter() - t0

    if quantify:
        t0 = time.perf_counter()
        if study.aif is None:
            result.messages.append("no AIF slice in the study: MBF maps not computed")
        else:
            try:
                from perfmoco.quant import quantify_study

                with warnings.catch_warnings():  # logged and kept in messages: not twice
                    warnings.simplefilter("ignore", UserWarning)
                    result.quant = quantify_study(
                        result.corrected_study(),
                        config=config.quant,
                        qc=result.qc_flags() if config.quant.exclude_qc_frames else None,
                        displacements=result._per_slice("displacement"),
                        pd_displacements=result._per_slice("pd_displacement"),
                        lv_hints=result.lv_hints(),
                    )
                result.messages.extend(getattr(result.quant, "warnings", []) or [])
                step("quantified MBF")
            except StudyError as exc:  # the study cannot be quantified: say why, no traceback
                log.warning("quantification failed: %s", exc)
                result.messages.append(f"MBF quantification failed ({exc})")
            except Exception as exc:  # quantification must not lose the corrected images
                log.exception("quantification failed")
                result.messages.append(f"MBF quantification failed ({exc})")
        result.timings_s["quantification"] = time.perf_counter() - t0
    return result
