"""A procedural pelvis CT: a seeded adult pelvis in Hounsfield units, with its 8 landmarks.

``sample_phantom_params(seed)`` draws the anatomy of one subject; ``make_phantom(params)`` is its
deterministic twin that builds the CT (the TorchIO split between a random transform and the
function it delegates to). ``phantom_subject(seed)`` does both.

Bones are signed distance functions (SDF: millimetres, negative inside) combined by constructive
solid geometry: union = min, intersection = max, subtraction = max(a, -b). They are written in a
*pelvis-local* frame: RAS+ millimetres (x = patient's right, y = anterior, z = superior) of a
nominal adult, origin midway between the hip-joint centres at (+-88, 0, 0). The right half (x > 0)
is built and mirrored. A subject is a map from that frame to the world:

    world = offset + R_x(-tilt) @ diag(scale * width * (1 +- asymmetry), scale, scale * height) @ local

with the + sign on the patient's right (x > 0). The femurs use the same map without the tilt, so the pelvis
tilts about the hip axis and stays congruent with the femoral heads. The landmarks are points of
the same primitives pushed through the same map, so they sit on the bone by construction.

Hounsfield units (within [-1000, 1800]): air outside an elliptic-cylinder body, a subcutaneous fat
layer, muscle, a few bowel-gas pockets, and bone with a cortical shell (SDF in (-2 mm, 0]) around a
cancellous core. Every boundary is partial-volume blended over one voxel.
"""

import itertools
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from components.subject import Subject, center_affine

Sdf = Callable[[np.ndarray], np.ndarray]  # (..., 3) local mm -> (...) signed distance, local mm

# ----------------------------------------------------------------------------- parameters

PARAM_RANGES: dict[str, tuple[float, float]] = {
    "scale": (0.9, 1.1),  # overall size
    "width_ratio": (0.95, 1.05),  # extra left-right stretch
    "height_ratio": (0.94, 1.06),  # extra inferior-superior stretch
    "tilt_deg": (-10.0, 10.0),  # pelvic tilt about the hip axis; positive = anterior (ASIS forward/down)
    "asymmetry": (-0.03, 0.03),  # right half (x > 0) stretched by (1 + a) in x, left half by (1 - a)
    "wing_flare": (0.94, 1.06),  # lateral flare of the iliac wings
    "foramen_scale": (0.88, 1.12),  # size of the obturator foramina
    "bone_density": (0.8, 1.2),  # multiplies the bone HU
    "fat_thickness": (4.0, 20.0),  # mm of subcutaneous fat
    "soft_tissue_extra": (0.0, 8.0),  # mm of extra muscle girth
}
MAX_GAS_POCKETS = 4
GAS_CENTER_BOX = ((-60.0, -25.0, 25.0), (60.0, 35.0, 100.0))  # local mm, lower abdomen
GAS_RADIUS_RANGE = (6.0, 18.0)  # mm


@dataclass(frozen=True)
class PhantomParams:
    """Every anatomical parameter of one subject (ranges in ``PARAM_RANGES``).

    Attributes:
        scale, width_ratio, height_ratio: size of the nominal pelvis; width and height stretch x and z.
        tilt_deg: rotation of the pelvis (not the femurs) about the hip axis, degrees.
        asymmetry: left-right difference in width, a fraction.
        wing_flare, foramen_scale: shape of the iliac wings and obturator foramina, factors.
        bone_density: factor on the cortical and cancellous HU.
        fat_thickness, soft_tissue_extra: subcutaneous fat and extra muscle around the bones, mm.
        gas_pockets: bowel gas, each (x, y, z, rx, ry, rz): centre and semi-axes in local mm.
    """

    scale: float = 1.0
    width_ratio: float = 1.0
    height_ratio: float = 1.0
    tilt_deg: float = 0.0
    asymmetry: float = 0.0
    wing_flare: float = 1.0
    foramen_scale: float = 1.0
    bone_density: float = 1.0
    fat_thickness: float = 12.0
    soft_tissue_extra: float = 4.0
    gas_pockets: tuple[tuple[float, float, float, float, float, float], ...] = ()

    def __post_init__(self):
        for name, (low, high) in PARAM_RANGES.items():
            value = getattr(self, name)
            if not np.isfinite(value) or not low <= value <= high:
                raise ValueError(f"PhantomParams.{name} must be in [{low}, {high}], got {value}")
        if len(self.gas_pockets) > MAX_GAS_POCKETS:
            count = len(self.gas_pockets)
            raise ValueError(f"PhantomParams.gas_pockets holds at most {MAX_GAS_POCKETS} pockets, got {count}")
        box_low, box_high = GAS_CENTER_BOX
        for pocket in self.gas_pockets:
            if len(pocket) != 6 or not np.all(np.isfinite(pocket)):
                raise ValueError(f"PhantomParams.gas_pockets: each pocket is 6 finite numbers, got {pocket}")
            center, radii = np.asarray(pocket[:3]), np.asarray(pocket[3:])
            if np.any(center < box_low) or np.any(center > box_high):
                raise ValueError(f"PhantomParams.gas_pockets: centre {tuple(center)} is outside {GAS_CENTER_BOX}")
            if np.any(radii < GAS_RADIUS_RANGE[0]) or np.any(radii > GAS_RADIUS_RANGE[1]):
                raise ValueError(
                    f"PhantomParams.gas_pockets: semi-axes {tuple(radii)} are outside {GAS_RADIUS_RANGE} mm"
                )


