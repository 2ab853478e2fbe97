"""QA report: page contents, graceful degradation, bullseye, MRD captures, reload, browser."""

from __future__ import annotations

import re
from types import SimpleNamespace

import numpy as np
import pytest
from browser_helpers import find_chromium, load_page, screenshot
from PIL import Image

from perfmoco.config import Config
from perfmoco.io.files import write_mrd_images
from perfmoco.io.mrd import study_header
from perfmoco.moco.result import MocoResult
from perfmoco.pipeline import Method, StudyResult
from perfmoco.report import load_result, report_images, write_report
from perfmoco.report.bullseye import segment_angles, segment_values, uncertain_segments


def _truth_quant(truth: dict) -> SimpleNamespace:
    """A quantification result made from the phantom's truth (the real one is tested in quant)."""
    segments = []
    for k in range(3):
        aha, mbf = truth[f"s{k}_aha"], truth[f"s{k}_mbf"]
        for s in np.unique(aha[aha > 0]):
            v = mbf[aha == s]
            segments.append({"slice": k, "segment": int(s), "territory": "LAD",
                             "mean": float(v.mean()), "median": float(np.median(v)),
                             "sd": float(v.std()), "n": int(v.size), "se": 0.1,
                             "reliable": (k, int(s)) != (2, 13),
                             "reason": "" if (k, int(s)) != (2, 13)
                             else "52% of its pixel fits failed (a; b)",
                             "below": float(np.mean(v < 2.0)),
                             "dark_rim": 0.123 if (k, int(s)) in ((2, 13), (1, 7)) else 0.0})
    true_all = np.concatenate([truth[f"s{k}_mbf"][truth[f"s{k}_aha"] > 0] for k in range(3)])
    return SimpleNamespace(
        mbf_maps={k: truth[f"s{k}_mbf"] for k in range(3)},
        aha={k: truth[f"s{k}_aha"] for k in range(3)},
        myocardium={k: truth[f"s{k}_aha"] > 0 for k in range(3)},
        segments=segments, aif_gd=truth["aif_gd"], aif_times_s=truth["aif_times"],
        warnings=[], ischemia_mbf=2.0, saturation_efficiency={"highres": 0.8123, "aif": 0.9},
        ischemic_burden=lambda: (float(np.mean(true_all < 2.0)), int(true_all.size)),
    )


@pytest.fixture(scope="module")
def phantom_result():
    phantom = pytest.importorskip("perfmoco.phantom")
    ph = phantom.generate_phantom(seed=3, n_dynamics=14, motion="breathing")
    moco = []
    for k, sl in enumerate(ph.study.slices):  # the "correction" of the truth: motion-free frames
        t, (y, x) = sl.n_dynamics, sl.shape
        key = "aif" if sl.role.value == "aif" else f"s{sl.slice_index}"
        moco.append(MocoResult(
            corrected=ph.truth[f"{key}_motion_free"].astype(np.float32),
            displacement=np.zeros((t, 2, y, x), np.float32), reference_index=t - 10,
            qc=(np.arange(t) % 5 == 2) if k == 0 else np.zeros(t, bool),  # dynamics 3, 8, 13
            pd_corrected=sl.pd_images, pd_displacement=np.zeros((0, 2, y, x), np.float32)))
    return StudyResult(study=ph.study, moco=moco, quant=_truth_quant(ph.truth), method=Method.DL,
                       timings_s={"motion correction": 1.5, "quantification": 0.5})


@pytest.fixture(scope="module")
def page(phantom_result, tmp_path_factory):
    return write_report(phantom_result, tmp_path_factory.mktemp("report"), title="seed 3")


def _links(html: str) -> list[str]:
    return re.findall(r'<img src="([^"]+)"', html)


