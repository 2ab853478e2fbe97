"""MRD studies as other sites send them: numbering, fields of view, meta, mixed matrices."""

from __future__ import annotations

import ismrmrd
import numpy as np
import pytest

from perfmoco.io.files import read_mrd_images, write_mrd_images
from perfmoco.io.mrd import images_to_study, study_header, study_to_images
from perfmoco.phantom import generate_phantom
from perfmoco.quant.levels import study_levels
from perfmoco.study import SliceRole, StudyError


@pytest.fixture(scope="module")
def sent():
    """A phantom study as MRD images and header, and the study itself."""
    study = generate_phantom(seed=7, n_dynamics=12, motion="none").study
    return study_to_images(study), study_header(study), study


def _copy(img, **fields):
    out = ismrmrd.Image.from_array(np.asarray(img.data).copy())
    out.setHead(img.getHead())
    out.attribute_string = img.attribute_string
    for key, val in fields.items():
        setattr(out, key, val)
    return out


def test_slices_numbered_apex_first_are_ordered_by_their_positions(sent):
    images, header, study = sent
    flip = {0: 2, 2: 0}
    hr = [s.slice_index for s in study.highres]
    got = images_to_study([_copy(im, slice=flip.get(int(im.slice), int(im.slice)))
                           if int(im.slice) in hr else _copy(im) for im in images], header)
    assert [s.slice_index for s in got.highres] == [2, 1, 0]  # basal first, by position
    np.testing.assert_array_equal(got.highres[0].images, study.highres[0].images)
    msgs: list[str] = []
    with pytest.warns(UserWarning, match="order of their positions"):
        assert study_levels(got.highres, {}, "auto", msgs) == ["basal", "mid", "apical"]
    assert any("order of their positions" in m and "slices 2, 1, 0" in m for m in msgs)
    msgs.clear()
    study_levels(study.highres, {}, "auto", msgs)  # numbered base first: nothing to say
    assert not msgs


def test_an_aif_slice_numbered_as_a_tissue_slice_is_kept_apart(sent):
    images, header, study = sent
    aif_index = study.aif.slice_index
    got = images_to_study([_copy(im, slice=0) if int(im.slice) == aif_index else _copy(im)
                           for im in images], header)
    indices = [s.slice_index for s in got.slices]
    assert len(set(indices)) == len(indices) == 4
    assert got.aif is not None and got.aif.slice_index not in {s.slice_index for s in got.highres}
    np.testing.assert_array_equal(got.aif.images, study.aif.images)


def test_no_field_of_view_in_the_images_takes_the_headers_recon_space(sent):
    images, header, study = sent
    got = images_to_study([_copy(im, field_of_view=(0.0, 0.0, 0.0)) for im in images], header)
    for s, want in zip(got.slices, study.slices):
        if s.role is SliceRole.HIGHRES:  # encoding 0's recon space is theirs
            np.testing.assert_allclose(s.pixel_spacing_mm, want.pixel_spacing_mm, rtol=1e-6)


def test_a_saturation_time_on_the_dynamics_alone_is_read(sent):
    images, _, _ = sent
    out = []
    for im in images:
        meta = ismrmrd.Meta.deserialize(im.attribute_string)
        if "PD" in str(meta.get("GADGETRON_DataRole", "")):
            meta.pop("SaturationTime_ms", None)
        else:
            meta["SaturationTime_ms"] = "150"
        out.append(_copy(im, attribute_string=meta.serialize()))
    got = images_to_study(out, None)
    assert all(s.saturation_time_s == pytest.approx(0.150) for s in got.slices)


def test_a_series_of_two_matrix_sizes_is_written_without_loss(tmp_path):
    imgs = []
    for shape, dtype in [((8, 8), np.float32), ((12, 12), np.float32), ((8, 8), np.uint16),
                         ((8, 8), np.float32)]:
        im = ismrmrd.Image.from_array(np.full(shape, 3, dtype))
        im.image_series_index = 100
        imgs.append(im)
    write_mrd_images(tmp_path / "r.h5", None, imgs)
    _, back = read_mrd_images(tmp_path / "r.h5")
    assert sorted((b.data.shape, b.data.dtype.str) for b in back) == sorted(
        (i.data.shape, i.data.dtype.str) for i in imgs)
    assert not list(tmp_path.glob("*.part"))


def test_unreadable_meta_in_a_file_is_named(tmp_path):
    import h5py

    write_mrd_images(tmp_path / "bad.h5", None,
                     [ismrmrd.Image.from_array(np.ones((8, 8), np.float32))])
    with h5py.File(tmp_path / "bad.h5", "r+") as f:  # meta cut short, as a broken writer leaves
        f["dataset/image_0/attributes"][0] = "<ismrmrdMeta><meta><name>GADGETRON_DataRole</name>"
    with pytest.raises(StudyError, match="image 0 of image_0 cannot be read"):
        read_mrd_images(tmp_path / "bad.h5")