def sample_phantom_params(seed: int) -> PhantomParams:
    """The anatomy of one subject, drawn uniformly within ``PARAM_RANGES`` by ``Generator(seed)``."""
    rng = np.random.default_rng(seed)
    scalars = {name: float(rng.uniform(low, high)) for name, (low, high) in PARAM_RANGES.items()}
    count = int(rng.integers(0, MAX_GAS_POCKETS + 1))
    centers = rng.uniform(*GAS_CENTER_BOX, size=(count, 3))
    radii = rng.uniform(*GAS_RADIUS_RANGE, size=(count, 3))
    pockets = tuple(tuple(float(v) for v in np.concatenate([c, r])) for c, r in zip(centers, radii))
    return PhantomParams(**scalars, gas_pockets=pockets)


# ----------------------------------------------------------------------------- SDF primitives


def _vec(values) -> np.ndarray:
    return np.asarray(values, dtype=np.float32)


def _unit(values) -> np.ndarray:
    v = np.asarray(values, dtype=np.float64)
    return (v / np.linalg.norm(v)).astype(np.float32)


def _length(v: np.ndarray) -> np.ndarray:
    """(...) Euclidean length of (..., D) vectors."""
    return np.sqrt(np.einsum("...i,...i->...", v, v))


def _ellipse_bound(q: np.ndarray, radii: np.ndarray) -> np.ndarray:
    """(...) approximate signed distance of (..., D) offsets q to the origin-centred ellipse/ellipsoid.

    Exact on the surface, a good estimate near it: k0 (k0 - 1) / k1 with k0 = |q / r|, k1 = |q / r^2|.
    """
    k0 = _length(q / radii)
    k1 = _length(q / radii**2)
    return k0 * (k0 - 1) / np.maximum(k1, 1e-6)


def sphere(p: np.ndarray, center, radius: float) -> np.ndarray:
    return _length(p - _vec(center)) - radius


def ellipsoid(p: np.ndarray, center, radii, axes=None) -> np.ndarray:
    """Ellipsoid with semi-axes ``radii`` along the columns of ``axes`` (3, 3) (default: x, y, z)."""
    q = p - _vec(center)
    if axes is not None:
        q = q @ _vec(axes)
    return _ellipse_bound(q, _vec(radii))


def ellipse_2d(u: np.ndarray, v: np.ndarray, a: float, b: float) -> np.ndarray:
    """Signed distance to the ellipse (u/a)^2 + (v/b)^2 = 1, i.e. an elliptic cylinder extruded."""
    return _ellipse_bound(np.stack(np.broadcast_arrays(u, v), axis=-1), _vec([a, b]))


def capsule(p: np.ndarray, a, b, radius_a: float, radius_b: float | None = None) -> np.ndarray:
    """Segment a-b thickened by a radius that goes linearly from radius_a to radius_b."""
    a, b = _vec(a), _vec(b)
    ab, pa = b - a, p - a
    h = np.clip(pa @ ab / (ab @ ab), 0.0, 1.0)
    radius_b = radius_a if radius_b is None else radius_b
    return _length(pa - h[..., None] * ab) - (radius_a + (radius_b - radius_a) * h)


def tube(p: np.ndarray, polyline, radius: float) -> np.ndarray:
    """A tube of constant radius along a (N, 3) polyline."""
    points = _vec(polyline)
    return union(*(capsule(p, a, b, radius) for a, b in itertools.pairwise(points)))


def half_space(p: np.ndarray, point, normal) -> np.ndarray:
    """Positive on the side ``normal`` points to (normal is a unit vector)."""
    return (p - _vec(point)) @ _vec(normal)


def union(*sdfs: np.ndarray) -> np.ndarray:
    return np.minimum.reduce(sdfs)


def intersection(*sdfs: np.ndarray) -> np.ndarray:
    return np.maximum.reduce(sdfs)


def subtract(a: np.ndarray, *holes: np.ndarray) -> np.ndarray:
    return intersection(a, *(-hole for hole in holes))


def smooth_union(a: np.ndarray, b: np.ndarray, k: float) -> np.ndarray:
    """Union with a fillet of size about k mm (polynomial smooth minimum)."""
    h = np.clip(0.5 + 0.5 * (b - a) / k, 0.0, 1.0)
    return b + (a - b) * h - k * h * (1 - h)