def test_page_has_every_section(page, phantom_result):
    html = page.read_text()
    for heading in ["Problems", "Protocol", "Before / after motion correction",
                    "Time-intensity curves", "Arterial input function", "MBF",
                    "QC-flagged frames", "Runtime", "Terms"]:
        assert f"<h2>{heading}</h2>" in html
    # each slice's protocol as the data give it
    s0 = phantom_result.study.slices[0]
    ts = f"{1000 * s0.saturation_time_s:.3g}" if s0.saturation_time_s else "not in the data"
    assert (f"<tr><td>{s0.name}</td><td>{s0.n_dynamics}</td>"
            f"<td>{np.median(np.diff(s0.times_s)):.2f}</td><td>{s0.pd_images.shape[0]}</td>"
            f"<td>{ts}</td>") in html
    links = _links(html)
    n_slices = len(phantom_result.study.slices)
    assert sum(src.endswith(".gif") for src in links) == n_slices
    for name in ["tics.png", "aif.png", "mbf_maps.png", "bullseye.png", "qc_frames.png"]:
        assert any(src.endswith(name) for src in links), name
    for src in links:  # relative links, files present, nothing from the network
        assert not src.startswith(("/", "http:", "https:", "file:"))
        assert (page.parent / src).stat().st_size > 500
    assert "http" not in html.replace("http-equiv", "")
    assert "3, 8, 13" in html  # QC-flagged dynamics, 1-based
    # the ischaemic burden and each segment's share below the threshold
    burden, n_px = phantom_result.quant.ischemic_burden()
    assert f"Ischaemic burden: <b>{100 * burden:.0f} %</b> of {n_px} fitted" in html
    assert ("Effective saturation efficiency, the pre-contrast signal against the PD frames' "
            "M0: aif 0.900, highres 0.812") in html
    row = next(r for r in phantom_result.quant.segments
               if 0 < r["below"] < 1 and not r["dark_rim"])
    assert f"<td>{100 * row['below']:.0f}</td><td></td></tr>" in html
    assert "<td>12</td></tr>" in html  # a dark rim's fall, %
    # each slice's level, by the segments the table gives it
    for level in ("slice 0 (highres), basal", "slice 1 (highres), mid",
                  "slice 2 (highres), apical"):
        assert level in html


def test_animation_has_every_dynamic(page, phantom_result):
    from PIL import Image

    gif = next(p for p in (page.parent / "report_files").glob("anim_highres*.gif"))
    with Image.open(gif) as im:
        assert im.n_frames == phantom_result.study.highres[0].n_dynamics
        assert im.width > 2 * phantom_result.study.highres[0].shape[1]  # original | corrected


def test_report_degrades_without_correction_or_quantification(small_study, tmp_path):
    res = StudyResult(study=small_study, moco=[None] * len(small_study.slices),
                      messages=["motion correction failed (no weights); originals kept"])
    page = write_report(res, tmp_path)
    html = page.read_text()
    assert "motion correction failed (no weights)" in html
    assert "No slice was motion-corrected" in html
    assert "MBF maps and bullseye not available" in html
    assert "unknown (slice not corrected" in html
    for src in _links(html):
        assert (page.parent / src).is_file()


def test_bullseye_layout_and_values():
    assert segment_angles(1) == ("basal", 60.0, 120.0)  # anterior at the top
    assert segment_angles(3)[0] == "basal" and segment_angles(3)[1:] == (180.0, 240.0)
    assert segment_angles(14) == ("apical", 135.0, 225.0)  # septal on the left
    assert segment_angles(8)[0] == "mid"
    with pytest.raises(ValueError, match="segment must be 1..16, got 17"):
        segment_angles(17)
    rows = [{"segment": 2, "mean": 1.0, "n": 30}, {"segment": 2, "mean": 3.0, "n": 10},
            {"segment": 5, "mean": float("nan"), "n": 5}, {"segment": "x", "mean": 1.0}]
    assert segment_values(rows, key="mean") == {2: 1.5}
    # an unreliable row is left out where its segment has a reliable one; a segment
    # with none keeps its value and is marked (hatched in the bullseye)
    rows = [{"segment": 2, "median": 1.0, "n": 30, "reliable": True},
            {"segment": 2, "median": 9.0, "n": 10, "reliable": False},
            {"segment": 7, "median": 5.0, "n": 8, "reliable": False},
            {"segment": 8, "median": 3.0, "n": 20}]
    assert segment_values(rows) == {2: 1.0, 7: 5.0, 8: 3.0}
    assert uncertain_segments(rows) == {7}
    # drawn: the unreliable segment grey (its 5.0 would read as high flow), the others in
    # colour; its value still written, marked "?"
    from matplotlib.figure import Figure

    from perfmoco.report.bullseye import draw_bullseye

    ax = Figure().add_subplot()
    draw_bullseye(ax, segment_values(rows), uncertain=uncertain_segments(rows), colorbar=False)
    faces = [tuple(p.get_facecolor()) for p in ax.patches[:16]]  # segments 1..16 in order
    assert faces[6] == pytest.approx((0.82, 0.82, 0.82, 1.0))
    assert faces[7] != pytest.approx((0.82, 0.82, 0.82, 1.0))
    assert any(t.get_text() == "7\n5.00?" for t in ax.texts)


