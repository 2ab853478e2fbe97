"""Synthetic free-breathing dual-sequence stress perfusion studies with ground truth.

The phantom is the networks' training data, the test oracle and the demo.
:func:`generate_phantom` returns a :class:`Phantom` whose ``study`` is a
:class:`perfmoco.study.PerfusionStudy` (three high-resolution short-axis
slices, ``slice_index`` 0/1/2 = basal/mid/apical, plus a low-resolution AIF
slice, ``slice_index`` 3, at the base) and whose ``truth`` holds everything
that generated it.  Modules: :mod:`.anatomy` (shapes, labels, AHA),
:mod:`.kinetics` (timing, blood curves, Fermi tissue curves, MBF maps),
:mod:`.motion` (breathing, displacement fields, warping), :mod:`.signal`
(saturation recovery, coil shading, noise), :mod:`.generate`, :mod:`.files`,
:mod:`.realism` (the paper-notes figures of real series, measured on a phantom),
:mod:`.fov` (a phantom cut close to its heart, as a tight field of view stores it).

Conventions
-----------
- Images ``(T, Y, X)`` float32; times s; spacing mm; MBF ml/min/g; [Gd] mmol/l.
- Displacements ``(T, 2, Y, X)`` float32, pixels of their own slice, ``[:, 0]``
  = y, ``[:, 1]`` = x, pull-back: ``moved[t](p) = motion_free[t](p + d[t](p))``
  with linear interpolation (``scipy.ndimage.map_coordinates(order=1)``,
  edge values outside); :func:`perfmoco.phantom.motion.warp` does exactly this.
- Angles are display angles, ``atan2(-(y - cy), x - cx)``, counter-clockwise as
  the image is shown (row 0 at the top).  The RV is on the image left and
  anterior is up, give or take a seeded rotation of the whole slice (SD 12 degrees).
  AHA segments start at the anterior RV insertion and go
  counter-clockwise as displayed (into the septum): basal 2, 3, 4, 5, 6, 1
  (60 degrees each), mid the same + 6, apical 14, 15, 16, 13 (90 degrees each).

TRUTH_KEYS
----------
For each high-resolution slice ``k`` in 0, 1, 2 (prefix ``s{k}``) and for the
AIF slice (prefix ``aif``), ``T`` dynamics (PD frames excluded), ``P`` PD frames:

- ``{p}_labels`` (Y, X) uint8: tissue labels of the motion-free frame (:data:`label_names`).
- ``{p}_myo_masks`` (T, Y, X) bool: LV myocardium of each moved frame.
- ``{p}_displacement`` (T, 2, Y, X) float32: pull-back displacement, pixels
  (multiples of 1/1024 pixel).
- ``{p}_inverse_displacement`` (T, 2, Y, X) float32: ``motion_free[t](p) ~
  moved[t](p + inv[t](p))`` (fixed-point inverse, ~0.1 px).
- ``{p}_pd_displacement`` (P, 2, Y, X) float32: the PD frames' displacement.
- ``{p}_motion_free`` (T, Y, X) float32: noise-free dynamics without motion
  (the coil shading, fixed in space, appears to move in this frame).
- ``{p}_times`` (T,) float64: acquisition times, s (as ``times_s``).
- ``s{k}_mbf`` (Y, X) float32: true stress MBF, ml/min/g, 0 outside the LV myocardium.
- ``s{k}_aha`` (Y, X) uint8: 0 outside the LV myocardium, else 1-6 basal,
  7-12 mid, 13-16 apical.
- ``s{k}_rv_insertion`` (2, 2) float: ``[[y_ant, x_ant], [y_inf, x_inf]]``,
  pixels of the motion-free frame, on the epicardium.
- ``s{k}_myo_gd`` (T, M) float32: true [Gd] of the M LV-myocardium pixels, in
  row-major order of ``s{k}_labels == LABELS["lv_myocardium"]`` (``np.nonzero``).
- ``aif_gd`` (T_aif,) float64: true blood [Gd] at the AIF slice's dynamic times.
- Scalars (0-d arrays unless noted): ``spacing_mm`` (2,), ``aif_spacing_mm`` (2,),
  ``fermi_tau0_s``, ``fermi_k_per_s``, ``fermi_delay_s`` (Fermi parameters of the
  myocardium, see :func:`perfmoco.quant.model.tissue_curve`), ``slice_delays_s`` (3,)
  (added to that delay in the basal, mid and apical slice), ``healthy_mbf``,
  ``saturation_efficiency`` / ``aif_saturation_efficiency`` (see
  :mod:`perfmoco.phantom.signal`), ``noise_sd`` / ``aif_noise_sd`` (Rician SD per
  channel, pixel units), ``lv_peak_dynamic`` (1-based), ``mistriggered`` (T,) bool,
  ``seed``.

``Phantom.noise_free`` holds the moved series before noise (not written to disk).
"""

from perfmoco.phantom.files import truth_path, write_phantom, write_truth
from perfmoco.phantom.generate import Phantom, generate_phantom
from perfmoco.phantom.motion import warp
from perfmoco.phantom.params import LABELS, MOTION_KINDS, VENDORS, label_names
from perfmoco.phantom.realism import REAL_FIGURES, realism_figures

__all__ = [
    "LABELS",
    "MOTION_KINDS",
    "Phantom",
    "REAL_FIGURES",
    "VENDORS",
    "generate_phantom",
    "label_names",
    "realism_figures",
    "truth_path",
    "warp",
    "write_phantom",
    "write_truth",
]