# ----------------------------------------------------------------------------- anatomy (local mm)

HIP_CENTER = (88.0, 0.0, 0.0)  # right hip-joint centre (RAS+: +x is the patient's right)
FEMORAL_HEAD_RADIUS = 23.0
JOINT_SPACE = 2.5  # hip cartilage
SYMPHYSIS_GAP = 3.0  # world mm of pubic symphysis cartilage across the midline, whatever the size
SI_JOINT_GAP = 2.5  # sacroiliac cartilage

# Iliac wing: a 7 mm shell around the fossa ellipsoid, cut by a sagittal outline ellipse whose upper
# arc is the crest. The crest ends anteriorly (outline angle 0) in the ASIS.
WING_FOSSA_CENTER = (8.0, 15.0, 140.0)
WING_FOSSA_RADII = (128.0, 110.0, 150.0)  # x is multiplied by wing_flare
WING_OUTLINE_CENTER = (-31.0, 55.0)  # (y, z)
WING_OUTLINE_RADII = (62.0, 57.0)
WING_THICKNESS = 7.0
WING_MEDIAL_EDGE = 46.0  # x of the sacroiliac end of the wing
CREST_RADIUS = 5.0
CREST_ANGLES = np.radians(np.arange(-22.0, 144.0, 11.0))  # outline angles, anterior to posterior; holds 0
PILLAR_YZ = ((0.0, 22.0), (2.0, 60.0), (5.0, 100.0))  # iliac pillar: acetabular roof to iliac tubercle
PILLAR_RADIUS = 5.0

# Obturator foramen: an elliptic hole in a plate facing anterolaterally, its long axis leaning so
# that the inferior pole is lateral.
FORAMEN_CENTER = (48.0, 25.0, -38.0)
FORAMEN_SEMI_AXES = (15.0, 25.0)  # (width, height), times foramen_scale
FORAMEN_FACING_DEG = 35.0  # plate normal, from anterior towards lateral
FORAMEN_LEAN_DEG = 15.0
FORAMEN_RIM = 11.0  # width of the bony ring around the hole
FORAMEN_PLATE_THICKNESS = 9.0

# Pubic body: half an ellipsoid, cut through its centre by the symphysis plane (x = half the gap),
# so that the symphyseal face is the ellipse PUBIC_BODY_SEMI_AXES.
PUBIC_BODY_CENTER = (40.0, -31.0)  # (y, z)
PUBIC_BODY_SEMI_AXES = (9.0, 19.0)
PUBIC_BODY_HALF_LENGTH = 30.0  # along x

# Sacrum: oriented ellipsoids S1..S5 (centre, semi-axes (width, depth, height)) along its curve.
SACRAL_SEGMENTS = (
    ((0.0, -70.0, 54.0), (26.0, 17.0, 14.0)),
    ((0.0, -80.0, 33.0), (40.0, 13.0, 12.0)),
    ((0.0, -87.0, 14.0), (30.0, 11.0, 10.0)),
    ((0.0, -90.0, -3.0), (21.0, 9.0, 9.0)),
    ((0.0, -89.0, -18.0), (14.0, 8.0, 8.0)),
)
SACRAL_ALAE = ((0.0, -75.0, 52.0), (52.0, 14.0, 20.0))
SACRAL_FORAMEN_X = (22.0, 19.0, 16.0, 13.0)  # S1..S4
COCCYX_TIP = (0.0, -80.0, -40.0)

# Lumbar vertebrae: body centre, body semi-axes (x, y), half-height, transverse-process reach.
VERTEBRAE = (
    ((0.0, -64.0, 91.0), (26.0, 18.0), 13.5, 48.0),  # L5
    ((0.0, -59.0, 128.0), (25.0, 17.0), 13.5, 40.0),  # L4
)

PELVIS_OFFSET = (0.0, 20.0, 10.0)  # world position of the local origin, times the size factors
FIELD_HEIGHT = 300.0  # mm of the field in z, times scale * height
MUSCLE_SEMI_AXES = (140.0, 100.0)  # muscle envelope semi-axes, times the size factors
FIELD_MARGIN = 4.0  # mm of air around the body
MAX_FIELD = (360.0, 270.0, 320.0)  # mm: caps the grid at 180 x 135 x 160 voxels of 2 mm


@dataclass(frozen=True)
class Part:
    """One piece of bone: its SDF in the local frame and a local bounding box (lo, hi) of it."""

    sdf: Sdf
    lo: tuple[float, float, float]
    hi: tuple[float, float, float]

    def mirrored(self) -> "Part":
        """The same piece on the patient's right (x -> -x)."""
        flip = _vec([-1.0, 1.0, 1.0])
        return Part(lambda p: self.sdf(p * flip), (-self.hi[0], *self.lo[1:]), (-self.lo[0], *self.hi[1:]))


