"""One series prepared for the correction's steps (:mod:`.steps`): its frames on the
device, the reference frame, the LV-centred crops of the networks and the 0..1 scaling.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch

from perfmoco.config import MocoConfig
from perfmoco.moco.checks import affine_coords
from perfmoco.moco.dilation import dilation_field
from perfmoco.moco.preprocess import LvLocation, locate_lv, robust_range, scale_to_unit
from perfmoco.moco.transforms import CropGeometry, sample
from perfmoco.study import SliceRole, SliceSeries

__all__ = ["SeriesCrops"]


@dataclasses.dataclass
class SeriesCrops:
    """One series prepared for the steps: frames, reference, crops and scaling.

    ``imgs`` holds the dynamics followed by the PD frames, ``(T + P, Y, X)``;
    ``geo_a`` / ``geo_n`` are the affine and dense networks' crops about the LV.
    """

    series: SliceSeries
    config: MocoConfig
    imgs: torch.Tensor
    t_dyn: int
    n_pd: int
    ref: int
    centre_yx: tuple[float, float]
    geo_a: CropGeometry
    geo_n: CropGeometry
    grid_a: torch.Tensor
    grid_n: torch.Tensor
    crop0: torch.Tensor  #: the affine crop of the frames as acquired (not normalised)
    lo: float
    hi: float
    lo_pd: float
    hi_pd: float
    lv_radius_mm: float = float("nan")  #: of the LV blood pool (NaN: not measured)

    @classmethod
    def prepare(cls, series: SliceSeries, config: MocoConfig, *, affine_net, dense_net,
                device: torch.device, lv: LvLocation | None = None,
                ref: int | None = None) -> SeriesCrops:
        t_dyn, ny, nx = series.images.shape
        n_pd = series.pd_images.shape[0]
        if ref is None:
            ref = int(np.clip(t_dyn - config.reference_from_end, 0, t_dyn - 1))
        loc = locate_lv(series) if lv is None else lv
        imgs = torch.from_numpy(
            np.concatenate([series.images, series.pd_images.reshape(n_pd, ny, nx)])
        ).to(device, torch.float32)
        return cls._centred(series, config, imgs, ref, loc, affine_net=affine_net,
                            dense_net=dense_net)

    def moved_to(self, ref: int, centre_yx, *, affine_net, dense_net) -> SeriesCrops:
        """The same frames with another reference and the LV centre in its coordinates
        (:func:`.reference.rebase`): crops and intensity ranges again, the frames kept.
        """
        loc = LvLocation(tuple(centre_yx), 0, self.lv_radius_mm)  # (peak unused)
        return self._centred(self.series, self.config, self.imgs, ref, loc,
                             affine_net=affine_net, dense_net=dense_net)

    @classmethod
    def _centred(cls, series, config, imgs, ref, loc, *, affine_net, dense_net):
        t_dyn, n_pd, device = series.images.shape[0], series.pd_images.shape[0], imgs.device
        geo_a = CropGeometry.from_spacing(
            loc.centre_yx, affine_net.crop, crop_spacing_mm=affine_net.crop_spacing_mm,
            pixel_spacing_mm=series.pixel_spacing_mm)
        geo_n = CropGeometry.from_spacing(
            loc.centre_yx, dense_net.crop, crop_spacing_mm=dense_net.crop_spacing_mm,
            pixel_spacing_mm=series.pixel_spacing_mm)
        grid_a = geo_a.grid(device=device)
        crop0 = sample(imgs, grid_a[None], padding="zeros")
        lo, hi = robust_range(crop0[:t_dyn])
        lo_pd, hi_pd = robust_range(crop0[t_dyn:]) if n_pd else (lo, hi)
        return cls(series=series, config=config, imgs=imgs, t_dyn=t_dyn, n_pd=n_pd, ref=ref,
                   centre_yx=loc.centre_yx, geo_a=geo_a, geo_n=geo_n, grid_a=grid_a,
                   grid_n=geo_n.grid(device=device), crop0=crop0, lo=lo, hi=hi,
                   lo_pd=lo_pd, hi_pd=hi_pd, lv_radius_mm=loc.lv_radius_mm)

    def norm(self, c: torch.Tensor) -> torch.Tensor:
        """Crops of dynamics and PD frames to 0..1, each with its own range."""
        t = self.t_dyn
        return torch.cat([scale_to_unit(c[:t], self.lo, self.hi),
                          scale_to_unit(c[t:], self.lo_pd, self.hi_pd)])

    def refs(self, series_ref: torch.Tensor) -> torch.Tensor:
        """A reference per frame: dynamics -> their own; PD frames -> the series start."""
        return torch.cat([series_ref, series_ref[:1].expand(self.n_pd, -1, -1)])

    @property
    def disc_radius_mm(self) -> float:
        """Disc on the LV of the mutual-information searches (``moco.baseline_radius*``)."""
        return self.config.disc_radius_mm(self.series.role is SliceRole.AIF)

    @property
    def dilates(self) -> bool:
        """Whether the heart's dilation is fitted (``moco.dilation_step``, ``dilation_aif``)."""
        return self.config.dilation_step and (self.series.role is not SliceRole.AIF
                                              or self.config.dilation_aif)

    def dilation(self, scale: torch.Tensor, at: torch.Tensor) -> torch.Tensor:
        """The heart dilation's pull-back field ``(T, 2, ...)`` at full-FOV positions ``at``."""
        return dilation_field(scale, tuple(at.shape[-2:]), centre_yx=self.centre_yx,
                              spacing_mm=self.series.pixel_spacing_mm,
                              radius_mm=self.config.dilation_radius_mm, at=at)

    def crops(self, matrix: torch.Tensor, grid: torch.Tensor,
              scale: torch.Tensor | None = None) -> torch.Tensor:
        """Normalised crops of all frames through their full-FOV maps (and dilations)."""
        if scale is None:
            return self.norm(sample(self.imgs, affine_coords(matrix, grid), padding="zeros"))
        pts = grid[None] + self.dilation(scale, grid[None].expand(len(scale), -1, -1, -1))
        return self.norm(sample(self.imgs, affine_coords(matrix, pts), padding="zeros"))
