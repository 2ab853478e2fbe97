"""MRD round trips, out-of-order input and bad input for perfmoco.io."""

from __future__ import annotations

import re

import numpy as np
import pytest

from perfmoco.config import MrdConfig
from perfmoco.io.files import read_mrd_images, read_study, write_mrd_images, write_study
from perfmoco.io.mrd import (
    images_to_study,
    make_image,
    meta_roles,
    series_to_images,
    study_to_images,
)
from perfmoco.io.mrd_header import build_header, parse_header
from perfmoco.study import SliceRole, StudyError


def _untagged(images, role):
    """The images with ``role`` removed from their GADGETRON_DataRole meta."""
    for img in images:
        m = img.meta
        m["GADGETRON_DataRole"] = [r for r in meta_roles(m) if r != role] or "Image"
        img.attribute_string = m.serialize()
    return images


def _by_key(study):
    return {(s.role, s.slice_index): s for s in study.slices}


def _assert_same_study(a, b):
    ka, kb = _by_key(a), _by_key(b)
    assert ka.keys() == kb.keys()
    for key, s in ka.items():
        r = kb[key]
        np.testing.assert_array_equal(s.images, r.images)
        np.testing.assert_array_equal(s.pd_images, r.pd_images)
        np.testing.assert_allclose(s.times_s, r.times_s, atol=0.0025)
        np.testing.assert_allclose(s.pd_times_s, r.pd_times_s, atol=0.0025)
        np.testing.assert_allclose(s.pixel_spacing_mm, r.pixel_spacing_mm, rtol=1e-6)
        assert r.saturation_time_s == pytest.approx(s.saturation_time_s)
        np.testing.assert_allclose(s.geometry.position, r.geometry.position, rtol=1e-6)
        np.testing.assert_allclose(s.geometry.read_dir, r.geometry.read_dir, rtol=1e-6)
        np.testing.assert_allclose(s.geometry.phase_dir, r.geometry.phase_dir, rtol=1e-6)


def test_file_round_trip_keeps_pixels_timing_geometry(small_study, tmp_path):
    path = tmp_path / "study.h5"
    write_study(small_study, path)
    back = read_study(path)
    _assert_same_study(small_study, back)
    assert back.aif is not None and back.aif.shape == (16, 20)
    hdr = parse_header(back.mrd_header)
    assert len(hdr.encoding) == 2
    assert hdr.encoding[0].encodedSpace.matrixSize.x == 40
    assert hdr.encoding[1].encodedSpace.matrixSize.y == 16
    assert hdr.sequenceParameters.TI == pytest.approx([100.0, 25.0])


def test_images_carry_tags_and_series(small_study):
    images = study_to_images(small_study)
    assert len(images) == 4 * 14
    pd = [i for i in images if "PD" in meta_roles(i.meta)]
    aif = [i for i in images if "AIF" in meta_roles(i.meta)]
    assert len(pd) == 4 * 2 and len(aif) == 14
    assert {i.getHead().image_series_index for i in aif} == {2}
    for img in images:
        assert img.data.dtype == np.float32
        h = img.getHead()
        assert h.matrix_size[2] == 1 and h.channels == 1
    # time stamps in 2.5 ms ticks, as scanners set them
    first = images[0].getHead()
    assert first.acquisition_time_stamp == round(small_study.slices[0].pd_times_s[0] / 0.0025)


def test_corrected_pd_frames_say_they_are_corrected(small_study):
    """A corrected series' PD frames carry ``MOCO`` beside ``PD`` (a console tells them
    from the received ones by their role, not only by their series)."""
    s = small_study.slices[0]
    images = series_to_images(s, series_index=100, pd_series_index=101, role="MOCO")
    roles = [meta_roles(i.meta) for i in images]
    assert roles[:2] == [["PD", "MOCO"]] * 2 and all(r == ["MOCO"] for r in roles[2:])
    assert [meta_roles(i.meta) for i in series_to_images(s, series_index=1)][:3] == [
        ["PD"], ["PD"], ["Image"]]


def test_shuffled_interleaved_input_gives_the_same_study(small_study):
    header = build_header(small_study)
    images = study_to_images(small_study)
    rng = np.random.default_rng(3)
    order = rng.permutation(len(images))
    back = images_to_study([images[i] for i in order], header)
    _assert_same_study(small_study, back)


def test_whole_groups_one_after_another_like_the_mrd_client(small_study, tmp_path):
    # The MRD client sends every image_* group whole, in alphabetical order.
    path = tmp_path / "s.h5"
    write_study(small_study, path)
    header, images = read_mrd_images(path)
    reordered = sorted(images, key=lambda i: (-i.getHead().image_series_index, i.getHead().slice))
    _assert_same_study(small_study, images_to_study(reordered, header))