def _wing_surface_x(y: np.ndarray, z: np.ndarray, flare: float) -> np.ndarray:
    """x of the lateral sheet of the fossa ellipsoid above (y, z) (NaN where it has none)."""
    (cx, cy, cz), (rx, ry, rz) = WING_FOSSA_CENTER, WING_FOSSA_RADII
    inside = 1 - ((y - cy) / ry) ** 2 - ((z - cz) / rz) ** 2
    return cx + flare * rx * np.sqrt(np.where(inside >= 0, inside, np.nan))


def _crest_points(angles: np.ndarray, flare: float) -> np.ndarray:
    """(N, 3) points of the iliac crest's centreline: the outline at (N,) angles lifted onto the wing."""
    (oy, oz), (ay, az) = WING_OUTLINE_CENTER, WING_OUTLINE_RADII
    y, z = oy + ay * np.cos(angles), oz + az * np.sin(angles)
    return np.stack([_wing_surface_x(y, z, flare), y, z], axis=-1)


def _asis(flare: float) -> np.ndarray:
    """(3,) the anterior superior iliac spine: the anterior-most point of the crest tube.

    The outline is furthest forward at angle 0, a vertex of the crest polyline, so the tube around it
    reaches CREST_RADIUS further forward there.
    """
    return _crest_points(np.zeros(1), flare)[0] + np.array([0.0, CREST_RADIUS, 0.0])


def _iliac_wing(flare: float) -> Part:
    (cx, _, _), (rx, ry, rz) = WING_FOSSA_CENTER, WING_FOSSA_RADII
    radii = (flare * rx, ry, rz)
    crest = _crest_points(CREST_ANGLES, flare)
    pillar_y, pillar_z = np.array(PILLAR_YZ).T
    pillar = np.stack([_wing_surface_x(pillar_y, pillar_z, flare), pillar_y, pillar_z], axis=-1)
    (oy, oz), (ay, az) = WING_OUTLINE_CENTER, WING_OUTLINE_RADII

    def sdf(p):
        shell = np.abs(ellipsoid(p, WING_FOSSA_CENTER, radii)) - WING_THICKNESS / 2
        plate = intersection(
            shell,
            ellipse_2d(p[..., 1] - oy, p[..., 2] - oz, ay, az),
            half_space(p, (WING_MEDIAL_EDGE, 0, 0), (-1, 0, 0)),
        )
        wing = smooth_union(plate, _posterior_ilium(p), 6.0)
        return union(wing, tube(p, crest, CREST_RADIUS), tube(p, pillar, PILLAR_RADIUS))

    lo = (WING_MEDIAL_EDGE - 8, oy - ay - 25, oz - az)
    hi = (cx + radii[0] + CREST_RADIUS, oy + ay + CREST_RADIUS + 3, oz + az + CREST_RADIUS + 3)
    return Part(sdf, lo, hi)


def _posterior_ilium(p: np.ndarray) -> np.ndarray:
    """Iliac tuberosity and posterior spines behind the sacroiliac joint, and the column to the acetabulum."""
    lean = np.radians(15.0)  # the top leans laterally, along the sacroiliac joint
    axes = [[np.cos(lean), 0.0, np.sin(lean)], [0.0, 1.0, 0.0], [-np.sin(lean), 0.0, np.cos(lean)]]
    tuberosity = ellipsoid(p, (54.0, -86.0, 62.0), (10.0, 17.0, 27.0), axes)
    return smooth_union(tuberosity, capsule(p, (52, -72, 46), (84, -10, 18), 11.0, 14.0), 10.0)


def _foramen_frame(foramen_scale: float) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, float, float]:
    """Obturator foramen: centre (3,), in-plane unit axes u (width) and v (height, up), normal, a, b."""
    facing, lean = np.radians(FORAMEN_FACING_DEG), np.radians(FORAMEN_LEAN_DEG)
    normal = np.array([np.sin(facing), np.cos(facing), 0.0])
    lateral = np.array([np.cos(facing), -np.sin(facing), 0.0])
    up = np.array([0.0, 0.0, 1.0])
    u = np.cos(lean) * lateral + np.sin(lean) * up
    v = np.cos(lean) * up - np.sin(lean) * lateral
    a, b = (foramen_scale * s for s in FORAMEN_SEMI_AXES)
    return np.asarray(FORAMEN_CENTER), u, v, normal, a, b


def _socket(p: np.ndarray) -> np.ndarray:
    return sphere(p, HIP_CENTER, FEMORAL_HEAD_RADIUS + JOINT_SPACE)


