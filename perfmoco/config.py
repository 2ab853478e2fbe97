"""Pipeline settings: frozen dataclasses loaded from ``config/perfmoco.yaml``.

One :class:`Config` holds one section per stage.  It is built from the
packaged defaults, then a YAML file, then flat ``section.key=value``
overrides (from the CLI, a Gadgetron chain's ``<configuration>`` or a
client's JSON settings).  Unknown keys and values of the wrong type are
refused with a :class:`ConfigError` that names them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from perfmoco.config_merge import ConfigError, check_interpolation, merge, parse_slice_levels
from perfmoco.config_moco import MocoConfig

__all__ = [
    "Config",
    "ConfigError",
    "MocoConfig",
    "MrdConfig",
    "QuantConfig",
    "ServerConfig",
    "check_interpolation",
    "parse_slice_levels",
    "load_config",
]

DEFAULT_CONFIG_PATH = Path(__file__).resolve().parent / "data" / "perfmoco.yaml"


@dataclasses.dataclass(frozen=True)
class MrdConfig:
    """How MRD images are sorted into a study and how outputs are tagged."""

    #: ``image_series_index`` of the low-resolution AIF slice; -1 = detect
    #: (an ``encoding`` meta value of 1, else the smaller matrix).
    aif_series_index: int = -1
    #: Output series indices (each output kind needs its own: MRD HDF5).
    moco_series_index: int = 100
    moco_pd_series_index: int = 101
    moco_aif_series_index: int = 102
    map_series_index: int = 110
    #: The MBF maps' fit quality (``Quality_Map``: fit r2 x 100 where the pixel's MBF
    #: counts, 0 where it is flagged or outside the myocardium); -1: not sent.
    quality_series_index: int = 111
    #: QA report images (bullseye, MBF maps) sent back as secondary captures.
    report_series_index: int = 120
    #: Seconds per tick of ``acquisition_time_stamp`` (2.5 ms on most scanners).
    time_stamp_tick_s: float = 0.0025
    #: Fewest dynamics per slice to process a study.
    min_dynamics: int = 10
    #: Leading frames of each slice that are PD frames where no image is tagged
    #: ``GADGETRON_DataRole=PD``: -1 = found by brightness (leading frames at least
    #: ``perfmoco.io.mrd.PD_BRIGHTNESS_RATIO`` x the following ones), else this many
    #: (0: none).  Set it for a protocol whose PD frames are untagged and read out with
    #: a low flip angle: they are then about as bright as the dynamics.
    pd_frames: int = -1


#: Native T1 of blood and myocardium at 1.5 T, s (Stanisz et al. 2005, MRM 54:507, the
#: source of the 3 T defaults 1.932 / 1.471 s).
T1_AT_1P5T_S = (1.441, 1.030)


@dataclasses.dataclass(frozen=True)
class QuantConfig:
    """Signal model and Fermi quantification (3T defaults)."""

    t1_blood_s: float = 1.932
    t1_myocardium_s: float = 1.471
    #: Gd relaxivity, l/(mmol s) at 3T.
    relaxivity: float = 4.5
    #: Defaults when the headers carry no saturation time.
    saturation_time_highres_s: float = 0.100
    saturation_time_aif_s: float = 0.025
    #: Effective saturation efficiency of the high-resolution and the AIF sequence
    #: (imperfect saturation and the recovery during the readout before the k-space
    #: centre), used only without PD frames, where M0 comes from the baseline; 1 is
    #: ideal.  With PD frames it cancels and is logged per slice
    #: (``perfmoco.quant.signal.saturation_efficiency``): measure it there once for a
    #: protocol whose other studies lack PD frames.  0: not measured (the ideal 1 is
    #: used, and what rests on it is marked unreliable); a site's measured 1 is set.
    saturation_efficiency_highres: float = 0.0
    saturation_efficiency_aif: float = 0.0
    hematocrit: float = 0.45
    #: Myocardial tissue density, g/ml (converts flow per ml to per g).
    tissue_density: float = 1.05
    #: Number of frames before bolus arrival used as baseline (0 = automatic).
    baseline_frames: int = 0
    exclude_qc_frames: bool = True
    #: M0 / PD signal ratio (PD frames read out with another flip angle).
    pd_scale: float = 1.0
    #: Gaussian SD of the M0 (PD) smoothing within the myocardium, mm (pixels near a
    #: cavity, which hold some of its blood, keep their own PD).
    pd_smooth_mm: float = 2.0
    #: Divide the AIF by (1 - hematocrit): plasma instead of blood [Gd].
    hematocrit_correction: bool = False
    #: Correct the AIF for T2* signal loss at high [Gd] (needs the echo time).
    t2star_correction: bool = False
    #: Echo time of the AIF readout, s, and T2* relaxivity of blood, l/(mmol s).
    te_aif_s: float = 0.0012
    r2star_blood: float = 10.0
    #: An AIF whose peak stays below this [Gd] (mmol/l) is flat: no MBF.
    min_aif_peak_gd: float = 0.5
    #: Pixel MBF above this (ml/min/g) or with fit r2 below r2_min is flagged.
    max_mbf: float = 8.0
    r2_min: float = 0.5
    #: A segment's value is marked unreliable (segment table, summary, MRD meta,
    #: bullseye) when the standard error of its median exceeds this (ml/min/g;
    #: 0.5 keeps its 95 % interval narrower than the gap between a defect, ~1,
    #: and normal stress flow, ~3) ...
    segment_max_se: float = 0.5
    #: ... or when more than this share of its pixels' fits failed, or of its slice's.
    segment_max_flagged: float = 0.5
    #: Stress MBF (ml/min/g) below which a pixel counts as ischaemic: each segment's share
    #: of such pixels (``below``) and the study's ischaemic burden (share of all fitted
    #: myocardial pixels).  2.0 as the defect/healthy split of the phantom targets; the
    #: literature's cut-offs for stress MBF lie near it (e.g. 1.94 ml/g/min).
    ischemia_mbf: float = 2.0
    #: Pixel fits with the cheaper 1-point model, bias-corrected per segment.
    fast_pixel_fit: bool = False
    #: Fermi fits (delays, segments, pixels) on the curves projected onto the temporal
    #: components that stand out of the noise (:mod:`perfmoco.quant.denoise`): a
    #: nonlinear fit reads noisy curves low; noise-free curves are left as they are.
    temporal_denoise: bool = True
    #: Pixels near the LV cavity also fit the fraction of its blood's signal they hold,
    #: mixed into theirs before the [Gd] conversion as partial volume mixes them
    #: (:class:`perfmoco.quant.spillover.SignalMix`, with the slice's own LV pool
    #: signal): endocardial partial volume is not read as flow; the segment fits
    #: fit a blood volume too (``fit_fermi_grouped(group_blood=True)``).
    blood_spillover: bool = True
    #: ... and septal pixels nearer the RV cavity the RV blood's (its bolus comes
    #: seconds before the LV's; their baseline ends before it).
    rv_spillover: bool = True
    #: How far from the LV or RV cavity (pixels, chessboard distance) a pixel fits
    #: that blood fraction. The blood pool peaks at 5-10x the myocardium's [Gd], so
    #: even the ~2 % that an image's point-spread carries two pixels into the wall
    #: reads as 10-20 % of flow; 1 covers only the pixels touching the cavity. In
    #: acquired pixels: scaled by ``interpolation`` for zero-filled images.
    spillover_rim_px: int = 2
    #: Acquired pixel size over the images' pixel size (k-space zero-filling), which
    #: scales every distance the quantification states in pixels (the rim above, the
    #: core pixels' depth, the AIF's core): 0 reads it from each series' spectrum
    #: (:mod:`perfmoco.quant.resolution`), 1 takes the pixels as acquired.
    interpolation: float = 0.0
    #: A slice whose LV lies further than this from the other slices' is searched
    #: again near theirs, mm (:mod:`perfmoco.anatomy.stack`; 0: each on its own).
    stack_lv_tolerance_mm: float = 30.0
    #: The slices' bolus delays (AIF to myocardium, s) come from one fit of the mean
    #: core curve of all slices, each slice's within +- this of it (its shape within a
    #: factor 2); 0: that one delay for every slice, whose pixels then move within
    #: +-0.3 s of it (:func:`perfmoco.quant.grouped.fit_fermi_grouped`).  A thin apical
    #: wall's own mean curve is too noisy for a delay (see docs/quantification.md).
    slice_delay_window_s: float = 0.0
    #: Each segment's Fermi shape is also fitted within this factor of the study's (the
    #: delay fit's) and that fit kept unless the segment's own shape fits its mean curve
    #: clearly better (a likelihood-ratio test); 0: every segment fits its shape freely
    #: (:func:`perfmoco.quant.grouped.fit_fermi_grouped`, ``group_shape_range``).
    segment_shape_range: float = 2.0
    #: Level of each high-resolution slice, most basal first, for the AHA segments:
    #: ``"auto"`` (3 slices: basal, mid, apical; 1: mid; 2: basal and mid, or mid and
    #: apical where the second's LV cavity is much smaller; more: thirds) or the levels,
    #: e.g. ``"mid, apical"`` (:mod:`perfmoco.quant.levels`).
    slice_levels: str = "auto"

    def no_pd_efficiency(self, *, aif: bool) -> tuple[str, float]:
        """The saturation efficiency used without PD frames (1 where not set), its name."""
        key = f"quant.saturation_efficiency_{'aif' if aif else 'highres'}"
        return key, self._efficiency_setting(aif) or 1.0

    def no_pd_efficiency_set(self, *, aif: bool) -> bool:
        """Whether that efficiency was set (a measured value; 0 is "not measured")."""
        return self._efficiency_setting(aif) > 0

    def _efficiency_setting(self, aif: bool) -> float:
        return float(self.saturation_efficiency_aif if aif else self.saturation_efficiency_highres)

    def default_saturation_time(self, *, aif: bool) -> tuple[str, float]:
        """The saturation time (s) used where a header gives none, and its setting's name."""
        key = f"quant.saturation_time_{'aif' if aif else 'highres'}_s"
        return key, self.saturation_time_aif_s if aif else self.saturation_time_highres_s

    def for_field_strength(self, tesla: float | None) -> tuple[QuantConfig, str | None]:
        """These settings for a scan at ``tesla`` (its header's field strength), and what
        changed: each native T1 left at its 3 T default becomes the 1.5 T value of the
        same source (:data:`T1_AT_1P5T_S`) on a 1.5 T scan; at another field they stay,
        said.  (They matter where M0 comes from the baseline: no PD frames.)
        """
        three = QuantConfig()
        default = {"t1_blood_s": self.t1_blood_s == three.t1_blood_s,
                   "t1_myocardium_s": self.t1_myocardium_s == three.t1_myocardium_s}
        if tesla is None or 2.7 <= tesla <= 3.3 or not any(default.values()):
            return self, None
        if 1.3 <= tesla <= 1.7:
            values = dict(zip(default, T1_AT_1P5T_S))
            changes = {k: v for k, v in values.items() if default[k]}
            said = ", ".join(f"quant.{k} {v:g} s" for k, v in changes.items())
            return (dataclasses.replace(self, **changes),
                    f"a {tesla:g} T scan: the 1.5 T native T1s where the settings kept the "
                    f"3 T defaults ({said})")
        keys = " and ".join(f"quant.{k}" for k, kept in default.items() if kept)
        return self, (f"a {tesla:g} T scan with the 3 T native T1s ({keys}): set this "
                      "field's, MBF without PD frames depends on them")


