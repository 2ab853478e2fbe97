"""`perfmoco evaluate` on tiny cohorts: files written, values checked against truth."""

import csv

import numpy as np
import pytest

from perfmoco.evaluate import evaluate
from perfmoco.moco.result import MocoResult
from perfmoco.moco.transforms import warp
from perfmoco.phantom import generate_phantom

N_DYN = 20
SEEDS = (3, 4)


@pytest.fixture(scope="module")
def oracle():
    """A fake method that knows the true motion: it pulls every frame back to motion-free."""
    inverse = {}
    for seed in SEEDS:
        ph = generate_phantom(seed=seed, motion="breathing", n_dynamics=N_DYN)
        for s in ph.study.slices:
            prefix = "aif" if s.role.value == "aif" else f"s{s.slice_index}"
            inverse[s.images.tobytes()[:4096] + bytes([s.slice_index])] = (
                ph.truth[f"{prefix}_inverse_displacement"]
            )

    def correct(series):
        d = inverse[series.images.tobytes()[:4096] + bytes([series.slice_index])]
        d = d.astype(np.float32)
        t, ny, nx = series.images.shape
        p = series.pd_images.shape[0]
        return MocoResult(
            corrected=warp(series.images, d), displacement=d, reference_index=t - 10,
            qc=np.zeros(t, bool), pd_corrected=series.pd_images.copy(),
            pd_displacement=np.zeros((p, 2, ny, nx), np.float32),
        )

    return correct


def _read(path):
    with open(path) as fh:
        return list(csv.DictReader(fh))


def test_evaluate_none_and_oracle_writes_files_and_matches_truth(tmp_path, oracle):
    res = evaluate(
        n_studies=len(SEEDS), seed=SEEDS[0], methods={"none": None, "oracle": oracle},
        out_dir=tmp_path, workers=0, progress=False, n_dynamics=N_DYN,
    )
    for name in ("per_slice.csv", "segments.csv", "runtime.csv", "table.csv", "wilcoxon.csv",
                 "shapiro.csv", "figure3.png", "figure_truth.png", "results.md"):
        assert (tmp_path / name).is_file(), name
    rows = _read(tmp_path / "per_slice.csv")
    assert len(rows) == len(SEEDS) * 3 * 2  # studies x high-res slices x methods
    none = [r for r in rows if r["method"] == "none"]
    orc = [r for r in rows if r["method"] == "oracle"]
    # breathing moves the heart: without correction the true masks do not overlap perfectly
    assert all(float(r["dice_all"]) < 0.95 for r in none)
    assert all(float(r["displacement_error_mm"]) > 0.5 for r in none)
    # the oracle brings every frame to motion-free: near-perfect overlap, ~no residual
    assert all(float(r["dice_all"]) > 0.95 for r in orc)
    assert all(float(r["displacement_error_mm"]) < 0.3 for r in orc)
    for a, b in zip(none, orc):
        # masks also change through-plane, which no in-plane field undoes: a small floor
        assert float(b["centroid_mm"]) < min(1.0, float(a["centroid_mm"]))
        assert float(b["dice_peak"]) > float(a["dice_peak"])
        assert float(b["tic_smoothness"]) < float(a["tic_smoothness"])
        # without the image noise the oracle's improvement shows in full (the noisy one is
        # capped by the noise floor)
        nf_a, nf_b = float(a["tic_noise_free"]), float(b["tic_noise_free"])
        assert nf_b < float(b["tic_smoothness"])
        assert nf_a / nf_b > float(a["tic_smoothness"]) / float(b["tic_smoothness"])
    assert any(np.isfinite(float(r["median_mbf"])) for r in rows)  # quant may skip a slice
    # the paper-shaped table and the p-values
    table = {r["metric"]: r for r in res.table}
    assert set(table) >= {"tic_smoothness", "dice_peak", "pd_sd", "mbf_sd", "median_mbf"}
    assert "(" in table["dice_peak"]["none"]
    p = [r for r in res.pvalues if r["metric"] == "dice_all"][0]
    assert p["n_pairs"] == len(SEEDS) * 3 and 0 < p["p_value"] <= 1
    md = (tmp_path / "results.md").read_text()
    assert "perfmoco evaluate --studies 2 --seed 3 --methods none,oracle" in md
    assert "| Dice, 5 frames around peak LV; mean (SD) |" in md
    runtime = _read(tmp_path / "runtime.csv")
    assert len(runtime) == len(SEEDS) * 2 and all(r["error"] == "" for r in runtime)