def _acetabulum_and_ischium(foramen_scale: float) -> Part:
    """Acetabular cup, iliac body with the pelvic brim, ischium; minus socket and foramen."""
    hip = np.asarray(HIP_CENTER)
    opening = _unit([0.72, 0.28, -0.63])
    hole = _foramen_hole(foramen_scale)
    brim = [(46, -64, 44), (60, -44, 28), (68, -20, 13), (68, 4, 2), (60, 20, -4), (40, 34, -9), (14, 40, -13)]

    def sdf(p):
        cup = intersection(sphere(p, hip + (-6, -2, 6), 32.0), half_space(p, hip + 3 * opening, opening))
        ilium = union(
            ellipsoid(p, (92, -4, 24), (16, 22, 18)),
            ellipsoid(p, (98, 28, 25), (8, 7, 9)),  # anterior inferior iliac spine
            tube(p, brim, 4.0),
        )
        ischium = union(
            capsule(p, (80, -14, -22), (64, -12, -60), 13.0, 11.0),
            ellipsoid(p, (62, -10, -68), (13, 15, 14)),  # tuberosity
            capsule(p, (62, -28, -14), (48, -44, -20), 5.0, 3.0),  # spine
        )
        return subtract(union(cup, ilium, ischium), _socket(p), hole(p))

    return Part(sdf, (6.0, -80.0, -85.0), (126.0, 50.0, 62.0))


def _foramen_hole(foramen_scale: float) -> Sdf:
    center, u, v, normal, a, b = _foramen_frame(foramen_scale)
    axes = _vec(np.stack([u, v, normal], axis=-1))

    def sdf(p):
        q = (p - _vec(center)) @ axes
        return intersection(ellipse_2d(q[..., 0], q[..., 1], a, b), np.abs(q[..., 2]) - 20.0)

    return sdf


def _pubis(foramen_scale: float, half_gap: float) -> Part:
    """Obturator ring, pubic rami and body, cut at the symphysis plane x = half_gap."""
    center, u, v, normal, a, b = _foramen_frame(foramen_scale)
    axes = _vec(np.stack([u, v, normal], axis=-1))
    hole = _foramen_hole(foramen_scale)
    (by, bz), (ry, rz) = PUBIC_BODY_CENTER, PUBIC_BODY_SEMI_AXES
    inferior_ramus = [(16, 40, -46), (32, 30, -62), (50, 12, -72), (62, -6, -70)]

    def sdf(p):
        q = (p - _vec(center)) @ axes
        ring = intersection(
            ellipse_2d(q[..., 0], q[..., 1], a + FORAMEN_RIM, b + FORAMEN_RIM),
            np.abs(q[..., 2]) - FORAMEN_PLATE_THICKNESS / 2,
        )
        body = ellipsoid(p, (half_gap, by, bz), (PUBIC_BODY_HALF_LENGTH, ry, rz))
        bone = union(
            ring,
            body,
            capsule(p, (72, 14, -2), (24, 38, -13), 9.0, 8.0),  # superior ramus
            tube(p, inferior_ramus, 6.0),
        )
        return intersection(subtract(bone, hole(p), _socket(p)), half_space(p, (half_gap, 0, 0), (-1, 0, 0)))

    return Part(sdf, (half_gap - 1, -20.0, -90.0), (95.0, 55.0, 12.0))


def _sacral_axes(index: int) -> np.ndarray:
    """(3, 3) columns: width (x), depth and height axes of sacral segment ``index`` along the curve."""
    centers = [np.asarray(c) for c, _ in SACRAL_SEGMENTS] + [np.asarray(COCCYX_TIP)]
    up = _unit(centers[max(index - 1, 0)] - centers[index + 1])
    depth = np.cross(up, [1.0, 0.0, 0.0])
    return np.stack([[1.0, 0.0, 0.0], depth, up], axis=-1)


def _sacrum() -> Part:
    """Sacral segments and alae smoothly fused, with foramina, a coccyx and sacroiliac joint spaces."""
    flip = _vec([-1.0, 1.0, 1.0])

    def sdf(p):
        bone = ellipsoid(p, *SACRAL_ALAE)
        for index, (center, radii) in enumerate(SACRAL_SEGMENTS):
            bone = smooth_union(bone, ellipsoid(p, center, radii, _sacral_axes(index)), 8.0)
        bone = smooth_union(bone, capsule(p, SACRAL_SEGMENTS[-1][0], COCCYX_TIP, 6.0, 3.0), 4.0)
        foramina = []
        for (center, _), x in zip(SACRAL_SEGMENTS, SACRAL_FORAMEN_X):
            for side in (-1.0, 1.0):
                hole_center = np.asarray(center) + (side * x, 0.0, 0.0)
                foramina.append(capsule(p, hole_center + (0, 25, 0), hole_center - (0, 25, 0), x / 5))
        joints = [_posterior_ilium(p) - SI_JOINT_GAP, _posterior_ilium(p * flip) - SI_JOINT_GAP]
        wing_edges = np.abs(p[..., 0]) - (WING_MEDIAL_EDGE - SI_JOINT_GAP)
        return subtract(intersection(bone, wing_edges), *foramina, *joints)

    return Part(sdf, (-56.0, -106.0, -46.0), (56.0, -50.0, 76.0))