def test_untagged_pd_frames_are_found_by_brightness(small_study):
    images = _untagged(study_to_images(small_study), "PD")
    back = images_to_study(images, build_header(small_study))
    _assert_same_study(small_study, back)


def _pd_scaled(study, factor):
    return study.replace_slices([s.replace(pd_images=s.pd_images * factor) for s in study.slices])


def test_untagged_pd_frames_of_a_lower_flip_angle(small_study):
    """PD frames read out with a lower flip angle are less bright: about twice the
    dynamics' mean here (found by brightness), or as bright (the protocol's count,
    ``mrd.pd_frames``, says how many lead each slice)."""
    dim = _pd_scaled(small_study, 0.05)  # mean ~125 against the dynamics' ~60
    back = images_to_study(_untagged(study_to_images(dim), "PD"), build_header(dim))
    _assert_same_study(dim, back)
    flat = _pd_scaled(small_study, 0.024)  # as bright as the dynamics: not told apart
    images = _untagged(study_to_images(flat), "PD")
    guessed = images_to_study(images, build_header(flat))
    assert all(s.pd_images.shape[0] == 0 and s.n_dynamics == 14 for s in guessed.slices)
    told = images_to_study(_untagged(study_to_images(flat), "PD"), build_header(flat),
                           config=MrdConfig(pd_frames=2))
    _assert_same_study(flat, told)
    none = images_to_study(_untagged(study_to_images(small_study), "PD"),
                           build_header(small_study), config=MrdConfig(pd_frames=0))
    assert all(s.pd_images.shape[0] == 0 for s in none.slices)
    with pytest.raises(StudyError, match="mrd.pd_frames"):
        images_to_study(_untagged(study_to_images(flat), "PD"), build_header(flat),
                        config=MrdConfig(pd_frames=5))


def test_aif_found_by_matrix_when_untagged(small_study):
    images = _untagged(study_to_images(small_study), "AIF")
    back = images_to_study(images, None)
    assert back.aif is not None and back.aif.slice_index == 3
    assert len(back.highres) == 3


def test_aif_by_configured_series_index(small_study):
    # no tags: only the configured series index can tell
    images = _untagged(study_to_images(small_study), "AIF")
    back = images_to_study(images, None, config=MrdConfig(aif_series_index=2))
    assert back.aif is not None and back.aif.role is SliceRole.AIF
    assert back.aif.shape == (16, 20)
    back = images_to_study(images, None, config=MrdConfig(aif_series_index=7))
    assert back.aif is None and len(back.slices) == 4


def test_results_keep_source_headers(small_study, tmp_path):
    path = tmp_path / "s.h5"
    write_study(small_study, path)
    back = read_study(path)
    out = study_to_images(back)
    header, images = read_mrd_images(path)
    assert len(out) == len(images)
    src = {(i.getHead().slice, i.getHead().acquisition_time_stamp) for i in images}
    assert {(i.getHead().slice, i.getHead().acquisition_time_stamp) for i in out} == src


def _images(study):
    return study_to_images(study)


def test_mismatched_matrix_within_a_slice_is_refused(small_study):
    images = _images(small_study)
    odd = make_image(np.ones((30, 40), np.float32), template=images[5].getHead())
    with pytest.raises(StudyError, match=r"slice 0 \(highres\): images of different matrix"):
        images_to_study(images[:5] + [odd] + images[6:])


def test_too_few_dynamics_is_refused(small_study):
    for s in small_study.slices:
        s.images, s.times_s = s.images[:6], s.times_s[:6]
    with pytest.raises(StudyError, match="6 dynamics, at least 10"):
        images_to_study(_images(small_study))


def test_non_finite_pixels_are_filled_and_named(small_study):
    """A NaN pixel is filled from the same pixel's neighbouring dynamics, a pixel NaN in
    every dynamic (a background masked by another program) with 0, a dynamic without a
    finite pixel becomes a lost (blank) frame; the study's notes say so."""
    im = small_study.slices[1].images
    want = (im[3, 3, 3] + im[5, 3, 3]) / 2
    im[4, 3, 3] = np.nan
    im[:, 0, :4] = np.inf
    im[7] = np.nan
    study = images_to_study(_images(small_study))
    got = study.slices[1].images
    assert got[4, 3, 3] == pytest.approx(want, rel=1e-5)
    assert (got[:, 0, :4] == 0).all() and (got[7] == 0).all() and np.isfinite(got).all()
    assert len(study.notes) == 1
    assert re.match(r"slice 1 \(highres\): non-finite pixels \(NaN/Inf\), \d+ in every "
                    r"dynamic: filled", study.notes[0]), study.notes
    np.testing.assert_array_equal(study.slices[0].images, small_study.slices[0].images)