def test_untagged_images_all_in_series_0_find_the_aif_by_its_matrix(sent):
    images, header, study = sent
    out = []
    for im in images:
        meta = ismrmrd.Meta.deserialize(im.attribute_string)
        meta.pop("GADGETRON_DataRole", None)
        out.append(_copy(im, image_series_index=0, attribute_string=meta.serialize()))
    got = images_to_study(out, header)
    assert got.aif is not None and got.aif.shape == study.aif.shape
    assert len(got.highres) == len(study.highres)


def test_an_absurd_pixel_stops_the_study_with_its_dynamic_named(sent):
    images, header, study = sent
    dyn = [i for i, im in enumerate(images) if int(im.slice) == study.highres[1].slice_index
           and "PD" not in str(ismrmrd.Meta.deserialize(im.attribute_string)
                               .get("GADGETRON_DataRole", ""))]
    level = float(np.percentile(study.highres[1].images, 99.9))
    for value, ok in ((1e30, False), (100 * level, True)):  # corrupt; a bright spike
        out = [_copy(im) for im in images]
        data = np.asarray(out[dyn[7]].data).copy()
        data[..., 50, 50] = value
        out[dyn[7]] = _with(out[dyn[7]], data)
        if ok:
            images_to_study(out, header)
        else:
            with pytest.raises(StudyError, match=r"implausible pixel values .* dynamics \[7\]"):
                images_to_study(out, header)


def _with(img, data):
    out = ismrmrd.Image.from_array(data.reshape(np.asarray(img.data).shape[-2:]))
    out.setHead(img.getHead())
    out.attribute_string = img.attribute_string
    return out


def test_the_originals_go_back_as_they_came_in(sent):
    from perfmoco.config import load_config
    from perfmoco.session import run_study

    images, header, _ = sent
    ints = []
    for n, im in enumerate(images):  # uint16 pixels, the site's own running image_index
        out = ismrmrd.Image.from_array(np.asarray(im.data).astype(np.uint16)[0, 0])
        head = im.getHead()
        head.data_type = out.getHead().data_type
        out.setHead(head)
        out.attribute_string = im.attribute_string
        out.image_index = 1000 + n
        ints.append(out)
    config = load_config(overrides={"server.method": "none"})
    got = run_study(ints, header, config=config, pipeline="perfmoco-moco", study_id="t")
    assert got.ok
    back = [im for im in got.images if int(im.image_index) >= 1000]
    assert len(back) == len(ints)
    for a, b in zip(back, ints):
        assert a.data.dtype == np.uint16 and int(a.image_index) == int(b.image_index)
        np.testing.assert_array_equal(a.data, b.data)


def test_outputs_move_off_the_series_the_scanner_used(sent, tmp_path):
    """A Gadgetron reconstruction numbers its image series from 100, perfmoco's corrected
    frames' default: its outputs move on by 1000 (a console showed corrected and
    uncorrected frames as one series), add to the received description and history, and
    a result file with them reads back as before."""
    from perfmoco.config import Config
    from perfmoco.pipeline import process_study
    from perfmoco.report.load import load_result

    images, header, _ = sent
    received = []
    for im in images:
        meta = ismrmrd.Meta.deserialize(im.attribute_string)
        meta["GADGETRON_SeqDescription"] = "PERF_STRESS"
        meta["GADGETRON_ImageProcessingHistory"] = ["GT", "NORM"]
        idx = 100 if int(im.image_series_index) == 1 else int(im.image_series_index)
        received.append(_copy(im, image_series_index=idx, attribute_string=meta.serialize()))
    result = process_study(images_to_study(received, header), config=Config(), method="none",
                           quantify=False)
    out = result.to_images(Config(), originals=received)
    ours = out[len(received):]
    assert {int(im.image_series_index) for im in ours} == {1100, 1101, 1102}
    for idx in (1100, 1101, 1102):  # numbered 1..N within each series, as Gadgetron does
        numbers = [int(im.image_index) for im in ours if int(im.image_series_index) == idx]
        assert sorted(numbers) == list(range(1, len(numbers) + 1))
    meta = ismrmrd.Meta.deserialize(ours[-1].attribute_string)
    assert meta["GADGETRON_SeqDescription"].startswith("PERF_STRESS_MOCO_")
    assert list(meta["GADGETRON_ImageProcessingHistory"])[:3] == ["GT", "NORM", "PERFMOCO"]
    path = tmp_path / "result.h5"
    write_mrd_images(path, header, out)
    back = load_result(path)
    assert ([s.slice_index for s in back.study.slices]
            == [s.slice_index for s in result.study.slices])
    assert all(m is not None for m in back.moco)
    plain = process_study(images_to_study(images, header), config=Config(), method="none",
                          quantify=False).to_images(Config(), originals=list(images))
    assert {int(im.image_series_index) for im in plain[len(images):]} == {100, 101, 102}