def test_report_images_are_secondary_captures(phantom_result, tmp_path):
    cfg = Config().with_overrides({"mrd.report_series_index": 121})
    images = report_images(phantom_result, config=cfg)
    assert len(images) == 1 + 3  # bullseye + one map per high-res slice
    for img in images:
        assert img.getHead().image_series_index == 121
        assert img.data.dtype == np.float32 and img.data.shape == (1, 1, 512, 512)
        assert "SecondaryCapture" in img.meta["GADGETRON_DataRole"]
        assert 0 <= img.data.min() and img.data.max() <= 255 and img.data.std() > 10
    assert report_images(StudyResult(study=phantom_result.study, moco=[]), config=cfg) == []


def test_result_file_round_trip(phantom_result, tmp_path):
    cfg = Config()
    path = tmp_path / "result.h5"
    images = phantom_result.to_images(cfg) + report_images(phantom_result, config=cfg)
    write_mrd_images(path, study_header(phantom_result.study), images)
    back = load_result(path, config=cfg)
    assert len(back.study.slices) == len(phantom_result.study.slices)
    # named as it was processed (not after the file or its folder)
    assert back.study.study_id == phantom_result.study.study_id != tmp_path.name
    for a, b in zip(sorted(phantom_result.study.slices, key=lambda s: s.slice_index),
                    sorted(back.study.slices, key=lambda s: s.slice_index)):
        np.testing.assert_allclose(a.images, b.images, rtol=1e-6)
    if any(m is not None for m in phantom_result.moco):
        assert any(m is not None and m.corrected.shape[0] == 14 for m in back.moco)
    if phantom_result.quant is not None and back.quant is not None:
        np.testing.assert_allclose(back.quant.mbf_maps[1], phantom_result.quant.mbf_maps[1],
                                   atol=1e-4)
        # the segment table's medians, standard errors and reliability marks travel too
        got = {(r["slice"], r["segment"]): r for r in back.quant.segments}
        for r in phantom_result.quant.segments:
            g = got[(r["slice"], r["segment"])]
            assert g["median"] == pytest.approx(r["median"], abs=0.006)
            assert g["mean"] == pytest.approx(r["mean"], abs=0.006)
            assert g["se"] == pytest.approx(0.1) and g["reliable"] == r["reliable"]
        assert not got[(2, 13)]["reliable"]
        assert got[(2, 13)]["reason"] == "52% of its pixel fits failed (a; b)"
        assert got[(2, 14)]["reason"] == ""
        assert back.quant.saturation_efficiency == pytest.approx({"highres": 0.8123, "aif": 0.9})
        # ... with their pixel counts, shares below 2.0 and territories, the study's burden,
        # the AIF it was fitted with and the fitted myocardium (no automatic outline)
        for r in phantom_result.quant.segments:
            g = got[(r["slice"], r["segment"])]
            assert g["n"] == r["n"] and g["territory"] == r["territory"]
            assert g["below"] == pytest.approx(r["below"], abs=0.001)
            assert g["dark_rim"] == pytest.approx(r["dark_rim"], abs=0.001)
        assert got[(2, 13)]["reason"] == "52% of its pixel fits failed (a; b)"  # after the rim
        want = phantom_result.quant.ischemic_burden()
        assert back.quant.ischemic_burden()[0] == pytest.approx(want[0], abs=0.001)
        assert back.quant.ischemic_burden()[1] == want[1]
        np.testing.assert_allclose(back.quant.aif_gd, phantom_result.quant.aif_gd, rtol=1e-3)
        np.testing.assert_allclose(back.quant.aif_times_s, phantom_result.quant.aif_times_s,
                                   atol=2e-3)
        for k, m in phantom_result.quant.mbf_maps.items():
            np.testing.assert_array_equal(back.quant.myocardium[k], m != 0)
    # the corrected series' QC flags come back (slice 0: dynamics 3, 8 and 13, from 1)
    qc = {s.slice_index: m.qc for s, m in zip(back.study.slices, back.moco) if m is not None}
    assert np.flatnonzero(qc[0]).tolist() == [2, 7, 12]
    assert not back.messages  # nothing said that the run did not say


