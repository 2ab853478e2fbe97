"""Short-axis torso anatomy: seeded shape parameters and their rendering.

Shapes are drawn once per study and per slice in millimetres, on a frame
centred on the image centre with x to the right (read) and y down (phase),
and rendered on any pixel grid, so the low-resolution AIF slice shows the
same basal anatomy as the basal high-resolution slice.

Angles follow the display: ``theta = atan2(-(y - cy), x - cx)`` in degrees,
counter-clockwise as the image is shown (row 0 at the top).  In the anatomy
frame the RV lies to the left of the LV (septum near 180 degrees) and anterior
is up (90); the image shows the anatomy frame rotated by
``SliceAnatomy.rotation_deg`` (slice planning), see :meth:`SliceAnatomy.to_image`.
"""

from __future__ import annotations

import dataclasses

import numpy as np
from scipy import ndimage

from perfmoco.phantom.params import LABELS

__all__ = [
    "HeartShape",
    "SliceAnatomy",
    "aha_segments",
    "draw_anatomy",
    "grid_mm",
    "render_slice",
]

_L = LABELS


@dataclasses.dataclass(frozen=True)
class HeartShape:
    """LV / RV geometry of one slice, mm and degrees (display angles).

    Attributes
    ----------
    cx, cy : float
        LV centre, mm from the image centre.
    r_endo : float
        Mean endocardial radius, mm.
    thickness : float
        Mean wall thickness, mm.
    harm : ndarray, shape (4, 3)
        Rows ``(order, amplitude, phase)`` of the radius perturbation.
    rv_dir : float
        Direction from LV centre to RV centre, degrees.
    rv_dist, rv_a, rv_b : float
        RV ellipse centre distance, tangential and radial semi-axes, mm.
    rv_wall : float
        RV wall thickness, mm.
    papillary : ndarray, shape (2, 3)
        Papillary muscles ``(angle deg, distance from centre mm, radius mm)``.
    """

    cx: float
    cy: float
    r_endo: float
    thickness: float
    harm: np.ndarray
    rv_dir: float
    rv_dist: float
    rv_a: float
    rv_b: float
    rv_wall: float
    papillary: np.ndarray

    def radii(self, theta_deg):
        """Endocardial and epicardial radius (mm) at display angles ``theta_deg``."""
        th = np.deg2rad(theta_deg)
        pert = np.zeros_like(th)
        for order, amp, phase in self.harm:
            pert = pert + amp * np.cos(order * th + phase)
        r_endo = self.r_endo * (1.0 + pert)
        r_epi = r_endo + self.thickness * (1.0 + 0.5 * pert)
        return r_endo, r_epi


@dataclasses.dataclass(frozen=True)
class SliceAnatomy:
    """Every shape of one short-axis slice (mm, display frame)."""

    torso: tuple[float, ...]  # cx, cy, a, b, fat mm, muscle mm, harmonic amp, harmonic phase
    lungs: tuple[tuple[float, ...], ...]  # (cx, cy, a, b, angle deg) each
    liver: tuple[float, ...] | None  # cx, cy, a, b, angle deg
    spine: tuple[float, float, float]  # cx, cy, r
    aorta: tuple[float, float, float]  # cx, cy, r
    heart: HeartShape
    vessels: np.ndarray  # (N, 3): x, y, r in mm
    epi_fat: tuple[float, float, float]  # angle deg, angular half width deg, thickness mm
    rotation_deg: float = 0.0  # in-plane rotation of the whole slice content (planning)

    def to_image(self, y_mm, x_mm):
        """Anatomy-frame position (mm) -> image-frame position (mm), both from the centre.

        The image shows the anatomy rotated by ``rotation_deg`` (counter-clockwise
        as displayed).
        """
        th = np.deg2rad(self.rotation_deg)
        c, s = np.cos(th), np.sin(th)
        # display-ccw rotation in (x right, y down) coordinates
        return -s * x_mm + c * y_mm, c * x_mm + s * y_mm

    def to_anatomy(self, y_mm, x_mm):
        """Image-frame position (mm) -> anatomy-frame position (mm); inverse of :meth:`to_image`."""
        th = np.deg2rad(self.rotation_deg)
        c, s = np.cos(th), np.sin(th)
        return s * x_mm + c * y_mm, c * x_mm - s * y_mm


def grid_mm(shape: tuple[int, int], spacing_mm: tuple[float, float]):
    """Pixel-centre coordinates in mm from the image centre.

    Returns
    -------
    y, x : ndarray, shape (Y, X), float64
        Coordinates in mm; pixel ``(i, j)`` is at ``((i - (Y-1)/2) dy, (j - (X-1)/2) dx)``.
    """
    ny, nx = shape
    y = (np.arange(ny) - (ny - 1) / 2.0) * spacing_mm[0]
    x = (np.arange(nx) - (nx - 1) / 2.0) * spacing_mm[1]
    return np.meshgrid(y, x, indexing="ij")


