"""Tables, statistics and figures of an evaluation (the shape of the paper's results).

Each metric is summarised as the paper reports it: median (IQR) or
mean (SD).  Methods are compared with the Wilcoxon signed-rank test on
values paired by study and slice (by study, slice and AHA segment for the
segment MBF SD), and each metric's normality is checked with Shapiro-Wilk.
"""

from __future__ import annotations

import csv
import itertools
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from scipy import stats

__all__ = ["METRICS", "summarise", "wilcoxon_table", "write_report"]

#: (key, label, summary, source, group): summary "median" = median (IQR),
#: "mean" = mean (SD); source "slice", "segment" or "study" rows.
METRICS = [
    ("tic_smoothness", "TIC smoothness (SD of 2nd derivative)", "median", "slice", "paper"),
    ("dice_peak", "Dice, 5 frames around peak LV", "mean", "slice", "paper"),
    ("pd_sd", "SD of PD pixels in peak-LV myocardium", "median", "slice", "paper"),
    ("mbf_sd", "SD of pixel MBF within AHA segments, ml/min/g", "median", "segment", "paper"),
    ("median_mbf", "median MBF, ml/min/g", "median", "slice", "paper"),
    ("dice_all", "Dice of true myocardium, all dynamics", "mean", "slice", "truth"),
    ("centroid_mm", "LV centroid residual, mm", "median", "slice", "truth"),
    ("displacement_error_mm", "displacement error in myocardium, mm", "median", "slice", "truth"),
    ("tic_noise_free", "TIC smoothness of the noise-free frames, same fields", "median", "slice",
     "truth"),
    ("mbf_mae", "MBF absolute error vs truth, ml/min/g", "median", "slice", "truth"),
    ("mbf_bias", "MBF bias vs truth, ml/min/g", "mean", "slice", "truth"),
    ("moco_s", "motion correction per study (4 slices), s", "mean", "study", "runtime"),
    ("quant_s", "quantification per study, s", "mean", "study", "runtime"),
]
_PAPER_FIGURE = ["tic_smoothness", "dice_peak", "pd_sd", "mbf_sd"]
_TRUTH_FIGURE = ["dice_all", "centroid_mm", "displacement_error_mm", "mbf_mae"]


def _values(rows: Sequence[dict], key: str, method: str) -> np.ndarray:
    v = np.array([float(r[key]) for r in rows if r["method"] == method], dtype=np.float64)
    return v[np.isfinite(v)]


def _fmt(x: float) -> str:
    if not math.isfinite(x):
        return "n/a"
    return f"{x:.3g}" if abs(x) >= 1 else f"{x:.3f}"


def summarise(values: np.ndarray, how: str) -> tuple[float, float, str]:
    """Centre, spread and text: ``median (IQR)`` or ``mean (SD)`` of finite values."""
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    if v.size == 0:
        return float("nan"), float("nan"), "n/a"
    if how == "median":
        q1, med, q3 = np.percentile(v, [25, 50, 75])
        return float(med), float(q3 - q1), f"{_fmt(med)} ({_fmt(q3 - q1)})"
    sd = float(v.std(ddof=1)) if v.size > 1 else 0.0
    return float(v.mean()), sd, f"{_fmt(v.mean())} ({_fmt(sd)})"


def _paired(rows, key, a, b, keys):
    by = {}
    for r in rows:
        if r["method"] in (a, b):
            by.setdefault(tuple(r[k] for k in keys), {})[r["method"]] = float(r[key])
    pairs = np.array([(d[a], d[b]) for d in by.values() if a in d and b in d], dtype=np.float64)
    if pairs.size == 0:
        return np.zeros((0, 2))
    return pairs[np.isfinite(pairs).all(axis=1)]


def wilcoxon_table(sources: dict, methods: Sequence[str]) -> list[dict]:
    """Wilcoxon signed-rank p-values for every metric and pair of methods."""
    out = []
    for key, label, _, src, _group in METRICS:
        rows = sources[src]
        keys = {"slice": ("study", "slice_index"), "study": ("study",),
                "segment": ("study", "slice_index", "segment")}[src]
        for a, b in itertools.combinations(methods, 2):
            pairs = _paired(rows, key, a, b, keys)
            p = float("nan")
            if len(pairs) >= 2 and np.any(pairs[:, 0] != pairs[:, 1]):
                p = float(stats.wilcoxon(pairs[:, 0], pairs[:, 1]).pvalue)
            out.append({"metric": key, "label": label, "method_a": a, "method_b": b,
                        "n_pairs": len(pairs), "p_value": p})
    return out


def _shapiro(sources: dict, methods: Sequence[str]) -> list[dict]:
    out = []
    for key, label, _, src, _group in METRICS:
        for m in methods:
            v = _values(sources[src], key, m)
            p = float("nan")
            if v.size >= 3 and np.ptp(v) > 0:
                p = float(stats.shapiro(v).pvalue)
            out.append({"metric": key, "label": label, "method": m, "n": int(v.size),
                        "p_value": p, "normal_at_0.05": bool(p >= 0.05) if p == p else ""})
    return out


def _write_csv(path: Path, rows: Sequence[dict]) -> Path:
    fields: list[str] = []
    for r in rows:
        fields.extend(k for k in r if k not in fields)
    with open(path, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=fields or ["empty"])
        w.writeheader()
        w.writerows(rows)
    return path