def test_failing_method_is_recorded_not_fatal(tmp_path):
    def broken(series):
        raise RuntimeError("boom")

    res = evaluate(n_studies=1, seed=5, methods={"none": None, "broken": broken},
                   out_dir=tmp_path, workers=0, progress=False, n_dynamics=N_DYN,
                   quantify=False)
    errs = {r["method"]: r["error"] for r in res.study_rows}
    assert errs["none"] == "" and "boom" in errs["broken"]
    broken_rows = [r for r in res.slice_rows if r["method"] == "broken"]
    assert all(np.isnan(r["dice_all"]) for r in broken_rows)


def test_builtin_methods_correct_the_study_as_the_product_does(tmp_path, monkeypatch):
    """The DL method with the LV stack's locations and the AIF slice's step after it
    (``correct_slices``, as ``process_study``); the iterative one with the user's
    settings; a custom method slice by slice."""
    import perfmoco.moco.companion as companion
    import perfmoco.moco.iterative as iterative
    import perfmoco.pipeline as pipeline
    from perfmoco.config import Config
    from perfmoco.moco.pipeline import correct_series

    seen = {"lv": [], "follow": 0, "iterative": [], "custom": 0}

    class Identity:
        def correct(self, series, *, lv=None):
            seen["lv"].append(lv)
            return correct_series(series, method="none")

    def follow(slices, results, centres=None, *, config):
        seen["follow"] += 1
        return results

    def iterative_run(series, *, config=None, threads=None, lv=None):
        seen["iterative"].append((config.reference_from_end, threads))
        return correct_series(series, method="none")

    def custom(series):
        seen["custom"] += 1
        return correct_series(series, method="none")

    monkeypatch.setattr(pipeline, "load_corrector", lambda config: Identity())
    monkeypatch.setattr(companion, "follow_tissue_study", follow)
    monkeypatch.setattr(iterative, "correct_iterative", iterative_run)
    config = Config().with_overrides({"moco.reference_from_end": 12})
    res = evaluate(n_studies=1, seed=5, methods={"dl": None, "iterative": None, "mine": custom},
                   config=config, out_dir=tmp_path, workers=0, progress=False,
                   n_dynamics=N_DYN, quantify=False)
    assert all(r["error"] == "" for r in res.study_rows)
    assert len(seen["lv"]) == 4 and any(lv is not None for lv in seen["lv"])  # checked LVs
    assert seen["follow"] == 1  # after the DL correction only
    assert seen["iterative"] == [(12, 1)] * 4 and seen["custom"] == 4


def test_bad_arguments():
    with pytest.raises(ValueError, match="unknown method 'bogus'"):
        evaluate(n_studies=1, methods=("none", "bogus"), workers=0)
    with pytest.raises(ValueError, match="methods are repeated"):
        evaluate(n_studies=1, methods="none,none", workers=0)
    with pytest.raises(ValueError, match="n_studies must be >= 1, got 0"):
        evaluate(n_studies=0, methods=("none",), workers=0)


@pytest.mark.slow
def test_evaluate_on_a_dask_local_cluster(tmp_path):
    res = evaluate(n_studies=2, seed=0, methods=("none",), out_dir=tmp_path, workers=2,
                   progress=False, n_dynamics=N_DYN, quantify=False)
    assert len(res.slice_rows) == 6
    assert {r["study"] for r in res.slice_rows} == {"phantom-seed0", "phantom-seed1"}


def test_a_cohort_folder_names_the_studies_it_leaves_out(tmp_path, caplog):
    from perfmoco.evaluate import _cohort

    for name in ("a.h5", "a.truth.npz", "b.h5"):
        (tmp_path / name).write_bytes(b"")
    assert [s["path"] for s in _cohort(None, 0, tmp_path)] == [str(tmp_path / "a.h5")]
    assert "b.h5" in caplog.text and "without a *.truth.npz" in caplog.text