def _ellipse(x, y, cx, cy, a, b, angle_deg=0.0):
    """Normalised ellipse radius (< 1 inside)."""
    c, s = np.cos(np.deg2rad(angle_deg)), np.sin(np.deg2rad(angle_deg))
    u = (x - cx) * c + (y - cy) * s
    v = -(x - cx) * s + (y - cy) * c
    return np.sqrt((u / a) ** 2 + (v / b) ** 2)


def draw_anatomy(rng: np.random.Generator, n_slices: int = 3, *,
                 heart_scale: float = 1.0, wall_scale: float = 1.0) -> list[SliceAnatomy]:
    """Draw seeded shapes for the basal-to-apical slices.

    Parameters
    ----------
    rng : numpy.random.Generator
        Seeded generator.
    n_slices : int
        Number of high-resolution slices (basal first).
    heart_scale : float, keyword-only
        Scales the LV's cavity radius and wall thickness and the RV's size (1: the
        usual 25.5-28.5 mm basal endocardial radius; e.g. 1.35 for a large heart).
        The random draws are the same for every value.
    wall_scale : float, keyword-only
        Scales the LV wall's thickness alone (the cavity and the RV's distance from the
        epicardium as they are).

    Returns
    -------
    list of SliceAnatomy
        One per slice; index 0 is basal, the last is apical.
    """
    u = rng.uniform
    torso_a, torso_b = u(148, 172), u(102, 122)
    torso_c = (u(-12, 12), u(-4, 14))
    fat, muscle = u(7, 22), u(8, 14)
    t_amp, t_phase = u(0.01, 0.04), u(0, 2 * np.pi)
    lv_c = (torso_c[0] + u(5, 30), torso_c[1] - torso_b + u(78, 98))
    psi = rng.normal(0.0, 10.0)  # heart rotation, degrees
    r_endo0, thick0 = u(25.5, 28.5) * heart_scale, u(9.0, 11.0) * heart_scale * wall_scale
    spine = (torso_c[0] + u(-25, -5), torso_c[1] + torso_b - u(38, 50), u(16, 20))
    aorta = (spine[0] + u(18, 30), spine[1] - u(22, 30), u(10, 13))
    pap = np.array([[u(35, 55), 0.0, 0.0], [u(250, 280), 0.0, 0.0]])
    liver_grow = u(0.0, 1.0)
    rotation = rng.normal(0.0, 12.0)  # slice planning: whole image content
    out = []
    for k in range(n_slices):
        frac = k / max(n_slices - 1, 1)  # 0 basal .. 1 apical
        scale_r = 1.0 - 0.42 * frac**2.5  # cavity shrinks toward apex
        scale_t = 1.0 - 0.32 * frac**2.5  # wall thins toward apex
        harm = np.array(
            [[o, u(0.0, 0.035 if o == 2 else 0.02), u(0, 2 * np.pi)] for o in (2, 3, 4, 5)]
        )
        r_endo = r_endo0 * scale_r * u(0.97, 1.03)
        thick = thick0 * scale_t * u(0.95, 1.05)
        heart = HeartShape(
            cx=lv_c[0] + u(-3, 3) + 6 * frac,
            cy=lv_c[1] + u(-3, 3) + 4 * frac,
            r_endo=r_endo,
            thickness=thick,
            harm=harm,
            rv_dir=180.0 + psi + u(-5, 5),
            rv_dist=(r_endo + thick) * u(0.88, 1.02),
            rv_a=u(42, 50) * (1 - 0.3 * frac) * heart_scale,
            rv_b=u(23, 29) * (1 - 0.3 * frac) * heart_scale,
            rv_wall=u(2.5, 4.0),
            papillary=np.column_stack(
                [pap[:, 0] + psi + rng.normal(0, 5, 2), r_endo * u(0.55, 0.7, 2),
                 r_endo * u(0.16, 0.24, 2) * (1 - 0.5 * frac)]
            ),
        )
        lungs = (
            (torso_c[0] + u(88, 108), torso_c[1] + u(-5, 15), u(48, 62), u(72, 88),
             u(-15, 15)),
            (torso_c[0] - u(88, 108), torso_c[1] + u(-5, 15), u(48, 62), u(72, 88),
             u(-15, 15)),
        )
        liver_size = 0.45 + 0.55 * frac + 0.3 * liver_grow
        liver = (torso_c[0] - u(55, 75), torso_c[1] + u(35, 55), 85 * liver_size + u(0, 10),
                 60 * liver_size + u(0, 8), u(-30, 0))
        n_v = int(rng.integers(10, 22))
        side = rng.choice([-1.0, 1.0], n_v)
        vessels = np.column_stack(
            [torso_c[0] + side * u(65, 125, n_v), torso_c[1] + u(-70, 70, n_v),
             u(1.5, 4.0, n_v)]
        )
        out.append(
            SliceAnatomy(
                torso=(torso_c[0], torso_c[1], torso_a, torso_b, fat, muscle, t_amp, t_phase),
                lungs=lungs,
                liver=liver,
                spine=spine,
                aorta=aorta,
                heart=heart,
                vessels=vessels,
                epi_fat=(u(60, 120) + psi, u(20, 45), u(2, 5)),
                rotation_deg=rotation + rng.normal(0.0, 2.0),
            )
        )
    return out


