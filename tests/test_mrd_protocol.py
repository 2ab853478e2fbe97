"""What an MRD study says of its protocol, checked (perfmoco.io.protocol): saturation
times by encoding, in range and agreeing, the AIF's the shorter, the dynamics' interval,
the field strength."""

from __future__ import annotations

import ismrmrd
import ismrmrd.xsd as xsd
import numpy as np
import pytest

from perfmoco.config import MrdConfig
from perfmoco.io.mrd import images_to_study, study_header, study_to_images
from perfmoco.io.mrd_header import parse_header
from perfmoco.phantom import generate_phantom
from perfmoco.study import SliceRole


@pytest.fixture(scope="module")
def sent():
    study = generate_phantom(seed=7, n_dynamics=12, motion="none").study
    return study_to_images(study), study_header(study)


def _with(images, meta_ms=None):
    """Copies of the images, their dynamics' SaturationTime_ms set per role
    (``{"highres": "150", "aif": None}``: None removes it); PD frames' removed."""
    out = []
    for im in images:
        meta = ismrmrd.Meta.deserialize(im.attribute_string)
        aif = "AIF" in str(meta.get("GADGETRON_DataRole", "")) or int(im.slice) == 3
        value = (meta_ms or {}).get("aif" if aif else "highres")
        if value is None or "PD" in str(meta.get("GADGETRON_DataRole", "")):
            meta.pop("SaturationTime_ms", None)
        else:
            meta["SaturationTime_ms"] = value
        c = ismrmrd.Image.from_array(np.asarray(im.data).copy())
        c.setHead(im.getHead())
        c.attribute_string = meta.serialize()
        out.append(c)
    return out


def _header(header, ti=None, field_t=None):
    hdr = parse_header(header)
    if ti is not None:
        hdr.sequenceParameters.TI = ti
    if field_t is not None:
        hdr.acquisitionSystemInformation.systemFieldStrength_T = field_t
    return xsd.ToXML(hdr)


def _ts(study):
    return {s.role: (s.saturation_time_s, s.saturation_time_source) for s in study.slices}


def test_the_headers_ti_is_read_by_encoding_an_empty_entry_kept(sent):
    """TI [0, 25]: no high-res value (defaults then, said by the quantification), the
    AIF's 25 ms stays the AIF's (dropping the 0 gave the tissue slices 25 ms: +83-95 %)."""
    images, header = sent
    got = images_to_study(_with(images), _header(header, ti=[0.0, 25.0]))
    ts = _ts(got)
    assert ts[SliceRole.HIGHRES] == (None, "")
    assert ts[SliceRole.AIF] == (pytest.approx(0.025), "header TI")
    assert not got.notes


def test_a_saturation_time_in_another_unit_is_not_used(sent):
    images, header = sent
    got = images_to_study(_with(images, {"highres": "100000", "aif": "25"}),
                          _header(header, ti=[110.0, 25.0]))
    ts = _ts(got)
    assert ts[SliceRole.HIGHRES] == (pytest.approx(0.110), "header TI")
    assert ts[SliceRole.AIF] == (pytest.approx(0.025), "image meta SaturationTime_ms")
    assert sum("100000 ms (image meta SaturationTime_ms) is outside 5-500 ms" in n
               for n in got.notes) == 3  # each high-res slice


def test_meta_and_header_disagreeing_are_named(sent):
    images, header = sent
    got = images_to_study(_with(images, {"highres": "100", "aif": "25"}),
                          _header(header, ti=[110.0, 25.0]))
    assert _ts(got)[SliceRole.HIGHRES][0] == pytest.approx(0.100)
    assert sum("100 ms (image meta SaturationTime_ms) used; the header TI says 110 ms" in n
               for n in got.notes) == 3
    assert not any("slice 3" in n for n in got.notes)  # the AIF's agree


def test_an_aif_saturation_time_not_the_shorter_is_named(sent):
    images, header = sent
    got = images_to_study(_with(images), _header(header, ti=[25.0, 100.0]))  # swapped
    assert [n for n in got.notes if "(aif): saturation time 100 ms is not shorter than the "
            "high-resolution slices' (25 ms)" in n]


def test_time_stamps_of_another_tick_are_named(sent):
    images, header = sent
    assert not images_to_study(images, header).notes  # the phantom's own: nothing to say
    got = images_to_study(images, header, config=MrdConfig(time_stamp_tick_s=0.0001))
    assert len(got.notes) == 4 and all("mrd.time_stamp_tick_s" in n for n in got.notes)
    assert "0.1 ms a tick" in got.notes[0]


def test_the_field_strength_is_read(sent):
    images, header = sent
    assert images_to_study(images, _header(header, field_t=1.5)).field_strength_t == 1.5
    assert images_to_study(images, header).field_strength_t == 3.0


def test_pd_frames_missed_on_the_tissue_slices_alone_are_named(sent):
    """The tissue slices' untagged PD frames as bright as their dynamics (a low flip
    angle): not found by brightness, while the AIF slice's are; mrd.pd_frames named."""
    images, header = sent
    out = []
    for im in images:
        meta = ismrmrd.Meta.deserialize(im.attribute_string)
        pd = "PD" in str(meta.get("GADGETRON_DataRole", ""))
        meta["GADGETRON_DataRole"] = "Image"
        data = np.asarray(im.data).copy()
        if pd and int(im.slice) != 3:
            data = data * 0.3  # ~ the dynamics' brightness
        c = ismrmrd.Image.from_array(data)
        c.setHead(im.getHead())
        c.attribute_string = meta.serialize()
        out.append(c)
    got = images_to_study(out, header)
    assert got.aif.pd_images.shape[0] > 0
    assert all(s.pd_images.shape[0] == 0 for s in got.highres)
    assert [n for n in got.notes if "no PD frames found by brightness" in n
            and "set mrd.pd_frames" in n]
    assert not images_to_study(images, header).notes
