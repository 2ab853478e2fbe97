"""Bare series files (npy / NIfTI) for offline research use."""

from __future__ import annotations

import numpy as np
import pytest

from perfmoco.io.files import read_series, read_study, write_series
from perfmoco.study import StudyError


def test_npy_round_trip(tmp_path):
    arr = np.random.default_rng(0).random((12, 20, 24)).astype(np.float32)
    write_series(tmp_path / "a.npy", arr)
    s = read_series(tmp_path / "a.npy", pixel_spacing_mm=2.0)
    np.testing.assert_array_equal(s.images, arr)
    assert s.pixel_spacing_mm == (2.0, 2.0)


@pytest.mark.parametrize("suffix", [".nii", ".nii.gz"])
def test_nifti_round_trip_keeps_axes_and_spacing(tmp_path, suffix):
    arr = np.zeros((12, 20, 24), np.float32)
    arr[:, 3, 17] = 1.0  # a marked pixel at y=3, x=17 tells the axes apart
    write_series(tmp_path / f"a{suffix}", arr, pixel_spacing_mm=(1.5, 2.5))
    s = read_series(tmp_path / f"a{suffix}")
    assert s.images.shape == (12, 20, 24)
    assert s.images[5, 3, 17] == 1.0
    assert s.pixel_spacing_mm == (1.5, 2.5)


def test_bad_series_files(tmp_path):
    np.save(tmp_path / "flat.npy", np.zeros((20, 20)))
    with pytest.raises(StudyError, match=r"expected a \(T, Y, X\)"):
        read_series(tmp_path / "flat.npy")
    (tmp_path / "x.txt").write_text("x")
    with pytest.raises(StudyError, match="unknown series format"):
        read_series(tmp_path / "x.txt")
    np.save(tmp_path / "short.npy", np.ones((4, 32, 32)))
    with pytest.raises(StudyError, match="4 dynamics"):
        read_study(tmp_path / "short.npy", pixel_spacing_mm=2.0)
    bad = np.ones((12, 32, 32))
    bad[2, 1, 1] = np.inf  # filled from its neighbours in time, and named
    np.save(tmp_path / "inf.npy", bad)
    study = read_study(tmp_path / "inf.npy", pixel_spacing_mm=2.0)
    assert (study.slices[0].images == 1).all()
    assert "1 in dynamics [2]" in study.notes[0]


def test_a_series_stored_with_time_last_is_refused(tmp_path):
    """(Y, X, T) read as (T, Y, X) would be 160 dynamics of a 160 x 71 image."""
    arr = np.random.default_rng(0).random((71, 160, 160)).astype(np.float32)
    np.save(tmp_path / "yxt.npy", arr.transpose(1, 2, 0))
    with pytest.raises(StudyError, match=r"160 dynamics of a 160 x 71 image.*moveaxis"):
        read_series(tmp_path / "yxt.npy", pixel_spacing_mm=2.0)
    np.save(tmp_path / "tyx.npy", arr)  # as it should be: read
    assert read_series(tmp_path / "tyx.npy", pixel_spacing_mm=2.0).images.shape == arr.shape
    np.save(tmp_path / "many.npy", np.zeros((128, 128, 96), np.float32))  # 128 dynamics of
    assert read_series(tmp_path / "many.npy", pixel_spacing_mm=2.0).n_dynamics == 128  # 128x96


def _nifti(path, vol, zooms, unit):
    import nibabel as nib

    img = nib.Nifti1Image(vol, np.diag([*zooms, 1.0]))
    img.header.set_xyzt_units(unit, "sec")
    img.header.set_zooms((*zooms, 0.9))
    nib.save(img, str(path))


def test_a_nifti_spacing_is_read_in_its_unit_and_checked(tmp_path):
    vol = np.random.default_rng(0).random((24, 20, 1, 12)).astype(np.float32)
    _nifti(tmp_path / "m.nii", vol, (0.0025, 0.002, 8.0), "meter")
    assert read_series(tmp_path / "m.nii").pixel_spacing_mm == pytest.approx((2.0, 2.5))
    _nifti(tmp_path / "bad.nii", vol, (0.0025, 0.002, 8.0), "mm")  # metres said to be mm
    with pytest.raises(StudyError, match="--pixel-spacing"):
        read_series(tmp_path / "bad.nii")
    assert read_series(tmp_path / "bad.nii", pixel_spacing_mm=2.2).pixel_spacing_mm == (2.2, 2.2)


def test_a_corrected_nifti_keeps_the_inputs_geometry(tmp_path):
    import nibabel as nib

    vol = np.random.default_rng(0).integers(0, 3000, (24, 20, 1, 12)).astype(np.int16)
    affine = np.array([[0, -1.8, 0, 90], [2.2, 0, 0.3, -40], [0, 0.2, 8, 12], [0, 0, 0, 1]])
    img = nib.Nifti1Image(vol, affine)
    img.header.set_xyzt_units("mm", "sec")
    img.header.set_zooms((2.2, 1.8, 8.0, 0.9))
    nib.save(img, str(tmp_path / "in.nii.gz"))
    s = read_series(tmp_path / "in.nii.gz")
    write_series(tmp_path / "out.nii.gz", s.images * 0.5, like=s.source)
    out = nib.load(str(tmp_path / "out.nii.gz"))
    assert out.shape == vol.shape
    np.testing.assert_allclose(out.affine, affine)
    assert out.header.get_xyzt_units() == ("mm", "sec")
    assert float(out.header.get_zooms()[3]) == pytest.approx(0.9)
    np.testing.assert_allclose(np.asarray(out.dataobj)[:, :, 0, :], vol[:, :, 0, :] * 0.5)


def test_a_series_without_spacing_takes_a_typical_one_and_says_so(tmp_path, caplog):
    from perfmoco.io.series import ASSUMED_SPACING_MM

    np.save(tmp_path / "a.npy", np.ones((12, 20, 24), np.float32))
    s = read_series(tmp_path / "a.npy")
    assert s.pixel_spacing_mm == (ASSUMED_SPACING_MM,) * 2
    assert "2 mm assumed" in caplog.text
    # a study's reader says it in the study's notes (its messages), once
    study = read_study(tmp_path / "a.npy")
    assert [n for n in study.notes if "a.npy: no pixel spacing given; 2 mm assumed" in n]
    assert not read_study(tmp_path / "a.npy", pixel_spacing_mm=1.5).notes