def _vertebra(center, body_semi_axes, half_height: float, transverse_reach: float) -> Part:
    """A lumbar vertebra: rounded elliptic-cylinder body, pedicles, laminae, spinous and transverse processes."""
    cx, cy, cz = center
    wx, wy = body_semi_axes
    back = cy - wy
    rounding = 3.0

    def sdf(p):
        body = (
            intersection(
                ellipse_2d(p[..., 0] - cx, p[..., 1] - cy, wx - rounding, wy - rounding),
                np.abs(p[..., 2] - cz) - (half_height - rounding),
            )
            - rounding
        )
        arch = [capsule(p, (0, back - 22, cz), (0, back - 34, cz - 6), 5.0)]  # spinous process
        for side in (-1.0, 1.0):
            pedicle_root = (side * 12, back + 3, cz + 4)
            arch_corner = (side * 13, back - 13, cz + 3)
            arch += [
                capsule(p, pedicle_root, arch_corner, 5.0),
                capsule(p, arch_corner, (0, back - 22, cz), 4.5),  # lamina
                capsule(p, arch_corner, (side * transverse_reach, back - 15, cz + 6), 4.5, 3.5),
            ]
        return union(body, *arch)

    reach = transverse_reach + 5
    return Part(sdf, (-reach, back - 42, cz - half_height - 12), (reach, cy + wy + 1, cz + half_height + 1))


def _femur() -> Part:
    """Proximal femur: head, neck, trochanters and a hollow shaft running out of the bottom."""
    hip = np.asarray(HIP_CENTER)
    neck_base = hip + (30, -8, -26)

    def sdf(p):
        shaft = subtract(
            capsule(p, (119, -6, -45), (108, -2, -400), 13.5, 12.5),
            capsule(p, (117, -6, -85), (108, -2, -420), 7.0),  # medullary canal
        )
        return union(
            sphere(p, hip, FEMORAL_HEAD_RADIUS),
            capsule(p, hip, neck_base, 14.5),
            ellipsoid(p, (121, -12, -14), (11, 16, 20)),  # greater trochanter
            ellipsoid(p, (116, -8, -40), (16, 17, 24)),  # intertrochanteric region
            ellipsoid(p, (103, -16, -58), (7, 8, 9)),  # lesser trochanter
            shaft,
        )

    return Part(sdf, (hip[0] - FEMORAL_HEAD_RADIUS - 1, -35.0, -400.0), (138.0, 25.0, FEMORAL_HEAD_RADIUS + 1))


def _pelvis_parts(params: PhantomParams) -> list[Part]:
    right_half = [
        _iliac_wing(params.wing_flare),
        _acetabulum_and_ischium(params.foramen_scale),
        _pubis(params.foramen_scale, SYMPHYSIS_GAP / (2 * params.scale * params.width_ratio)),
    ]
    spine = [_vertebra(*vertebra) for vertebra in VERTEBRAE]
    return right_half + [part.mirrored() for part in right_half] + [_sacrum(), *spine]


# ----------------------------------------------------------------------------- local -> world


@dataclass(frozen=True)
class Placement:
    """The map world = offset + rotation @ (stretch * local), stretch chosen by the side of x."""

    offset: np.ndarray  # (3,)
    rotation: np.ndarray  # (3, 3), about x only, so the side of a point is kept
    stretch_right: np.ndarray  # (3,) for x >= 0, the patient's right
    stretch_left: np.ndarray  # (3,) for x < 0, the patient's left

    def stretch(self, x: np.ndarray) -> np.ndarray:
        """(..., 3) the stretch of points with first coordinate x (...)."""
        return np.where(x[..., None] >= 0, self.stretch_right, self.stretch_left)

    def linear(self, side: float) -> np.ndarray:
        """(3, 3) the linear part on one side (+1: x > 0, the patient's right; -1: the left)."""
        return self.rotation @ np.diag(self.stretch_right if side > 0 else self.stretch_left)

    def to_world(self, local: np.ndarray) -> np.ndarray:
        """(..., 3) world mm of (..., 3) local mm."""
        return (local * self.stretch(local[..., 0])) @ self.rotation.T + self.offset

    def to_local(self, world: np.ndarray) -> np.ndarray:
        """(..., 3) local mm of (..., 3) world mm."""
        unrotated = ((world - self.offset) @ self.rotation).astype(np.float32)
        return unrotated / self.stretch(unrotated[..., 0]).astype(np.float32)