def test_report_cli_single_file_and_folder(small_study, tmp_path, capsys):
    from perfmoco.cli import main

    study_dir = tmp_path / "batch" / "small"
    study_dir.mkdir(parents=True)
    res = StudyResult(study=small_study, moco=[None] * len(small_study.slices))
    write_mrd_images(study_dir / "result.h5", study_header(small_study), res.to_images(Config()))
    assert main(["report", str(study_dir / "result.h5"), "-o", str(tmp_path / "one.html")]) == 0
    assert (tmp_path / "one.html").is_file() and (tmp_path / "one_files").is_dir()
    assert main(["report", str(tmp_path / "batch")]) == 0
    assert (study_dir / "report" / "report.html").is_file()
    assert "wrote" in capsys.readouterr().out
    assert main(["report", str(tmp_path / "nothing.h5")]) == 2


@pytest.mark.skipif(find_chromium() is None,
                    reason="chromium not installed (scripts/install_browser.sh installs it)")
def test_page_loads_in_headless_chromium(page, tmp_path):
    loaded = load_page(page)
    assert loaded.console == [], loaded.console
    assert loaded.images_total >= 9
    assert loaded.images_loaded == loaded.images_total
    shot = screenshot(page, tmp_path / "report.png")
    assert shot.is_file() and shot.stat().st_size > 10_000


@pytest.mark.skipif(find_chromium() is None,
                    reason="chromium not installed (scripts/install_browser.sh installs it)")
def test_browser_check_catches_a_broken_image(page):
    broken = page.with_name("broken.html")
    broken.write_text(page.read_text().replace("tics.png", "missing.png"))
    loaded = load_page(broken)
    assert loaded.images_loaded == loaded.images_total - 1


def test_qc_sheet_cuts_to_the_heart_with_the_outline(phantom_result, tmp_path):
    """One tile per flagged dynamic plus the median frame, cut around the LV (the
    outline's red pixels near the tile's middle, none at its edges)."""
    from perfmoco.report.data import slice_views
    from perfmoco.report.qcsheet import qc_strip

    views = slice_views(phantom_result)
    path = qc_strip(views, tmp_path / "qc.png", panel_px=160)
    flagged = [v for v in views if v.qc is not None and v.qc.any()]
    with Image.open(path) as im:
        sheet = np.asarray(im.convert("RGB")).astype(int)
    cols = 1 + max(min(int(v.qc.sum()), 6) for v in flagged)
    assert sheet.shape[1] == cols * (160 + 6) + 6
    assert sheet.shape[0] == 2 * len(flagged) * (160 + 14 + 6) + 6
    tile = sheet[6 + 14:6 + 14 + 160, 6:6 + 160]  # first slice, median original
    red = (tile[..., 0] > 200) & (tile[..., 1] < 90) & (tile[..., 2] < 90)
    yy, xx = np.nonzero(red)
    assert red.sum() > 20 and abs(yy.mean() - 80) < 40 and abs(xx.mean() - 80) < 40