def render_slice(anat: SliceAnatomy, shape: tuple[int, int], spacing_mm: tuple[float, float]):
    """Render one slice's anatomy on a pixel grid.

    Parameters
    ----------
    anat : SliceAnatomy
        Shapes from :func:`draw_anatomy`.
    shape : tuple of 2 int
        Matrix ``(Y, X)``.
    spacing_mm : tuple of 2 float
        Pixel size ``(dy, dx)``, mm.

    Returns
    -------
    labels : ndarray, shape (Y, X), uint8
        Tissue labels (:data:`perfmoco.phantom.params.LABELS`).
    depth : ndarray, shape (Y, X), float64
        Transmural position in the LV wall, 0 at the endocardium, 1 at the
        epicardium (meaningful inside the LV myocardium only).
    theta : ndarray, shape (Y, X), float64
        Angle (degrees, 0..360) around the LV centre in the anatomy frame:
        the display angle minus ``anat.rotation_deg``.
    """
    y, x = anat.to_anatomy(*grid_mm(shape, spacing_mm))
    lab = np.zeros(shape, np.uint8)
    tcx, tcy, ta, tb, fat, muscle, t_amp, t_phase = anat.torso
    ang = np.arctan2(y - tcy, x - tcx)
    rho = _ellipse(x, y, tcx, tcy, ta, tb) / (1.0 + t_amp * np.cos(3 * ang + t_phase))
    mean_r = np.sqrt(ta * tb)
    depth_in = (1.0 - rho) * mean_r  # approximate distance inside the skin, mm
    front = 1.0 + 0.35 * np.clip(-(y - tcy) / tb, 0, 1)  # thicker fat anteriorly
    body = rho < 1.0
    lab[body] = _L["soft_tissue"]
    lab[body & (depth_in < fat * front + muscle)] = _L["chest_wall"]
    lab[body & (depth_in < fat * front)] = _L["fat"]
    inner = body & (depth_in >= fat * front + muscle)
    for cx, cy, a, b, angle in anat.lungs:
        lab[inner & (_ellipse(x, y, cx, cy, a, b, angle) < 1.0)] = _L["lung"]
    if anat.liver is not None:
        cx, cy, a, b, angle = anat.liver
        lab[inner & (_ellipse(x, y, cx, cy, a, b, angle) < 1.0)] = _L["liver"]
    vx, vy, vr = anat.vessels.T
    for i in range(len(vx)):
        m = (x - vx[i]) ** 2 + (y - vy[i]) ** 2 < vr[i] ** 2
        lab[m & (lab == _L["lung"])] = _L["lung_vessel"]
    scx, scy, sr = anat.spine
    lab[body & ((x - scx) ** 2 + (y - scy) ** 2 < sr**2)] = _L["spine"]
    lab[body & ((x - scx) ** 2 + (y - scy - sr - 5) ** 2 < (0.45 * sr) ** 2)] = _L["spinal_canal"]
    acx, acy, ar = anat.aorta
    lab[(x - acx) ** 2 + (y - acy) ** 2 < ar**2] = _L["aorta"]

    h = anat.heart
    r = np.hypot(x - h.cx, y - h.cy)
    theta = np.rad2deg(np.arctan2(-(y - h.cy), x - h.cx)) % 360.0
    r_endo, r_epi = h.radii(theta)
    # RV: ellipse beside the septum, tangential axis a, radial axis b.
    rv_th = np.deg2rad(h.rv_dir)
    rcx, rcy = h.cx + h.rv_dist * np.cos(rv_th), h.cy - h.rv_dist * np.sin(rv_th)
    rv_angle = -h.rv_dir + 90.0  # ellipse 'a' axis perpendicular to the LV-RV line
    rv_rho = _ellipse(x, y, rcx, rcy, h.rv_a, h.rv_b, rv_angle)
    rv_outer = _ellipse(x, y, rcx, rcy, h.rv_a + h.rv_wall, h.rv_b + h.rv_wall, rv_angle)
    # Epicardial fat around the free wall / AV groove.
    ef_ang, ef_half, ef_thick = anat.epi_fat
    dang = np.abs((theta - ef_ang + 180.0) % 360.0 - 180.0)
    lab[(r < r_epi + ef_thick) & (dang < ef_half)] = _L["epicardial_fat"]
    lab[(rv_outer < 1.0) & (r >= r_epi)] = _L["rv_wall"]
    lab[(rv_rho < 1.0) & (r >= r_epi)] = _L["rv_blood"]
    lab[r < r_epi] = _L["lv_myocardium"]
    lab[r < r_endo] = _L["lv_blood"]
    for p_ang, p_dist, p_r in h.papillary:
        pth = np.deg2rad(p_ang)
        px, py = h.cx + p_dist * np.cos(pth), h.cy - p_dist * np.sin(pth)
        lab[((x - px) ** 2 + (y - py) ** 2 < p_r**2) & (r < r_endo)] = _L["papillary"]
    # Clear lung that overlaps the heart: pericardium and mediastinum lie between.
    near_heart = (r < r_epi + 6.0) | (rv_outer < 1.0 + 6.0 / h.rv_b)
    lab[near_heart & ((lab == _L["lung"]) | (lab == _L["lung_vessel"]))] = _L["soft_tissue"]
    depth = np.clip((r - r_endo) / np.maximum(r_epi - r_endo, 1e-6), 0.0, 1.0)
    return lab, depth, theta