def _placements(params: PhantomParams) -> tuple[Placement, Placement]:
    """(pelvis, femurs): the femurs share the pelvis' size and position but not its tilt."""
    s, w, h, a = params.scale, params.width_ratio, params.height_ratio, params.asymmetry
    offset = np.array(PELVIS_OFFSET) * (1.0, s, s * h)
    angle = -np.radians(params.tilt_deg)  # anterior tilt turns the top of the pelvis forward
    tilt = np.array([[1, 0, 0], [0, np.cos(angle), -np.sin(angle)], [0, np.sin(angle), np.cos(angle)]])
    right, left = np.array([s * w * (1 + a), s, s * h]), np.array([s * w * (1 - a), s, s * h])
    return Placement(offset, tilt, right, left), Placement(offset, np.eye(3), right, left)


# ----------------------------------------------------------------------------- landmarks


def _ellipse_extreme(center: np.ndarray, axis_u: np.ndarray, axis_v: np.ndarray, direction) -> np.ndarray:
    """(3,) the point of the ellipse center + cos(t) axis_u + sin(t) axis_v furthest along direction."""
    cu, cv = axis_u @ direction, axis_v @ direction
    return center + (cu * axis_u + cv * axis_v) / np.hypot(cu, cv)


def _landmarks(params: PhantomParams, pelvis: Placement) -> np.ndarray:
    """(8, 3) world mm in ``LANDMARK_NAMES`` order, from the primitives that carry them."""
    center, u, v, _, a, b = _foramen_frame(params.foramen_scale)
    asis = _asis(params.wing_flare)
    down, up = np.array([0.0, 0.0, -1.0]), np.array([0.0, 0.0, 1.0])
    flip = np.array([-1.0, 1.0, 1.0])

    def foramen_points(side: float) -> tuple[np.ndarray, np.ndarray]:
        linear = pelvis.linear(side)
        mirror = flip if side < 0 else np.ones(3)
        world_center = pelvis.to_world(center * mirror)
        axis_u, axis_v = linear @ (a * u * mirror), linear @ (b * v * mirror)
        inferior = _ellipse_extreme(world_center, axis_u, axis_v, down)
        medial = _ellipse_extreme(world_center, axis_u, axis_v, np.array([-side, 0.0, 0.0]))
        return inferior, medial

    (by, bz), (ry, rz) = PUBIC_BODY_CENTER, PUBIC_BODY_SEMI_AXES
    symphysis_center = pelvis.to_world(np.array([0.0, by, bz]))
    symphysis_y, symphysis_z = pelvis.linear(1.0) @ (0.0, ry, 0.0), pelvis.linear(1.0) @ (0.0, 0.0, rz)
    right_iof, right_mof = foramen_points(1.0)
    left_iof, left_mof = foramen_points(-1.0)
    return np.stack(
        [
            pelvis.to_world(asis * flip),
            left_iof,
            left_mof,
            _ellipse_extreme(symphysis_center, symphysis_y, symphysis_z, up),
            _ellipse_extreme(symphysis_center, symphysis_y, symphysis_z, down),
            right_mof,
            right_iof,
            pelvis.to_world(asis),
        ]
    )


# ----------------------------------------------------------------------------- volume

AIR_HU, FAT_HU, MUSCLE_HU, GAS_HU = -1000.0, -100.0, 40.0, -700.0
CORTICAL_HU, CANCELLOUS_HU = 1500.0, 350.0  # times bone_density
CORTEX_THICKNESS = 2.0  # mm


def _inside_fraction(sdf: np.ndarray, voxel_size: float) -> np.ndarray:
    """Partial volume: 1 deep inside, 0 outside, linear over one voxel across the surface."""
    return np.clip(0.5 - sdf / voxel_size, 0.0, 1.0)


def _muscle_semi_axes(params: PhantomParams) -> np.ndarray:
    """(2,) world mm semi-axes (x, y) of the muscle envelope; the fat layer lies outside it."""
    s, w = params.scale, params.width_ratio
    nominal = np.array(MUSCLE_SEMI_AXES) * (s * w * (1 + abs(params.asymmetry)), s)
    return nominal + params.soft_tissue_extra


def _grid_shape(params: PhantomParams, voxel_size: float) -> tuple[int, int, int]:
    """Voxels enclosing the body plus a margin in x and y, and a scaled height in z, within MAX_FIELD."""
    body = _muscle_semi_axes(params) + params.fat_thickness + FIELD_MARGIN
    field = np.minimum([2 * body[0], 2 * body[1], FIELD_HEIGHT * params.scale * params.height_ratio], MAX_FIELD)
    return tuple(int(n) for n in np.ceil(field / voxel_size))


def _world_axes(shape, affine: np.ndarray) -> list[np.ndarray]:
    """Per array axis, (n,) world coordinates of the voxel centres (the affine is diagonal)."""
    return [affine[axis, axis] * np.arange(n) + affine[axis, 3] for axis, n in enumerate(shape)]


