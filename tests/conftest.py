"""Shared fixtures: small hand-made studies (fast) for I/O and pipeline tests."""

from __future__ import annotations

import numpy as np
import pytest

from perfmoco.study import PerfusionStudy, SliceGeometry, SliceRole, SliceSeries


def make_series(
    slice_index: int,
    role: SliceRole = SliceRole.HIGHRES,
    shape: tuple[int, int] = (32, 40),
    n_dynamics: int = 12,
    n_pd: int = 2,
    seed: int = 0,
) -> SliceSeries:
    rng = np.random.default_rng(seed + slice_index)
    t0 = 36000.0 + slice_index * 0.15
    return SliceSeries(
        images=(rng.random((n_dynamics, *shape)) * 100 + 10).astype(np.float32),
        times_s=t0 + 2.0 + np.arange(n_dynamics) * 0.61,
        pixel_spacing_mm=(2.0, 2.5),
        role=role,
        slice_index=slice_index,
        pd_images=(rng.random((n_pd, *shape)) * 1000 + 2000).astype(np.float32),
        pd_times_s=t0 + np.arange(n_pd) * 0.61,
        saturation_time_s=0.1 if role is SliceRole.HIGHRES else 0.025,
        geometry=SliceGeometry(
            position=(1.5, -20.0, 10.0 * slice_index),
            read_dir=(0.8, 0.6, 0.0),
            phase_dir=(-0.6, 0.8, 0.0),
            slice_dir=(0.0, 0.0, 1.0),
            field_of_view_mm=(shape[1] * 2.5, shape[0] * 2.0, 8.0),
        ),
    )


@pytest.fixture
def small_study() -> PerfusionStudy:
    """Three high-res slices and a half-resolution AIF slice, 12 dynamics, 2 PD frames."""
    slices = [make_series(k) for k in range(3)]
    slices.append(make_series(3, SliceRole.AIF, shape=(16, 20)))
    return PerfusionStudy(slices=slices, study_id="small")


@pytest.fixture(scope="session")
def ph_a():
    """Default phantom, vendor a (shared read-only by the phantom tests)."""
    from perfmoco.phantom import generate_phantom

    return generate_phantom(seed=0)


@pytest.fixture(scope="session")
def ph_b():
    from perfmoco.phantom import generate_phantom

    return generate_phantom(seed=1, vendor="b", n_dynamics=45, motion="breathing+gasp")


@pytest.fixture(scope="session")
def ph_none():
    from perfmoco.phantom import generate_phantom

    return generate_phantom(seed=2, motion="none", n_dynamics=40)


@pytest.fixture(scope="session")
def ph_still():
    """A motion-free phantom, vendor a (the quantification tests' study)."""
    from perfmoco.phantom import generate_phantom

    return generate_phantom(seed=0, motion="none")


@pytest.fixture(scope="session")
def clean_study(ph_still):
    """``ph_still``'s study on its noise-free frames."""
    def key(s):
        return "aif" if s.role is SliceRole.AIF else f"s{s.slice_index}"

    return ph_still.study.replace_slices([
        s.replace(images=ph_still.noise_free[key(s)],
                  pd_images=ph_still.noise_free[key(s) + "_pd"])
        for s in ph_still.study.slices])


@pytest.fixture(scope="session")
def clean_result(clean_study):
    """``clean_study`` quantified with the defaults; it gives no warning."""
    import warnings

    from perfmoco.config import QuantConfig
    from perfmoco.quant import quantify_study

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        return quantify_study(clean_study, config=QuantConfig())