def test_missing_timing_is_refused(small_study):
    images = _images(small_study)
    for img in images:
        h = img.getHead()
        h.acquisition_time_stamp = 0
        img.setHead(h)
    with pytest.raises(StudyError, match="timing is missing"):
        images_to_study(images)


def test_not_mrd_header_is_refused(small_study):
    with pytest.raises(StudyError, match="not valid MRD XML"):
        images_to_study(_images(small_study), "<html>hello</html>")


def test_header_with_trailing_nul_is_accepted(small_study):
    header = build_header(small_study) + "\x00"
    assert images_to_study(_images(small_study), header.encode()).mrd_header.endswith(">")


def test_multichannel_image_is_refused():
    import ismrmrd

    img = ismrmrd.Image.from_array(np.ones((2, 1, 8, 8), np.float32), transpose=False)
    with pytest.raises(StudyError, match="one channel"):
        images_to_study([img])


def test_no_images_and_bad_files(tmp_path):
    with pytest.raises(StudyError, match="no images"):
        images_to_study([])
    with pytest.raises(StudyError, match="no such file"):
        read_study(tmp_path / "missing.h5")
    bad = tmp_path / "bad.h5"
    bad.write_text("not hdf5")
    with pytest.raises(StudyError, match="not a readable HDF5"):
        read_study(bad)
    empty = tmp_path / "empty.h5"
    write_mrd_images(empty, None, [])
    with pytest.raises(StudyError, match="no MRD dataset"):
        read_study(empty)


def _damaged(small_study, tmp_path, damage):
    """``small_study`` written to an MRD file, then its first image group damaged."""
    import h5py

    path = tmp_path / "study.h5"
    write_study(small_study, path)
    with h5py.File(path, "r+") as f:
        group = f["dataset"]
        name = sorted(n for n in group if n.startswith("image"))[0]
        damage(group, name)
    return path


def _rewrite(group, name, key, data):
    del group[name][key]
    group[name][key] = data


@pytest.mark.parametrize("damage, match", [
    # ismrmrd's own reader raised a KeyError (a traceback) for a group without headers
    (lambda g, n: g[n].__delitem__("header"), "has no header"),
    (lambda g, n: g.create_dataset(n + "_x", data=np.zeros(3)), "is not a group"),
    # fewer header rows than data rows: the images beyond them were dropped silently
    (lambda g, n: _rewrite(g, n, "header", g[n]["header"][:5]), "rows: they must match"),
    # data of one row per image: numpy spread it over every row of the matrix
    (lambda g, n: _rewrite(g, n, "data", g[n]["data"][:, 0, 0, 0, :]), "holds data of shape"),
])
def test_damaged_mrd_image_groups_are_a_clear_error(small_study, tmp_path, damage, match):
    with pytest.raises(StudyError, match=match):
        read_study(_damaged(small_study, tmp_path, damage))


def test_a_pixel_spacing_given_for_an_mrd_study_keeps_the_aif_slices_ratio(small_study,
                                                                          tmp_path):
    """``--pixel-spacing`` on an MRD study sets the high-resolution slices' spacing and
    scales the AIF slice's coarser one with it (it had been set to the same value), and
    the study says so."""
    path = tmp_path / "study.h5"
    write_study(small_study, path)
    hr, aif = small_study.highres[0].pixel_spacing_mm, small_study.aif.pixel_spacing_mm
    back = read_study(path, pixel_spacing_mm=1.5)
    for s in back.highres:
        assert s.pixel_spacing_mm == (1.5, 1.5)
    np.testing.assert_allclose(back.aif.pixel_spacing_mm,
                               [1.5 * a / h for a, h in zip(aif, hr)])
    assert any("--pixel-spacing" in n for n in back.notes)


def test_a_scan_across_midnight_keeps_its_timing(small_study):
    """MRD's time stamps count ticks since midnight: a study whose stamps restart at 0
    part-way (ticks of 2.5 ms) reads as the same study, its frames in order and its
    times a day on after midnight (it had been refused: "acquisition times do not
    increase"), and says so."""
    ref = images_to_study(_images(small_study))
    images = _images(small_study)
    stamps = [int(img.getHead().acquisition_time_stamp) for img in images]
    day = int(round(86400 / 0.0025))
    shift = day - (min(stamps) + max(stamps)) // 2  # midnight half-way through the scan
    for img in images:
        h = img.getHead()
        h.acquisition_time_stamp = (int(h.acquisition_time_stamp) + shift) % day
        img.setHead(h)
    back = images_to_study(images)
    assert any("midnight" in n for n in back.notes)
    for a, b in zip(ref.slices, back.slices):
        np.testing.assert_array_equal(a.images, b.images)
        np.testing.assert_allclose(np.diff(b.times_s), np.diff(a.times_s), atol=1e-6)
        np.testing.assert_allclose(b.times_s - a.times_s, shift * 0.0025, atol=1e-6)