def rv_insertion_angles(heart: HeartShape) -> tuple[float, float]:
    """Display angles (degrees) of the anterior and inferior RV insertion points.

    They are the ends of the arc of the LV epicardium covered by the RV
    (outer wall); the anterior one is where going counter-clockwise enters
    the septum.
    """
    th = np.arange(0.0, 360.0, 0.25)
    _, r_epi = heart.radii(th)
    px = heart.cx + (r_epi + 0.5) * np.cos(np.deg2rad(th))
    py = heart.cy - (r_epi + 0.5) * np.sin(np.deg2rad(th))
    rv_th = np.deg2rad(heart.rv_dir)
    rcx = heart.cx + heart.rv_dist * np.cos(rv_th)
    rcy = heart.cy - heart.rv_dist * np.sin(rv_th)
    inside = _ellipse(px, py, rcx, rcy, heart.rv_a + heart.rv_wall, heart.rv_b + heart.rv_wall,
                      -heart.rv_dir + 90.0) < 1.0
    rel = (th - heart.rv_dir + 180.0) % 360.0 - 180.0  # -180..180 around the RV direction
    if not inside.any():  # degenerate: RV not touching; use +-60 degrees
        return (heart.rv_dir - 60.0) % 360.0, (heart.rv_dir + 60.0) % 360.0
    lo, hi = rel[inside].min(), rel[inside].max()
    return (heart.rv_dir + lo) % 360.0, (heart.rv_dir + hi) % 360.0


def aha_segments(labels, theta, *, ant_deg: float, level: str):
    """AHA segment map of one slice.

    Parameters
    ----------
    labels : ndarray, shape (Y, X)
        Tissue labels; segments are assigned inside the LV myocardium only.
    theta : ndarray, shape (Y, X)
        Display angle around the LV centre, degrees.
    ant_deg : float
        Display angle of the anterior RV insertion, degrees.
    level : {"basal", "mid", "apical"}
        Basal and mid: six 60-degree segments; apical: four 90-degree ones.

    Returns
    -------
    ndarray, shape (Y, X), uint8
        0 outside the myocardium, else the AHA segment.  Starting at the
        anterior insertion and going counter-clockwise as displayed: basal
        2, 3, 4, 5, 6, 1 (mid +6), apical 14, 15, 16, 13.
    """
    rel = (theta - ant_deg) % 360.0
    if level == "apical":
        seg = np.array([14, 15, 16, 13], np.uint8)[np.minimum((rel // 90).astype(int), 3)]
    else:
        base = np.array([2, 3, 4, 5, 6, 1], np.uint8) + (6 if level == "mid" else 0)
        seg = base[np.minimum((rel // 60).astype(int), 5)]
    return np.where(labels == _L["lv_myocardium"], seg, 0).astype(np.uint8)


def smooth_field(rng: np.random.Generator, shape, sigma_px: float) -> np.ndarray:
    """Zero-mean, unit-SD smooth Gaussian random field, shape ``shape``."""
    f = ndimage.gaussian_filter(rng.standard_normal(shape), sigma_px, mode="wrap")
    return f / max(float(f.std()), 1e-12)
