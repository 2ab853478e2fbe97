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
    bad[2, 1, 1] = np.inf
    np.save(tmp_path / "inf.npy", bad)
    with pytest.raises(StudyError, match="non-finite"):
        read_study(tmp_path / "inf.npy", pixel_spacing_mm=2.0)
