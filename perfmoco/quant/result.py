"""The result of :func:`perfmoco.quant.quantify_study`: maps, segment table, summary."""

from __future__ import annotations

import dataclasses

import numpy as np

from perfmoco.quant.segments import neighbourhood_median

__all__ = ["QuantResult"]


@dataclasses.dataclass
class QuantResult:
    """MBF maps and segment table of one study; dicts are keyed by high-res ``slice_index``.

    Attributes
    ----------
    mbf_maps : dict of int to ndarray, shape (Y, X), float32, ml/min/g
        Pixel MBF, 0 outside the myocardium.
    fit_quality : dict of int to ndarray, shape (Y, X), float32
        Fit r2 per pixel (0 outside the myocardium).
    flagged : dict of int to ndarray, shape (Y, X), bool
        Myocardial pixels whose MBF is unreliable (poor fit, fit at a bound,
        MBF above ``max_mbf``, saturated signal); left out of the segment table.
    myocardium : dict of int to ndarray, shape (Y, X), bool
    aha : dict of int to ndarray, shape (Y, X), int16
        AHA segment 1-16, 0 outside the myocardium.
    rv_insertion : dict of int to ndarray, shape (2, 2), float64
        ``[[y_ant, x_ant], [y_inf, x_inf]]`` pixels (NaN where inferred).
    segments : list of dict
        Rows of :func:`perfmoco.quant.segments.segment_table` (``slice``,
        ``segment``, ``territory``, ``mean``, ``median``, ``sd``, ``n``, ...).
    aif_gd : ndarray, shape (T,), float64, mmol/l
        AIF on the uniform fitting grid.
    aif_times_s : ndarray, shape (T,), float64, s
        The fitting grid (acquisition clock).
    warnings : list of str
    ischemia_mbf : float
        MBF (ml/min/g) below which a pixel counts as ischaemic
        (:meth:`ischemic_burden`, the segments' ``below``).
    saturation_efficiency : dict of str to float
        The sequences' effective saturation efficiency measured where the series have PD
        frames (:func:`perfmoco.quant.signal.saturation_efficiency`): ``'highres'``, the
        myocardium's, mean over the slices; ``'aif'``, the AIF slice's blood pool.  What a
        site sets as ``quant.saturation_efficiency_*`` for its studies of the protocol
        without PD frames; only those measured.
    """

    mbf_maps: dict[int, np.ndarray]
    fit_quality: dict[int, np.ndarray]
    flagged: dict[int, np.ndarray]
    myocardium: dict[int, np.ndarray]
    aha: dict[int, np.ndarray]
    rv_insertion: dict[int, np.ndarray]
    segments: list[dict]
    aif_gd: np.ndarray
    aif_times_s: np.ndarray
    warnings: list[str]
    ischemia_mbf: float = 2.0
    saturation_efficiency: dict[str, float] = dataclasses.field(default_factory=dict)


    def ischemic_burden(self) -> tuple[float, int]:
        """The ischaemic burden: share of the fitted (not flagged) myocardial pixels.

        Returns the share of all slices' fitted myocardial pixels whose
        neighbourhood median MBF (:func:`perfmoco.quant.segments.neighbourhood_median`)
        lies below :attr:`ischemia_mbf`, and how many pixels it is of (``(nan, 0)``: none).
        """
        parts = []
        for k, m in self.mbf_maps.items():
            ok = self.myocardium[k] & ~self.flagged[k] & np.isfinite(m)
            parts.append(neighbourhood_median(m, ok)[ok])
        vals = np.concatenate(parts or [np.zeros(0)])
        vals = vals[np.isfinite(vals)]
        return (float(np.mean(vals < self.ischemia_mbf)) if vals.size else float("nan"),
                int(vals.size))

    def summary_text(self) -> str:
        """Human-readable summary: AIF, per-slice medians, segment table, warnings."""
        lines = [f"AIF peak {float(np.max(self.aif_gd)):.2f} mmol/l, "
                 f"{self.aif_gd.size} samples every "
                 f"{float(np.median(np.diff(self.aif_times_s))):.3f} s"]
        for sl in sorted(self.mbf_maps):
            myo = self.myocardium[sl]
            good = myo & ~self.flagged[sl]
            med = float(np.median(self.mbf_maps[sl][good])) if good.any() else float("nan")
            lines.append(f"slice {sl}: median MBF {med:.2f} ml/min/g over {int(good.sum())} "
                         f"pixels ({int((myo & self.flagged[sl]).sum())} flagged)")
        burden, n_px = self.ischemic_burden()
        if n_px:
            lines.append(f"ischaemic burden: {100 * burden:.0f}% of {n_px} fitted myocardial "
                         f"pixels below {self.ischemia_mbf:g} ml/min/g")
        eff = self.saturation_efficiency
        if eff:
            lines.append("effective saturation efficiency (baseline against PD M0): " + ", ".join(
                f"{k} {v:.3f}" for k, v in sorted(eff.items()))
                + " (quant.saturation_efficiency_* for this protocol without PD frames)")
        lines.append("slice segment name                 territory   mean median    sd    se"
                     "     n  (ml/min/g)")
        for r in self.segments:
            mark = "" if r.get("reliable", True) else (
                "  unreliable" + (f" ({r['reason']})" if r.get("reason") else ""))
            lines.append(f"{r['slice']:5d} {r['segment']:7d} {r.get('name', ''):20s} "
                         f"{r['territory']:>9s} {r['mean']:6.2f} {r['median']:6.2f} "
                         f"{r['sd']:5.2f} {r.get('se', float('nan')):5.2f} {r['n']:5d}{mark}")
        weak = [f"{r['slice']}/{r['segment']}" for r in self.segments
                if not r.get("reliable", True)]
        if weak:
            lines.append(f"unreliable segments (slice/segment; too few pixels, standard error "
                         f"of the median or share of failed fits too large): {', '.join(weak)}")
        lines += [f"warning: {w}" for w in self.warnings]
        return "\n".join(lines)