def _boxplots(path: Path, rows, seg_rows, methods, keys) -> Path:
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    labels = {k: lab for k, lab, *_ in METRICS}
    positions = sorted({(r["slice_index"], r["slice"]) for r in rows})
    fig, axes = plt.subplots(1, len(keys), figsize=(4.2 * len(keys), 3.8), squeeze=False)
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    width = 0.8 / max(len(methods), 1)
    for ax, key in zip(axes[0], keys):
        src = seg_rows if key == "mbf_sd" else rows
        for j, m in enumerate(methods):
            data = [
                [float(r[key]) for r in src if r["method"] == m and r["slice_index"] == idx
                 and math.isfinite(float(r[key]))]
                for idx, _ in positions
            ]
            xs = [i + (j - (len(methods) - 1) / 2) * width for i in range(len(positions))]
            keep = [(x, d) for x, d in zip(xs, data) if d]
            if keep:
                bp = ax.boxplot([d for _, d in keep], positions=[x for x, _ in keep],
                                widths=width * 0.9, patch_artist=True, showfliers=True,
                                medianprops={"color": "black"})
                for patch in bp["boxes"]:
                    patch.set_facecolor(colours[j % len(colours)])
                    patch.set_alpha(0.6)
            ax.plot([], [], "s", color=colours[j % len(colours)], alpha=0.6, label=m)
        ax.set_xticks(range(len(positions)), [name for _, name in positions])
        ax.set_title(labels[key], fontsize=9)
        ax.grid(axis="y", alpha=0.3)
    axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def _markdown(table, pvalues, methods, n_studies, command, figures) -> str:
    head = "| metric | " + " | ".join(methods) + " |\n|---|" + "---|" * len(methods) + "\n"
    lines = [f"Phantom cohort: {n_studies} studies (3 high-resolution slices each), "
             f"methods {', '.join(methods)}.", "", f"Regenerate: `{command}`", ""]
    for group, title in (("paper", "The paper's metrics"), ("truth", "Against ground truth"),
                         ("runtime", "Runtime")):
        lines += [f"### {title}", "", head.rstrip("\n")]
        for row in table:
            if row["group"] == group:
                how = "median (IQR)" if row["summary"] == "median" else "mean (SD)"
                cells = " | ".join(row[m] for m in methods)
                lines.append(f"| {row['label']}; {how} | {cells} |")
        lines.append("")
    base = methods[0]
    others = [m for m in methods[1:]]
    if others:
        lines += [f"Wilcoxon signed-rank p-values against `{base}`:", "",
                  "| metric | " + " | ".join(others) + " |", "|---|" + "---|" * len(others)]
        for key, label, *_ in METRICS:
            cells = []
            for m in others:
                p = [r["p_value"] for r in pvalues
                     if r["metric"] == key and r["method_a"] == base and r["method_b"] == m]
                cells.append(f"{p[0]:.2g}" if p and p[0] == p[0] else "n/a")
            lines.append(f"| {label} | " + " | ".join(cells) + " |")
        lines.append("")
    lines += [f"![{name}]({name})" for name in figures] + [""]
    return "\n".join(lines)


def write_report(out_dir: Path, methods: Sequence[str], slice_rows, segment_rows, study_rows,
                 *, command: str) -> dict:
    """Write every table, the figures and ``results.md``.

    Parameters
    ----------
    out_dir : Path
        Created if missing.
    methods : sequence of str
        Column order; the first is the baseline of the p-values.
    slice_rows, segment_rows, study_rows : list of dict
        From :func:`perfmoco.evaluate.study.evaluate_study`.
    command : str, keyword-only
        Command line that regenerates the results (written into results.md).

    Returns
    -------
    dict
        ``table``, ``pvalues``, ``normality`` and ``files``.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    sources = {"slice": slice_rows, "segment": segment_rows, "study": study_rows}
    table = []
    for key, label, how, src, group in METRICS:
        row = {"metric": key, "label": label, "summary": how, "group": group}
        for m in methods:
            centre, spread, text = summarise(_values(sources[src], key, m), how)
            row[m] = text
            row[f"{m}_centre"], row[f"{m}_spread"] = centre, spread
        table.append(row)
    pvalues = wilcoxon_table(sources, methods)
    normality = _shapiro(sources, methods)
    files = {
        "per_slice": _write_csv(out_dir / "per_slice.csv", slice_rows),
        "segments": _write_csv(out_dir / "segments.csv", segment_rows),
        "runtime": _write_csv(out_dir / "runtime.csv", study_rows),
        "table": _write_csv(out_dir / "table.csv", table),
        "wilcoxon": _write_csv(out_dir / "wilcoxon.csv", pvalues),
        "shapiro": _write_csv(out_dir / "shapiro.csv", normality),
    }
    figs = []
    if slice_rows:
        files["figure"] = _boxplots(out_dir / "figure3.png", slice_rows, segment_rows, methods,
                                    _PAPER_FIGURE)
        files["figure_truth"] = _boxplots(out_dir / "figure_truth.png", slice_rows,
                                          segment_rows, methods, _TRUTH_FIGURE)
        figs = ["figure3.png", "figure_truth.png"]
    n_studies = len({r["study"] for r in study_rows})
    md = _markdown(table, pvalues, methods, n_studies, command, figs)
    (out_dir / "results.md").write_text(md)
    files["results"] = out_dir / "results.md"
    return {"table": table, "pvalues": pvalues, "normality": normality, "files": files}