@dataclasses.dataclass(frozen=True)
class ServerConfig:
    """The standalone MRD streaming server."""

    host: str = "127.0.0.1"
    port: int = 9002
    #: Largest declared message length accepted before allocating, bytes.
    max_message_bytes: int = 64 * 1024 * 1024
    #: Largest study accepted per connection, bytes of pixels.
    max_study_bytes: int = 2 * 1024 * 1024 * 1024
    #: Studies processed at once; further connections wait.
    workers: int = 2
    #: Seconds a connection may stay silent before it is closed.
    idle_timeout_s: float = 300.0
    #: Motion-correction method of the streaming entry points (server, replay,
    #: gadget): ``dl``, ``iterative`` or ``none``.
    method: str = "dl"


@dataclasses.dataclass(frozen=True)
class Config:
    """All perfmoco settings."""

    mrd: MrdConfig = MrdConfig()
    moco: MocoConfig = MocoConfig()
    quant: QuantConfig = QuantConfig()
    server: ServerConfig = ServerConfig()

    def with_overrides(self, overrides: Mapping[str, Any]) -> Config:
        """Copy with ``{"section.key": value}`` overrides applied and checked."""
        nested: dict[str, dict[str, Any]] = {}
        for dotted, value in overrides.items():
            section, _, key = str(dotted).partition(".")
            if not key:
                raise ConfigError(f"override {dotted!r} must look like 'section.key'")
            nested.setdefault(section, {})[key] = value
        return merge(self, nested)


def load_config(
    path: str | Path | None = None, *, overrides: Mapping[str, Any] | None = None
) -> Config:
    """Load settings: packaged defaults, then ``path``, then ``overrides``.

    Parameters
    ----------
    path : str or Path, optional
        A YAML file with any subset of the sections of :class:`Config`.
    overrides : mapping, keyword-only, optional
        Flat ``{"section.key": value}`` settings applied last.

    Raises
    ------
    ConfigError
        When the file is missing or malformed, or a key or value is unknown.
    """
    cfg = Config()
    for p in (DEFAULT_CONFIG_PATH, path):
        if p is None:
            continue
        p = Path(p)
        if not p.is_file():
            raise ConfigError(f"configuration file not found: {p}")
        try:
            data = yaml.safe_load(p.read_text()) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"{p}: not valid YAML ({exc})") from None
        except UnicodeDecodeError:
            raise ConfigError(f"{p}: not a text (YAML) file") from None
        cfg = merge(cfg, data)
    if overrides:
        cfg = cfg.with_overrides(overrides)
    return cfg
