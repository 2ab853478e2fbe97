"""The ``moco:`` section of the settings (:class:`MocoConfig`), re-exported by
:mod:`perfmoco.config` with the other sections.
"""

from __future__ import annotations

import dataclasses

__all__ = ["MocoConfig"]


@dataclasses.dataclass(frozen=True)
class MocoConfig:
    """Deep-learning motion correction."""

    #: Folder with the step checkpoints; empty = the weights shipped in the package.
    weights_dir: str = ""
    #: ``cpu``, ``cuda`` or ``auto``.
    device: str = "auto"
    affine_crop: int = 128
    nonrigid_crop: int = 96
    #: Reference frame counted back from the end of the series (paper: 10).
    reference_from_end: int = 10
    #: After step 1 the reference may move to the late dynamic, within this many of
    #: it, nearest the series' median LV position (``perfmoco.moco.reference``): a
    #: reference at one end of deep breathing leaves every frame at the other end a
    #: whole breath to cover.  0 keeps the paper's frame.
    reference_search: int = 4
    #: Number of principal components of the synthetic reference series.
    pca_components: int = 4
    #: Passes of step 1 (affine to the reference frame); each pass after the
    #: first corrects the residual of the re-cropped originals.  One pass leaves
    #: about half of the breathing motion, which the refinement then removes.
    affine1_passes: int = 1
    #: Passes of step 2 (affine to the PCA reference); 0 skips step 2.
    affine2_passes: int = 1
    #: Gauss-Newton steps per round of the test-time affine refinement after
    #: step 2 (every frame to its PCA synthetic frame, a Gaussian window on the
    #: heart); 0 turns it off.  See :mod:`perfmoco.moco.refine`.
    refine_iterations: int = 3
    #: Rounds of that refinement (the PCA reference is rebuilt each round).
    refine_rounds: int = 4
    #: Up to this many more rounds while the frames still move (a round moving a tenth of
    #: them more than 0.2 px of the refinement's grid: a deep breather's frames).
    refine_extra_rounds: int = 4
    #: SD of its Gaussian window about the LV centre, mm.
    refine_window_mm: float = 30.0
    #: Principal components of its synthetic reference.
    refine_components: int = 2
    #: Each frame's synthetic reference also carries its two temporal neighbours'
    #: residuals from their PCA frames, smoothed by a Gaussian of this SD, mm (0:
    #: not): two components miss part of the myocardial enhancement, which the
    #: affine fit read as the heart shrinking by 1-2 % in those frames (see
    #: :func:`perfmoco.moco.decompose.pca_reference` and the model card).
    refine_neighbour_mm: float = 5.0
    #: ... also on the low-resolution AIF slice (there its mistriggered frames, carried
    #: into their neighbours' references, cost Dice: 0.919 -> 0.903 on 9800-9807).
    refine_neighbour_aif: bool = False
    #: The PCA reference's components (after the coarse rounds) are learned from
    #: this share of the dynamics, those whose maps move the LV centre least from the
    #: median position, and every dynamic is projected onto them (0 or 1: from all;
    #: :func:`perfmoco.moco.basis.breathing_basis`).  Near the apex the heart's
    #: cross-section grows and shrinks with the breathing (the heart slides through
    #: the slice); components learned from every dynamic follow that, and the
    #: refinement left deep breaths' hearts 10-15 % larger than the reference
    #: frame's.  On 8 fresh breathing phantoms (11380-11387) the apical slices' mean
    #: Dice rose from 0.888 to 0.909 (see docs/motion-correction.md).
    refine_basis_share: float = 0.5
    #: ... and every dynamic that lies within this of the median position, mm (with
    #: shallow breathing: all of them).
    refine_basis_mm: float = 3.0
    #: ... also on the low-resolution AIF slice (there it cost one slice 0.07 Dice).
    refine_basis_aif: bool = False
    #: The first rounds use a 1-component reference (the temporal mean and the
    #: contrast's leading component): a large residual shared by many frames (deep
    #: breathing) is carried by a 2-component reference, not by this one.
    refine_coarse_rounds: int = 1
    #: ... also on the low-resolution AIF slice.
    refine_coarse_aif: bool = False
    #: Largest move the refinement may add to a frame, mm (beyond: the
    #: networks' result is kept for that frame).  Step 2's own bound (half of
    #: ``max_motion_mm``): with deep breathing one step-1 pass can leave ~10 mm.
    refine_max_mm: float = 20.0
    #: A last round of the refinement fits only the heart's shape (the linear
    #: part of each frame's map about the LV centre, which stays where it is)
    #: under a window on the heart alone: SD this many LV blood-pool radii
    #: (``perfmoco.anatomy.find_blood_pools``), at least ``refine_shape_min_mm``;
    #: skipped on the AIF slice and where that window is not smaller than
    #: ``refine_window_mm``; 0 turns it off.  Near the apex the heart and the
    #: liver and chest wall around it move apart, and one affine map under the
    #: 30 mm window fits neither (see the model card).
    refine_shape_window: float = 1.0
    refine_shape_min_mm: float = 15.0
    #: Move the pre-contrast dynamics, as one block, onto the late frames by the
    #: similarity of their means (translation; :attr:`baseline_similarity`, see
    #: :mod:`perfmoco.moco.baseline`): the PCA references cannot see a
    #: block-wide offset between frames of different contrast.
    baseline_align: bool = True
    #: Radius of the disc on the LV whose pixels enter that similarity, mm
    #: (also the PD frames' search, :attr:`pd_align`, and the deep-breathing restart's).
    baseline_radius_mm: float = 40.0
    #: The same on the low-resolution AIF slice.  Its ~4.5 mm pixels leave ~250 in a
    #: 40 mm disc, and the mutual information of frames of another contrast (PD frames,
    #: pre-contrast frames) with the late frames could peak a pixel or two off.  On 16
    #: fresh breathing phantoms (11330-11347) 60 mm raised the AIF slices' mean Dice
    #: (see docs/motion-correction.md) and brought their PD frames from up to 8 mm off
    #: to within 2-3 mm of the reference frame.
    baseline_radius_aif_mm: float = 60.0
    #: Search range of the block offset per axis, mm.  An optimum on its edge is searched
    #: for again over twice the range at the same step (a deep breather's block far
    #: off); on that edge too, it is not trusted and the block stays.
    baseline_max_mm: float = 8.0
    #: The even and odd pre-contrast frames must give offsets this close, mm
    #: (high-resolution slices).  On 8 breathing phantoms 1.5 mm turned down
    #: 4 high-resolution offsets (halves 1.6-2.3 mm apart) that, applied, raised
    #: those slices' Dice from 0.75-0.89 to 0.76-0.93; on 8 others no
    #: high-resolution slice came close to the gate.
    baseline_agreement_mm: float = 2.5
    #: The same for the low-resolution AIF slice, whose short-saturation
    #: pre-contrast frames show little tissue contrast: the offsets it turned
    #: down at 1.5 mm (halves 1.8-3.0 mm apart) made Dice worse in 5 of 7 cases.
    baseline_agreement_aif_mm: float = 1.5
    #: The similarity of that search on the high-resolution slices: ``ngf``
    #: (normalised gradient fields on a 1.25 mm crop, smoothed by half a pixel; where its
    #: halves disagree, ``mi`` instead, and a move over 4 mm is checked by ``mi``, the
    #: smaller taken where the two disagree) or ``mi`` (mutual information on the
    #: refinement's 2.5 mm crop).  The low-resolution AIF slice always uses ``mi``.
    baseline_similarity: str = "ngf"
    #: Search each PD frame's translation onto the corrected late dynamics by mutual
    #: information, about where the networks put it (:mod:`perfmoco.moco.pdalign`;
    #: the networks left PD frames 4-7 mm off on breathing phantoms, and their M0
    #: scales every MBF value).
    pd_align: bool = True
    #: Its search range per axis, mm (an optimum on the edge keeps the networks' map).
    pd_align_max_mm: float = 12.0
    #: Rounds of the refinement re-run after the block alignment moved the block.
    baseline_refine_rounds: int = 2
    #: Keep the pre-contrast block where the block alignment put it during that
    #: re-run (its PCA reference otherwise drags the block back part of the way).
    baseline_hold: bool = True
    #: Move the first-pass frames of the high-resolution slices, as a group, onto the
    #: late frames by normalised gradient fields (:mod:`perfmoco.moco.firstpass_align`).
    #: Off: against the phantoms' true motion it moved the group further off on
    #: breathing studies (fresh 24, 69 slices: 0.39 -> 0.50 mm, 18 better, 40 worse),
    #: closer only on motion-free ones; its lower MBF was a shift of every segment.
    first_pass_align: bool = False
    #: Those frames: the ones whose mean under the refinement's window changes by more
    #: than this share of its range a frame (:func:`perfmoco.moco.firstpass.fast_contrast`).
    first_pass_rate: float = 0.08
    #: Search range of that group's offset per axis, mm (an optimum on its edge: not moved).
    first_pass_max_mm: float = 3.0
    #: The group's even and odd frames must give offsets this close, mm.
    first_pass_agreement_mm: float = 1.0
    #: Move the low-resolution AIF slice's pre-contrast dynamics with the breathing
    #: that a high-resolution slice's correction found in the same heartbeats
    #: (:mod:`perfmoco.moco.companion`): its own short-saturation pre-contrast frames
    #: show too little to be aligned by (17 breathing phantoms: that block 1.8 -> 0.8
    #: mm off the reference frame, mean).
    aif_follow_tissue: bool = True
    #: Only where the two slices' tracks agree over the late dynamics within this,
    #: mm (median distance, their constant offset taken out; 0.2-0.8 mm on phantoms).
    aif_follow_spread_mm: float = 1.0
    #: Fit one radial dilation of the heart per frame after the refinement
    #: (through-plane motion and cardiac-phase jitter change the heart's
    #: cross-section, not its surroundings; see :mod:`perfmoco.moco.dilation`).
    #: Off by default: held-out breathing phantoms gained (Dice 0.885 -> 0.899),
    #: gasping ones lost (0.900 -> 0.893), and frames with little contrast got
    #: biased fits (see the model card); fitted on its own 80 mm crop, it left the
    #: apical slices' scale better aligned but Dice and MBF no better
    #: (docs/motion-correction.md).
    dilation_step: bool = False
    #: Radius of that dilation's plateau about the LV centre, mm.
    dilation_radius_mm: float = 35.0
    #: Field of view of the crop it is fitted on (64 px about the LV), mm.
    dilation_crop_mm: float = 80.0
    #: Largest dilation (|scale change|) accepted; a frame reaching it keeps none.
    dilation_max: float = 0.15
    #: Leave the frames before the bolus undilated (like the reference frame):
    #: they show the heart with little contrast, and their fits were biased.
    dilation_skip_precontrast: bool = True
    #: Also on the low-resolution AIF slice (its fit is noisy there: on
    #: development phantoms it cost the AIF slice 0.015 Dice).
    dilation_aif: bool = False
    #: Run step 3 (dense LocalNet to the PCA reference).
    dense_step: bool = True
    #: Keep only the non-rigid part of step 3: remove its affine part, fitted
    #: under the refinement's Gaussian window on the heart.
    dense_nonrigid_only: bool = True
    #: Largest plausible motion of the crop centre found by step 1, mm (step 2:
    #: half); larger predictions are replaced by the identity and QC-flagged.
    max_motion_mm: float = 40.0
    #: ``torch.compile`` the networks (inductor; needs a C++ compiler, falls back to
    #: the uncompiled networks with a warning): 2-3x faster forward passes after a
    #: one-off compilation of ~1 min per process; for the server and the gadget,
    #: which compile while they wait (their warm-up), not for one-shot commands.
    compile: bool = False
    #: Where step 1 moves the median dynamic by more than this at the LV centre
    #: (deep breathing), mm, the dynamics it moved that far start again from an
    #: exhaustive mutual-information translation search to the reference frame
    #: (:mod:`perfmoco.moco.coarse`; 0: never): the network reports about half
    #: of a large move.
    coarse_align_mm: float = 5.0
    #: Search range of that translation per axis, mm.
    coarse_max_mm: float = 25.0
    #: A slice whose LV centre lies further than this from the other slices'
    #: (patient coordinates, parallel slices) is searched again near theirs,
    #: mm (:mod:`perfmoco.moco.stack`; 0: each slice on its own).
    stack_lv_tolerance_mm: float = 30.0
    #: A frame is QC-flagged when its residual misalignment (1 - NCC to the PCA
    #: reference of the corrected series, over the LV crop) exceeds this ...
    qc_threshold: float = 0.35
    #: ... or lies this many robust SDs (1.4826 MAD) above the series median.
    qc_robust_z: float = 6.0
    #: ... or resembles neither neighbour as much as they resemble each other by
    #: this factor (moco.qc.temporal_outliers; 0 = off), under a Gaussian
    #: window of this SD (mm) on the LV.
    qc_outlier_ratio: float = 1.6
    qc_window_mm: float = 20.0
    #: Keep the reference frame where it was acquired (the PCA steps can move
    #: the whole series): remove its mean displacement around the LV from all frames.
    anchor_reference: bool = True
    #: Run the networks on the standard short-axis display (transpose / flips found
    #: from the MRD geometry; perfmoco.orientation) and map the result back.
    canonical_orientation: bool = True
    #: Series without a usable geometry (bare ``.npy``, default headers) are
    #: turned by a multiple of 90 degrees so that the RV lies left of the LV.
    orientation_from_anatomy: bool = True
    #: Interpolation of the one final resampling of the originals: ``bicubic``
    #: (default) or ``bilinear``.  Bilinear resampling at sub-pixel shifts
    #: blurs each frame by a different amount, which mixes blood and
    #: epicardial tissue into the myocardial curves: on breathing phantoms with
    #: the DL correction the segment MBF error is 0.37 ml/min/g bilinear, 0.25
    #: bicubic.  The networks' crops stay bilinear.
    resample: str = "bicubic"
    #: Torch intra-op threads; 0: the cores other processes leave free, measured when
    #: a slice's correction starts (:mod:`perfmoco.moco.cpu`; all cores on an idle host).
    threads: int = 0

    def disc_radius_mm(self, aif: bool) -> float:
        """Disc on the LV of the mutual-information searches, mm (AIF slice or not)."""
        return self.baseline_radius_aif_mm if aif else self.baseline_radius_mm