def _index_box(axes: list[np.ndarray], world_points: np.ndarray, pad: float) -> tuple[slice, ...] | None:
    """The voxels within ``pad`` mm of the bounding box of (N, 3) world points; None if it misses the grid."""
    box = tuple(
        slice(int(np.searchsorted(ax, low - pad)), int(np.searchsorted(ax, high + pad)))
        for ax, low, high in zip(axes, world_points.min(0), world_points.max(0))
    )
    return None if any(b.stop <= b.start for b in box) else box


def _box_points(axes: list[np.ndarray], box: tuple[slice, ...]) -> np.ndarray:
    """(a, b, c, 3) world mm of the voxel centres in ``box``."""
    return np.stack(np.meshgrid(*(ax[b] for ax, b in zip(axes, box)), indexing="ij"), axis=-1)


def _bone_sdf(params: PhantomParams, shape, affine: np.ndarray) -> np.ndarray:
    """(I, J, K) float32 world-mm SDF of all bone; each part is evaluated only around its bounding box."""
    pelvis, femurs = _placements(params)
    axes = _world_axes(shape, affine)
    pad = 2 * affine[0, 0] + CORTEX_THICKNESS
    bone = np.full(shape, 100.0, dtype=np.float32)
    femur = _femur()
    jobs = [(part, pelvis) for part in _pelvis_parts(params)] + [(femur, femurs), (femur.mirrored(), femurs)]
    for part, placement in jobs:
        corners = np.array(np.meshgrid(*zip(part.lo, part.hi), indexing="ij")).reshape(3, -1).T
        box = _index_box(axes, placement.to_world(corners), pad)
        if box is not None:
            local = placement.to_local(_box_points(axes, box))
            np.minimum(bone[box], part.sdf(local) * np.float32(params.scale), out=bone[box])
    return bone


def _soft_tissue_hu(params: PhantomParams, shape, affine: np.ndarray) -> np.ndarray:
    """(I, J, K) float32 HU of air, fat, muscle and bowel gas."""
    axes = _world_axes(shape, affine)
    voxel = affine[0, 0]
    mx, my = _muscle_semi_axes(params)
    envelope = ellipse_2d(axes[0][:, None].astype(np.float32), axes[1][None, :].astype(np.float32), mx, my)
    body = _inside_fraction(envelope - params.fat_thickness, voxel)
    muscle = _inside_fraction(envelope, voxel)
    section = AIR_HU + (FAT_HU - AIR_HU) * body + (MUSCLE_HU - FAT_HU) * muscle  # (I, J)
    hu = np.repeat(section[..., None], shape[2], axis=2).astype(np.float32)
    pelvis, _ = _placements(params)
    for pocket in params.gas_pockets:
        center, radii = pelvis.to_world(np.asarray(pocket[:3])), np.asarray(pocket[3:]) * params.scale
        box = _index_box(axes, np.stack([center - radii, center + radii]), voxel)
        if box is not None:
            gas = _inside_fraction(ellipsoid(_box_points(axes, box), center, radii), voxel)
            gas *= muscle[box[:2]][..., None]  # gas only inside the muscle envelope
            hu[box] += (GAS_HU - hu[box]) * gas
    return hu


def make_phantom(params: PhantomParams, voxel_size: float = 2.0, subject_id: str = "phantom") -> Subject:
    """The CT and landmarks of the subject ``params`` describe (deterministic).

    Returns a Subject with hu (I, J, K) float32 HU, a centred diagonal affine of ``voxel_size`` mm
    and (8, 3) landmarks in world mm.
    """
    if not 0.5 <= voxel_size <= 8.0:
        raise ValueError(f"voxel_size must be in [0.5, 8] mm, got {voxel_size}")
    shape = _grid_shape(params, voxel_size)
    affine = center_affine(np.diag([voxel_size, voxel_size, voxel_size, 1.0]), shape)
    soft = _soft_tissue_hu(params, shape, affine)
    bone = _bone_sdf(params, shape, affine)
    density = params.bone_density
    inside = _inside_fraction(bone, voxel_size)
    core = _inside_fraction(bone + CORTEX_THICKNESS, voxel_size)
    hu = soft * (1 - inside) + density * (CORTICAL_HU * (inside - core) + CANCELLOUS_HU * core)
    pelvis, _ = _placements(params)
    return Subject(subject_id, hu.astype(np.float32), affine, _landmarks(params, pelvis))


def phantom_landmarks(params: PhantomParams) -> np.ndarray:
    """(8, 3) world mm: the landmarks of the subject ``params`` describe, without building its volume."""
    pelvis, _ = _placements(params)
    return _landmarks(params, pelvis)


def phantom_subject(seed: int, voxel_size: float = 2.0, subject_id: str | None = None) -> Subject:
    """``make_phantom(sample_phantom_params(seed))``, named ``phantom-{seed:05d}`` by default."""
    name = f"phantom-{seed:05d}" if subject_id is None else subject_id
    return make_phantom(sample_phantom_params(seed), voxel_size=voxel_size, subject_id=name)
