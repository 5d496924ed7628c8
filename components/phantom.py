"""A procedural pelvis CT: a seeded adult pelvis in Hounsfield units, with its landmarks.

It places every landmark of the registered landmark sets (``PHANTOM_LANDMARKS``: the paper's 8 and
DeepFluoro's 14) and returns those of the set it is asked for (``anatomy.LandmarkSet``), in its order.

``sample_phantom_params(seed)`` draws the anatomy and the scene of one subject; ``make_phantom(params)``
is its deterministic twin that builds the CT (the TorchIO split between a random transform and the
function it delegates to). ``phantom_subject(seed)`` does both. ``sample_phantom_params(seed, shift)``
with ``shift`` in (0, 1] draws from a moved distribution (larger, older and less dense, more metal, more
extreme shapes): an out-of-distribution cohort, whose subject ``seed`` is the same draw mapped further.

Bones are signed distance functions (SDF: millimetres, negative inside) combined by constructive
solid geometry: union = min, intersection = max, subtraction = max(a, -b). They are written in a
*pelvis-local* frame: RAS+ millimetres (x = patient's right, y = anterior, z = superior) of a
nominal adult, origin midway between the hip-joint centres at (+-88, 0, 0). The right half (x > 0)
is built and mirrored; the left one is built with its own obturator foramen, so the two may differ.
A subject is a map from that frame to the world:

    world = D(offset + R_x(-tilt) @ diag(s * width * sex_x * (1 +- asymmetry), s, s * height * sex_z) @ local)

with the + sign on the patient's right (x > 0), and D(x) = x + sum_k a_k exp(-|x - c_k|^2 / (2 w_k^2))
a smooth non-rigid deformation of the world (a few Gaussian bumps), a diffeomorphism because its
Lipschitz constant is kept below 1/2. The femurs use the same map without the tilt, so the pelvis
tilts about the hip axis and stays congruent with the femoral heads; the deformation moves every bone
alike, so no two of them come to intersect. The sacrum and the lumbar spine are first turned about the
sacroiliac joints by the sacral slope. The landmarks are points of the same primitives pushed through
the same map (material points, as in a statistical shape model), so they sit on the bone by
construction; the volume needs D^-1 at every voxel, found by fixed-point iteration.

The sex of a subject is ``female`` in [0, 1] (0 typical male, 1 typical female): a female pelvis is
wider and lower, with more flared iliac wings, a wider pelvic inlet, a wider subpubic arch (the
obturator foramina and ischiopubic rami further lateral of a lower symphysis) and foramina that lean more.

Hounsfield units, within [-1024, 3071] (the range ``components.drr`` clips to): air outside an
elliptic-cylinder body, a subcutaneous fat layer, muscle, a few bowel-gas pockets, bone with a cortical
shell (SDF in (-2 mm, 0]) around a cancellous core; on most subjects an operating table (a carbon-fibre
slab of 0-200 HU under the patient's back, pressed flat on it, with two denser rails beneath); on some
subjects metal at 3000 HU (sacroiliac or pedicle screws, or a total hip: stem, head and cup with a
polyethylene liner, in place of one femoral head). Every boundary is partial-volume blended over one voxel.
"""

import itertools
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from components.anatomy import PAPER, LandmarkSet
from components.subject import Subject, center_affine

Sdf = Callable[[np.ndarray], np.ndarray]  # (..., 3) local mm -> (...) signed distance, local mm

# ----------------------------------------------------------------------------- parameters

# name: ((low, high) drawn at shift 0, (low, high) drawn at shift 1); a shift in between interpolates.
SAMPLE_RANGES: dict[str, tuple[tuple[float, float], tuple[float, float]]] = {
    "scale": ((0.9, 1.1), (0.97, 1.15)),  # overall size
    "width_ratio": ((0.95, 1.05), (0.93, 1.07)),  # extra left-right stretch
    "height_ratio": ((0.94, 1.06), (0.92, 1.08)),  # extra inferior-superior stretch
    "tilt_deg": ((-10.0, 10.0), (-16.0, 8.0)),  # pelvic tilt about the hip axis; positive = anterior
    "asymmetry": ((-0.03, 0.03), (-0.05, 0.05)),  # right half (x > 0) stretched by (1 + a) in x, left by (1 - a)
    "wing_flare": ((0.94, 1.06), (0.9, 1.1)),  # lateral flare of the iliac wings
    "foramen_scale": ((0.88, 1.12), (0.84, 1.16)),  # size of the obturator foramina
    "foramen_asymmetry": ((-0.08, 0.08), (-0.14, 0.14)),  # right foramen scaled by (1 + a), left by (1 - a)
    "foramen_height_asymmetry": ((-3.0, 3.0), (-5.0, 5.0)),  # mm: right foramen up by it, left down
    "sacral_slope_deg": ((-6.0, 6.0), (-10.0, 10.0)),  # sacrum and spine turned; positive = promontory forward
    "bone_density": ((0.8, 1.2), (0.6, 1.0)),  # multiplies the bone HU
    "fat_thickness": ((4.0, 20.0), (10.0, 30.0)),  # mm of subcutaneous fat
    "soft_tissue_extra": ((0.0, 8.0), (0.0, 12.0)),  # mm of extra muscle girth
    "table_thickness": ((20.0, 30.0), (20.0, 30.0)),  # mm of the table's slab
    "table_hu": ((0.0, 200.0), (0.0, 200.0)),  # HU of the slab (carbon fibre and foam)
    "table_rail_offset": ((90.0, 150.0), (90.0, 150.0)),  # mm: |x| of the two rails under the slab
}
FEMALE_RANGE = (0.0, 1.0)
# |2 female - 1| is drawn in [low, 1]: how typical of its sex a pelvis is (shift 0, shift 1)
SEX_DEGREE_LOW = (0.4, 0.75)
# Every scalar parameter's valid range: the hull of what shift 0 and shift 1 draw.
PARAM_RANGES: dict[str, tuple[float, float]] = {
    **{name: (min(a[0], b[0]), max(a[1], b[1])) for name, (a, b) in SAMPLE_RANGES.items()},
    "female": FEMALE_RANGE,
}

MAX_GAS_POCKETS = 4
GAS_CENTER_BOX = ((-60.0, -25.0, 25.0), (60.0, 35.0, 100.0))  # local mm, lower abdomen
GAS_RADIUS_RANGE = (6.0, 18.0)  # mm

# Deformation: bumps (x, y, z, width, ax, ay, az) in local mm (centre), nominal mm (width, amplitude).
DEFORMATION_BUMPS = 6  # drawn per subject
MAX_DEFORMATION_BUMPS = 12
DEFORMATION_CENTER_BOX = ((-140.0, -110.0, -90.0), (140.0, 70.0, 150.0))  # local mm: pelvis and hips
DEFORMATION_WIDTH_RANGE = (40.0, 120.0)  # mm, valid
DEFORMATION_WIDTHS = ((60.0, 100.0), (50.0, 100.0))  # mm, drawn at shift 0 and 1
DEFORMATION_AMPLITUDES = (8.0, 10.0)  # mm: each component drawn in [-A, A], A at shift 0 and 1
MAX_DEFORMATION_AMPLITUDE = 20.0  # mm, |a_k| of one bump
MAX_LIPSCHITZ = 0.5  # the bound sum_k e^-1/2 |a_k| / w_k must stay below it (D invertible, D^-1 found fast)
DRAWN_LIPSCHITZ = 0.4  # draws above this bound are scaled down to it

# Scene: probabilities at (shift 0, shift 1).
TABLE_FRACTION = (0.75, 0.9)
METAL_FRACTION = (0.2, 0.5)
IMPLANTS = ("none", "sacroiliac_screws", "pedicle_screws", "left_hip", "right_hip")


def sampling_ranges(shift: float = 0.0) -> dict[str, tuple[float, float]]:
    """The (low, high) each scalar parameter is drawn in at ``shift``, by linear interpolation."""
    _check_shift(shift)
    return {
        name: (a[0] + shift * (b[0] - a[0]), a[1] + shift * (b[1] - a[1])) for name, (a, b) in SAMPLE_RANGES.items()
    }


def _check_shift(shift: float) -> None:
    if isinstance(shift, bool) or not isinstance(shift, int | float | np.floating) or not 0.0 <= shift <= 1.0:
        raise ValueError(f"shift must be a number in [0, 1] (0: the training distribution), got {shift!r}")


def _lerp(pair: tuple[float, float], shift: float) -> float:
    return pair[0] + shift * (pair[1] - pair[0])


def lipschitz_bound(widths: np.ndarray, amplitudes: np.ndarray) -> float:
    """sum_k e^-1/2 |a_k| / w_k: a bound on the Lipschitz constant of the Gaussian-bump displacement.

    The gradient of a exp(-r^2 / (2 w^2)) has the largest norm, e^-1/2 |a| / w, at r = w. Widths (K,)
    and amplitudes (K, 3) in one unit (the bound has none).
    """
    return float(np.exp(-0.5) * np.sum(np.linalg.norm(np.reshape(amplitudes, (-1, 3)), axis=1) / np.asarray(widths)))


@dataclass(frozen=True)
class PhantomParams:
    """Every anatomical and scene parameter of one subject (scalar ranges in ``PARAM_RANGES``).

    Attributes:
        scale, width_ratio, height_ratio: size of the nominal pelvis; width and height stretch x and z.
        tilt_deg: rotation of the pelvis (not the femurs) about the hip axis, degrees.
        asymmetry: left-right difference in width, a fraction.
        wing_flare, foramen_scale: shape of the iliac wings and obturator foramina, factors.
        foramen_asymmetry, foramen_height_asymmetry: right foramen (1 + a) times, left (1 - a) times the
            size; right foramen that many mm up, left down.
        female: 0 typical male .. 1 typical female (0.5: the nominal pelvis).
        sacral_slope_deg: the sacrum and lumbar spine turned about the sacroiliac joints (x axis),
            positive = the promontory forward, degrees.
        bone_density: factor on the cortical and cancellous HU.
        fat_thickness, soft_tissue_extra: subcutaneous fat and extra muscle around the bones, mm.
        deformation: Gaussian bumps, each (x, y, z, width, ax, ay, az): centre in local mm, width and
            displacement amplitude in nominal mm (times scale); empty: none.
        table: whether the patient lies on an operating table; table_thickness (mm), table_hu and
            table_rail_offset (mm, |x| of its rails) describe it.
        implant: one of ``IMPLANTS``.
        gas_pockets: bowel gas, each (x, y, z, rx, ry, rz): centre and semi-axes in local mm.
    """

    scale: float = 1.0
    width_ratio: float = 1.0
    height_ratio: float = 1.0
    tilt_deg: float = 0.0
    asymmetry: float = 0.0
    wing_flare: float = 1.0
    foramen_scale: float = 1.0
    foramen_asymmetry: float = 0.0
    foramen_height_asymmetry: float = 0.0
    female: float = 0.5
    sacral_slope_deg: float = 0.0
    bone_density: float = 1.0
    fat_thickness: float = 12.0
    soft_tissue_extra: float = 4.0
    deformation: tuple[tuple[float, float, float, float, float, float, float], ...] = ()
    table: bool = False
    table_thickness: float = 25.0
    table_hu: float = 100.0
    table_rail_offset: float = 120.0
    implant: str = "none"
    gas_pockets: tuple[tuple[float, float, float, float, float, float], ...] = ()

    def __post_init__(self):
        for name, (low, high) in PARAM_RANGES.items():
            value = getattr(self, name)
            if not np.isfinite(value) or not low <= value <= high:
                raise ValueError(f"PhantomParams.{name} must be in [{low}, {high}], got {value}")
        if not isinstance(self.table, bool | np.bool_):
            raise ValueError(f"PhantomParams.table must be True or False, got {self.table!r}")
        if self.implant not in IMPLANTS:
            raise ValueError(f"PhantomParams.implant must be one of {IMPLANTS}, got {self.implant!r}")
        self._check_deformation()
        self._check_gas_pockets()

    def _check_deformation(self):
        if len(self.deformation) > MAX_DEFORMATION_BUMPS:
            count = len(self.deformation)
            raise ValueError(f"PhantomParams.deformation holds at most {MAX_DEFORMATION_BUMPS} bumps, got {count}")
        box_low, box_high = DEFORMATION_CENTER_BOX
        for bump in self.deformation:
            if len(bump) != 7 or not np.all(np.isfinite(bump)):
                raise ValueError(
                    f"PhantomParams.deformation: each bump is 7 finite numbers (x, y, z, width, ax, ay, az), got {bump}"
                )
            center, width, amplitude = np.asarray(bump[:3]), bump[3], np.linalg.norm(bump[4:])
            if np.any(center < box_low) or np.any(center > box_high):
                raise ValueError(
                    f"PhantomParams.deformation: centre {tuple(center)} is outside {DEFORMATION_CENTER_BOX}"
                )
            if not DEFORMATION_WIDTH_RANGE[0] <= width <= DEFORMATION_WIDTH_RANGE[1]:
                raise ValueError(f"PhantomParams.deformation: width {width} is outside {DEFORMATION_WIDTH_RANGE} mm")
            if amplitude > MAX_DEFORMATION_AMPLITUDE:
                raise ValueError(
                    f"PhantomParams.deformation: amplitude {amplitude:.3g} mm is above {MAX_DEFORMATION_AMPLITUDE} mm"
                )
        if self.deformation:
            bumps = np.asarray(self.deformation)
            bound = lipschitz_bound(bumps[:, 3], bumps[:, 4:])
            if bound >= MAX_LIPSCHITZ:
                raise ValueError(
                    f"PhantomParams.deformation: the Lipschitz bound sum e^-1/2 |a_k| / w_k is {bound:.3f}, "
                    f"it must be below {MAX_LIPSCHITZ} (smaller amplitudes or wider bumps)"
                )

    def _check_gas_pockets(self):
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


def _sample_deformation(rng: np.random.Generator, shift: float) -> tuple[tuple[float, ...], ...]:
    """DEFORMATION_BUMPS bumps: uniform centres and widths, amplitudes uniform per component, the whole
    field scaled down if its Lipschitz bound exceeds DRAWN_LIPSCHITZ."""
    centers = rng.uniform(*DEFORMATION_CENTER_BOX, size=(DEFORMATION_BUMPS, 3))
    low, high = (_lerp(pair, shift) for pair in zip(*DEFORMATION_WIDTHS))
    widths = rng.uniform(low, high, size=DEFORMATION_BUMPS)
    amplitudes = rng.uniform(-1.0, 1.0, size=(DEFORMATION_BUMPS, 3)) * _lerp(DEFORMATION_AMPLITUDES, shift)
    amplitudes *= min(1.0, DRAWN_LIPSCHITZ / lipschitz_bound(widths, amplitudes))
    bumps = np.concatenate([centers, widths[:, None], amplitudes], axis=1)
    return tuple(tuple(float(v) for v in bump) for bump in bumps)


def sample_phantom_params(seed: int, shift: float = 0.0) -> PhantomParams:
    """The anatomy and scene of one subject, drawn by generators spawned from ``SeedSequence(seed)``.

    Scalars are uniform within ``sampling_ranges(shift)``; the sex is a fair coin and the degree
    |2 female - 1| uniform in [SEX_DEGREE_LOW, 1]; then the deformation, the table (present with
    probability TABLE_FRACTION), an implant (METAL_FRACTION of subjects, its kind uniform) and the gas.
    Each concept has its own stream and draws as many numbers whatever the shift, so that the shift
    moves each subject continuously: ``shift`` = 0 is the training distribution, 1 the most novel one.
    """
    _check_shift(shift)
    shift = float(shift)
    anatomy, deformation, scene, gas = (np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(4))
    scalars = {name: float(anatomy.uniform(low, high)) for name, (low, high) in sampling_ranges(shift).items()}
    is_female, degree = anatomy.uniform() < 0.5, anatomy.uniform()
    degree_low = _lerp(SEX_DEGREE_LOW, shift)
    sex = (1.0 if is_female else -1.0) * (degree_low + degree * (1.0 - degree_low))
    table, metal, kind = scene.uniform(), scene.uniform(), int(scene.integers(1, len(IMPLANTS)))
    count = int(gas.integers(0, MAX_GAS_POCKETS + 1))
    centers = gas.uniform(*GAS_CENTER_BOX, size=(count, 3))
    radii = gas.uniform(*GAS_RADIUS_RANGE, size=(count, 3))
    pockets = tuple(tuple(float(v) for v in np.concatenate([c, r])) for c, r in zip(centers, radii))
    return PhantomParams(
        **scalars,
        female=float(np.clip((1.0 + sex) / 2, *FEMALE_RANGE)),
        deformation=_sample_deformation(deformation, shift),
        table=bool(table < _lerp(TABLE_FRACTION, shift)),
        implant=IMPLANTS[kind] if metal < _lerp(METAL_FRACTION, shift) else "none",
        gas_pockets=pockets,
    )


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
# Acetabular cup: a sphere about HIP_CENTER + CUP_OFFSET. Its back is the floor of the greater sciatic
# notch, which opens backwards between the posterior inferior iliac spine and the ischial spine.
CUP_OFFSET = (-6.0, -2.0, 6.0)
CUP_RADIUS = 32.0
SI_JOINT_GAP = 2.5  # sacroiliac cartilage

# Iliac wing: a 7 mm shell around the fossa ellipsoid, cut by a sagittal outline ellipse whose upper
# arc is the crest. The crest ends anteriorly (outline angle 0) in the ASIS.
WING_FOSSA_CENTER = (8.0, 15.0, 140.0)
WING_FOSSA_RADII = (128.0, 110.0, 150.0)  # x is multiplied by the flare
WING_OUTLINE_CENTER = (-31.0, 55.0)  # (y, z)
WING_OUTLINE_RADII = (62.0, 57.0)  # z is multiplied by the sex's crest height
WING_THICKNESS = 7.0
WING_MEDIAL_EDGE = 46.0  # x of the sacroiliac end of the wing
CREST_RADIUS = 5.0
CREST_ANGLES = np.radians(np.arange(-22.0, 144.0, 11.0))  # outline angles, anterior to posterior; holds 0
PILLAR_YZ = ((0.0, 22.0), (2.0, 60.0), (5.0, 100.0))  # iliac pillar: acetabular roof to iliac tubercle
PILLAR_RADIUS = 5.0
# Pelvic brim (arcuate line and pecten), sacroiliac joint to pubis; the middle bows out by the inlet bulge.
BRIM = ((46, -64, 44), (60, -44, 28), (68, -20, 13), (68, 4, 2), (60, 20, -4), (40, 34, -9), (14, 40, -13))
BRIM_BULGE_WEIGHTS = (0.0, 0.5, 1.0, 1.0, 0.6, 0.3, 0.0)

# Obturator foramen: an elliptic hole in a plate facing anterolaterally, its long axis leaning so
# that the inferior pole is lateral.
FORAMEN_CENTER = (48.0, 25.0, -38.0)
FORAMEN_SEMI_AXES = (15.0, 25.0)  # (width, height), times the side's foramen scale
FORAMEN_FACING_DEG = 35.0  # plate normal, from anterior towards lateral
FORAMEN_LEAN_DEG = 15.0
FORAMEN_RIM = 11.0  # width of the bony ring around the hole
FORAMEN_PLATE_THICKNESS = 9.0
# Ischiopubic ramus below the foramen; it and the ischial tuberosity follow the subpubic arch.
INFERIOR_RAMUS = ((16, 40, -46), (32, 30, -62), (50, 12, -72), (62, -6, -70))
INFERIOR_RAMUS_ARCH_WEIGHTS = (0.3, 0.8, 1.0, 1.0)

# Pubic body: half an ellipsoid, cut through its centre by the symphysis plane (x = half the gap),
# so that the symphyseal face is the ellipse PUBIC_BODY_SEMI_AXES.
PUBIC_BODY_CENTER = (40.0, -31.0)  # (y, z)
PUBIC_BODY_SEMI_AXES = (9.0, 19.0)  # z is multiplied by the sex's symphysis height
PUBIC_BODY_HALF_LENGTH = 30.0  # along x

# Sex dimorphism, per unit of sex = 2 female - 1 (-1 typical male, +1 typical female).
SEX_WIDTH = 0.03  # x stretch times (1 + SEX_WIDTH sex)
SEX_HEIGHT = 0.04  # z stretch times (1 - SEX_HEIGHT sex)
SEX_FLARE = 0.05  # wing flare times (1 + SEX_FLARE sex)
SEX_CREST_HEIGHT = 0.06  # the wing outline's z radius times (1 - SEX_CREST_HEIGHT sex)
SEX_INLET_MM = 4.0  # the pelvic brim bows laterally by this times sex
SEX_ARCH_MM = 6.0  # foramen, ischiopubic ramus and ischial tuberosity move laterally by this times sex
SEX_FORAMEN_LEAN_DEG = 6.0  # the foramen's lean grows by this times sex
SEX_SYMPHYSIS_HEIGHT = 0.12  # the symphysis' z semi-axis times (1 - SEX_SYMPHYSIS_HEIGHT sex)

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
SACRAL_PIVOT = (0.0, -78.0, 45.0)  # the sacral slope turns the sacrum and spine about this point (x axis)

# Lumbar vertebrae: body centre, body semi-axes (x, y), half-height, transverse-process reach.
VERTEBRAE = (
    ((0.0, -64.0, 91.0), (26.0, 18.0), 13.5, 48.0),  # L5
    ((0.0, -59.0, 128.0), (25.0, 17.0), 13.5, 40.0),  # L4
)

PELVIS_OFFSET = (0.0, 20.0, 10.0)  # world position of the local origin, times the size factors
FIELD_HEIGHT = 300.0  # mm of the field in z, times scale * height
MUSCLE_SEMI_AXES = (140.0, 100.0)  # muscle envelope semi-axes, times the size factors
FIELD_MARGIN = 4.0  # mm of air around the body (and below the table)
MAX_FIELD = (360.0, 270.0, 320.0)  # mm: caps the grid at 180 x 135 x 160 voxels of 2 mm


@dataclass(frozen=True)
class Part:
    """One solid: its SDF in its frame (local mm for bone, world mm for implants) and a box (lo, hi) of it."""

    sdf: Sdf
    lo: tuple[float, float, float]
    hi: tuple[float, float, float]

    def mirrored(self) -> "Part":
        """The same piece on the other side (x -> -x)."""
        flip = _vec([-1.0, 1.0, 1.0])
        return Part(lambda p: self.sdf(p * flip), (-self.hi[0], *self.lo[1:]), (-self.lo[0], *self.hi[1:]))

    def corners(self) -> np.ndarray:
        """(8, 3) the corners of its box."""
        return np.array(np.meshgrid(*zip(self.lo, self.hi), indexing="ij")).reshape(3, -1).T

    def turned(self, rotation: np.ndarray, pivot) -> "Part":
        """The piece turned by ``rotation`` (3, 3) about ``pivot``: a point q goes to pivot + rotation @ (q - pivot)."""
        pivot = np.asarray(pivot, dtype=np.float64)
        moved = pivot + (self.corners() - pivot) @ rotation.T
        matrix, center = _vec(rotation), _vec(pivot)
        return Part(lambda p: self.sdf(center + (p - center) @ matrix), tuple(moved.min(0)), tuple(moved.max(0)))


@dataclass(frozen=True)
class HipShape:
    """The shape of one hip bone, in the right one's local frame (the left one is built so, then mirrored).

    Attributes:
        flare: lateral stretch of the iliac fossa; crest_height: z semi-axis (mm) of the wing outline.
        inlet_bulge: mm the middle of the pelvic brim bows laterally.
        foramen_center: (3,) mm; foramen_scale: factor on FORAMEN_SEMI_AXES; foramen_lean_deg: degrees.
        arch_shift: mm the foramen, the ischiopubic ramus and the ischial tuberosity lie further lateral.
        symphysis_height: z semi-axis (mm) of the pubic body's symphyseal face.
    """

    flare: float
    crest_height: float
    inlet_bulge: float
    foramen_center: tuple[float, float, float]
    foramen_scale: float
    foramen_lean_deg: float
    arch_shift: float
    symphysis_height: float


def _sex(params: PhantomParams) -> float:
    """2 female - 1: -1 typical male, 0 nominal, +1 typical female."""
    return 2.0 * params.female - 1.0


def _hip_shapes(params: PhantomParams) -> tuple[HipShape, HipShape]:
    """(right, left): the sex's shape, each side with its own obturator foramen."""
    sex = _sex(params)
    arch = SEX_ARCH_MM * sex

    def side(sign: float) -> HipShape:
        cx, cy, cz = FORAMEN_CENTER
        return HipShape(
            flare=params.wing_flare * (1 + SEX_FLARE * sex),
            crest_height=WING_OUTLINE_RADII[1] * (1 - SEX_CREST_HEIGHT * sex),
            inlet_bulge=SEX_INLET_MM * sex,
            foramen_center=(cx + arch, cy, cz + sign * params.foramen_height_asymmetry),
            foramen_scale=params.foramen_scale * (1 + sign * params.foramen_asymmetry),
            foramen_lean_deg=FORAMEN_LEAN_DEG + SEX_FORAMEN_LEAN_DEG * sex,
            arch_shift=arch,
            symphysis_height=PUBIC_BODY_SEMI_AXES[1] * (1 - SEX_SYMPHYSIS_HEIGHT * sex),
        )

    return side(1.0), side(-1.0)


def _wing_surface_x(y: np.ndarray, z: np.ndarray, flare: float) -> np.ndarray:
    """x of the lateral sheet of the fossa ellipsoid above (y, z) (NaN where it has none)."""
    (cx, cy, cz), (rx, ry, rz) = WING_FOSSA_CENTER, WING_FOSSA_RADII
    inside = 1 - ((y - cy) / ry) ** 2 - ((z - cz) / rz) ** 2
    return cx + flare * rx * np.sqrt(np.where(inside >= 0, inside, np.nan))


def _crest_points(angles: np.ndarray, shape: HipShape) -> np.ndarray:
    """(N, 3) points of the iliac crest's centreline: the outline at (N,) angles lifted onto the wing."""
    (oy, oz), ay = WING_OUTLINE_CENTER, WING_OUTLINE_RADII[0]
    y, z = oy + ay * np.cos(angles), oz + shape.crest_height * np.sin(angles)
    return np.stack([_wing_surface_x(y, z, shape.flare), y, z], axis=-1)


def _asis(shape: HipShape) -> np.ndarray:
    """(3,) the anterior superior iliac spine: the anterior-most point of the crest tube.

    The outline is furthest forward at angle 0, a vertex of the crest polyline, so the tube around it
    reaches CREST_RADIUS further forward there.
    """
    return _crest_points(np.zeros(1), shape)[0] + np.array([0.0, CREST_RADIUS, 0.0])


def _iliac_wing(shape: HipShape) -> Part:
    (cx, _, _), (rx, ry, rz) = WING_FOSSA_CENTER, WING_FOSSA_RADII
    radii = (shape.flare * rx, ry, rz)
    crest = _crest_points(CREST_ANGLES, shape)
    pillar_y, pillar_z = np.array(PILLAR_YZ).T
    pillar = np.stack([_wing_surface_x(pillar_y, pillar_z, shape.flare), pillar_y, pillar_z], axis=-1)
    (oy, oz), (ay, az) = WING_OUTLINE_CENTER, (WING_OUTLINE_RADII[0], shape.crest_height)

    def sdf(p):
        shell = np.abs(ellipsoid(p, WING_FOSSA_CENTER, radii)) - WING_THICKNESS / 2
        plate = intersection(
            shell,
            ellipse_2d(p[..., 1] - oy, p[..., 2] - oz, ay, az),
            half_space(p, (WING_MEDIAL_EDGE, 0, 0), (-1, 0, 0)),
        )
        wing = smooth_union(plate, _posterior_ilium(p), 6.0)
        # the column to the acetabulum and the pillar end at the joint space, clear of the femoral head
        return subtract(union(wing, tube(p, crest, CREST_RADIUS), tube(p, pillar, PILLAR_RADIUS)), _socket(p))

    lo = (WING_MEDIAL_EDGE - 8, oy - ay - 25, oz - az)
    hi = (cx + radii[0] + CREST_RADIUS, oy + ay + CREST_RADIUS + 3, oz + az + CREST_RADIUS + 3)
    return Part(sdf, lo, hi)


def _posterior_ilium(p: np.ndarray) -> np.ndarray:
    """Iliac tuberosity and posterior spines behind the sacroiliac joint, and the column to the acetabulum."""
    lean = np.radians(15.0)  # the top leans laterally, along the sacroiliac joint
    axes = [[np.cos(lean), 0.0, np.sin(lean)], [0.0, 1.0, 0.0], [-np.sin(lean), 0.0, np.cos(lean)]]
    tuberosity = ellipsoid(p, (54.0, -86.0, 62.0), (10.0, 17.0, 27.0), axes)
    return smooth_union(tuberosity, capsule(p, (52, -72, 46), (84, -10, 18), 11.0, 14.0), 10.0)


def _foramen_frame(shape: HipShape) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, float, float]:
    """Obturator foramen: centre (3,), in-plane unit axes u (width) and v (height, up), normal, a, b."""
    facing, lean = np.radians(FORAMEN_FACING_DEG), np.radians(shape.foramen_lean_deg)
    normal = np.array([np.sin(facing), np.cos(facing), 0.0])
    lateral = np.array([np.cos(facing), -np.sin(facing), 0.0])
    up = np.array([0.0, 0.0, 1.0])
    u = np.cos(lean) * lateral + np.sin(lean) * up
    v = np.cos(lean) * up - np.sin(lean) * lateral
    a, b = (shape.foramen_scale * s for s in FORAMEN_SEMI_AXES)
    return np.asarray(shape.foramen_center), u, v, normal, a, b


def _socket(p: np.ndarray) -> np.ndarray:
    return sphere(p, HIP_CENTER, FEMORAL_HEAD_RADIUS + JOINT_SPACE)


def _acetabulum_and_ischium(shape: HipShape) -> Part:
    """Acetabular cup, iliac body with the pelvic brim, ischium; minus socket and foramen."""
    hip = np.asarray(HIP_CENTER)
    opening = _unit([0.72, 0.28, -0.63])
    hole = _foramen_hole(shape)
    brim = np.asarray(BRIM, dtype=np.float64)
    brim[:, 0] += shape.inlet_bulge * np.asarray(BRIM_BULGE_WEIGHTS)
    arch = np.array([shape.arch_shift, 0.0, 0.0])

    def sdf(p):
        cup = intersection(sphere(p, hip + CUP_OFFSET, CUP_RADIUS), half_space(p, hip + 3 * opening, opening))
        ilium = union(
            ellipsoid(p, (92, -4, 24), (16, 22, 18)),
            ellipsoid(p, (98, 28, 25), (8, 7, 9)),  # anterior inferior iliac spine
            tube(p, brim, 4.0),
        )
        ischium = union(
            capsule(p, (80, -14, -22), (64, -12, -60) + arch, 13.0, 11.0),
            ellipsoid(p, (62, -10, -68) + arch, (13, 15, 14)),  # tuberosity
            capsule(p, (62, -28, -14), (48, -44, -20), 5.0, 3.0),  # spine
        )
        return subtract(union(cup, ilium, ischium), _socket(p), hole(p))

    return Part(sdf, (6.0, -80.0, -85.0), (126.0 + max(shape.arch_shift, 0.0), 50.0, 62.0))


def _foramen_hole(shape: HipShape) -> Sdf:
    center, u, v, normal, a, b = _foramen_frame(shape)
    axes = _vec(np.stack([u, v, normal], axis=-1))

    def sdf(p):
        q = (p - _vec(center)) @ axes
        return intersection(ellipse_2d(q[..., 0], q[..., 1], a, b), np.abs(q[..., 2]) - 20.0)

    return sdf


def _pubis(shape: HipShape, half_gap: float) -> Part:
    """Obturator ring, pubic rami and body, cut at the symphysis plane x = half_gap."""
    center, u, v, normal, a, b = _foramen_frame(shape)
    axes = _vec(np.stack([u, v, normal], axis=-1))
    hole = _foramen_hole(shape)
    (by, bz), ry = PUBIC_BODY_CENTER, PUBIC_BODY_SEMI_AXES[0]
    inferior_ramus = np.asarray(INFERIOR_RAMUS, dtype=np.float64)
    inferior_ramus[:, 0] += shape.arch_shift * np.asarray(INFERIOR_RAMUS_ARCH_WEIGHTS)

    def sdf(p):
        q = (p - _vec(center)) @ axes
        ring = intersection(
            ellipse_2d(q[..., 0], q[..., 1], a + FORAMEN_RIM, b + FORAMEN_RIM),
            np.abs(q[..., 2]) - FORAMEN_PLATE_THICKNESS / 2,
        )
        body = ellipsoid(p, (half_gap, by, bz), (PUBIC_BODY_HALF_LENGTH, ry, shape.symphysis_height))
        bone = union(
            ring,
            body,
            capsule(p, (72, 14, -2), (24, 38, -13), 9.0, 8.0),  # superior ramus
            tube(p, inferior_ramus, 6.0),
        )
        return intersection(subtract(bone, hole(p), _socket(p)), half_space(p, (half_gap, 0, 0), (-1, 0, 0)))

    return Part(sdf, (half_gap - 1, -20.0, -95.0), (100.0, 55.0, 12.0))


def _sacral_axes(index: int) -> np.ndarray:
    """(3, 3) columns: width (x), depth and height axes of sacral segment ``index`` along the curve."""
    centers = [np.asarray(c) for c, _ in SACRAL_SEGMENTS] + [np.asarray(COCCYX_TIP)]
    up = _unit(centers[max(index - 1, 0)] - centers[index + 1])
    depth = np.cross(up, [1.0, 0.0, 0.0])
    return np.stack([[1.0, 0.0, 0.0], depth, up], axis=-1)


def _spine_rotation(params: PhantomParams) -> np.ndarray:
    """(3, 3) the sacral slope's turn about x: positive slopes bring the top (the promontory) forward."""
    angle = -np.radians(params.sacral_slope_deg)
    return np.array([[1, 0, 0], [0, np.cos(angle), -np.sin(angle)], [0, np.sin(angle), np.cos(angle)]])


def _sacrum(rotation: np.ndarray) -> Part:
    """Sacral segments and alae smoothly fused, with foramina and a coccyx, turned by ``rotation`` about
    SACRAL_PIVOT; the sacroiliac joint spaces are cut where the (unturned) ilia are."""
    flip = _vec([-1.0, 1.0, 1.0])
    matrix, pivot = _vec(rotation), _vec(SACRAL_PIVOT)

    def sdf(p):
        q = pivot + (p - pivot) @ matrix  # the sacrum's own frame
        bone = ellipsoid(q, *SACRAL_ALAE)
        for index, (center, radii) in enumerate(SACRAL_SEGMENTS):
            bone = smooth_union(bone, ellipsoid(q, center, radii, _sacral_axes(index)), 8.0)
        bone = smooth_union(bone, capsule(q, SACRAL_SEGMENTS[-1][0], COCCYX_TIP, 6.0, 3.0), 4.0)
        foramina = []
        for (center, _), x in zip(SACRAL_SEGMENTS, SACRAL_FORAMEN_X):
            for side in (-1.0, 1.0):
                hole_center = np.asarray(center) + (side * x, 0.0, 0.0)
                foramina.append(capsule(q, hole_center + (0, 25, 0), hole_center - (0, 25, 0), x / 5))
        joints = [_posterior_ilium(p) - SI_JOINT_GAP, _posterior_ilium(p * flip) - SI_JOINT_GAP]
        wing_edges = np.abs(p[..., 0]) - (WING_MEDIAL_EDGE - SI_JOINT_GAP)
        return subtract(intersection(bone, wing_edges), *foramina, *joints)

    box = Part(sdf, (-56.0, -106.0, -46.0), (56.0, -50.0, 76.0)).turned(rotation, SACRAL_PIVOT)
    return Part(sdf, box.lo, box.hi)


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


FEMORAL_NECK_BASE = (118.0, -8.0, -26.0)  # HIP_CENTER + (30, -8, -26)
NECK_CUT = 0.55  # a total hip cuts the neck this fraction of the way from the head centre to its base


def _femur(resected: bool = False) -> Part:
    """Proximal femur: head, neck, trochanters and a hollow shaft running out of the bottom.

    ``resected``: the head and the upper neck cut away (a total hip's femoral osteotomy, NECK_CUT).
    """
    hip = np.asarray(HIP_CENTER)
    neck_base = np.asarray(FEMORAL_NECK_BASE)
    neck_axis = _unit(neck_base - hip)
    cut = hip + NECK_CUT * (neck_base - hip)

    def sdf(p):
        shaft = subtract(
            capsule(p, (119, -6, -45), (108, -2, -400), 13.5, 12.5),
            capsule(p, (117, -6, -85), (108, -2, -420), 7.0),  # medullary canal
        )
        bone = union(
            sphere(p, hip, FEMORAL_HEAD_RADIUS),
            capsule(p, hip, neck_base, 14.5),
            ellipsoid(p, (121, -12, -14), (11, 16, 20)),  # greater trochanter
            ellipsoid(p, (116, -8, -40), (16, 17, 24)),  # intertrochanteric region
            ellipsoid(p, (103, -16, -58), (7, 8, 9)),  # lesser trochanter
            shaft,
        )
        return intersection(bone, half_space(p, cut, -neck_axis)) if resected else bone

    return Part(sdf, (hip[0] - FEMORAL_HEAD_RADIUS - 1, -35.0, -400.0), (138.0, 25.0, FEMORAL_HEAD_RADIUS + 1))


def _half_gap(params: PhantomParams) -> float:
    """Local mm from the midline to each pubic body's symphyseal face: SYMPHYSIS_GAP / 2 in world mm."""
    return SYMPHYSIS_GAP / (2 * params.scale * params.width_ratio * (1 + SEX_WIDTH * _sex(params)))


def _pelvis_parts(params: PhantomParams) -> list[Part]:
    right, left = _hip_shapes(params)
    half_gap = _half_gap(params)

    def hip_bone(shape: HipShape) -> list[Part]:
        return [_iliac_wing(shape), _acetabulum_and_ischium(shape), _pubis(shape, half_gap)]

    rotation = _spine_rotation(params)
    spine = [_vertebra(*vertebra).turned(rotation, SACRAL_PIVOT) for vertebra in VERTEBRAE]
    return hip_bone(right) + [part.mirrored() for part in hip_bone(left)] + [_sacrum(rotation), *spine]


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
    s, a, sex = params.scale, params.asymmetry, _sex(params)
    w = params.width_ratio * (1 + SEX_WIDTH * sex)
    h = params.height_ratio * (1 - SEX_HEIGHT * sex)
    offset = np.array(PELVIS_OFFSET) * (1.0, s, s * h) + (0.0, _body_center_y(params), 0.0)
    angle = -np.radians(params.tilt_deg)  # anterior tilt turns the top of the pelvis forward
    tilt = np.array([[1, 0, 0], [0, np.cos(angle), -np.sin(angle)], [0, np.sin(angle), np.cos(angle)]])
    right, left = np.array([s * w * (1 + a), s, s * h]), np.array([s * w * (1 - a), s, s * h])
    return Placement(offset, tilt, right, left), Placement(offset, np.eye(3), right, left)


@dataclass(frozen=True)
class Deformation:
    """A smooth displacement of world space, d(x) = sum_k a_k exp(-|x - c_k|^2 / (2 w_k^2)), and its maps.

    ``forward`` (x -> x + d(x)) moves the bones and their landmarks. It is a diffeomorphism when d's
    Lipschitz constant L < 1 (``lipschitz_bound`` bounds it; PhantomParams keeps it below 1/2), and then
    ``inverse`` solves y = x + d(x) for x by the fixed-point iteration x <- y - d(x): a contraction of
    rate L, whose error after a step smaller than t is below t L / (1 - L) <= t.

    Attributes:
        centers: (K, 3) world mm; widths: (K,) world mm; amplitudes: (K, 3) world mm.
    """

    centers: np.ndarray
    widths: np.ndarray
    amplitudes: np.ndarray

    @property
    def lipschitz_bound(self) -> float:
        return lipschitz_bound(self.widths, self.amplitudes) if len(self.widths) else 0.0

    @property
    def max_displacement(self) -> float:
        """mm: a bound on |d(x)| anywhere, sum_k |a_k|."""
        return float(np.linalg.norm(self.amplitudes, axis=1).sum()) if len(self.widths) else 0.0

    def displacement(self, x: np.ndarray) -> np.ndarray:
        """(..., 3) d(x) of (..., 3) world mm."""
        x = np.asarray(x, dtype=np.float64)
        if not len(self.widths):
            return np.zeros_like(x)
        offsets = x[..., None, :] - self.centers  # (..., K, 3)
        weights = np.exp(-0.5 * np.einsum("...ki,...ki->...k", offsets, offsets) / self.widths**2)
        return weights @ self.amplitudes

    def forward(self, x: np.ndarray) -> np.ndarray:
        """(..., 3) x + d(x): where the deformation takes (..., 3) world points."""
        x = np.asarray(x, dtype=np.float64)
        return x + self.displacement(x)

    def inverse(self, y: np.ndarray, tolerance: float = 1e-6, max_steps: int = 200) -> np.ndarray:
        """(..., 3) the x with x + d(x) = y, for (..., 3) world points y, to ``tolerance`` mm."""
        y = np.asarray(y, dtype=np.float64)
        x = y.copy()
        for _ in range(max_steps):
            step = y - self.displacement(x) - x
            x += step
            if np.abs(step).max(initial=0.0) < tolerance:
                break
        return x


def phantom_deformation(params: PhantomParams) -> Deformation:
    """The world-mm deformation of ``params``: bump centres placed by the pelvis, widths and amplitudes scaled."""
    pelvis, _ = _placements(params)
    bumps = np.asarray(params.deformation, dtype=np.float64).reshape(-1, 7)
    return Deformation(pelvis.to_world(bumps[:, :3]), bumps[:, 3] * params.scale, bumps[:, 4:] * params.scale)


DEFORMATION_GRID_STEP = 8.0  # mm between the nodes where D^-1 is solved; voxels interpolate it


def _upsample(values: np.ndarray, coarse: np.ndarray, fine: np.ndarray, axis: int) -> np.ndarray:
    """``values`` sampled at (n,) ``coarse`` coordinates along ``axis``, linearly interpolated to (m,) ``fine`` ones."""
    t = (fine - coarse[0]) / (coarse[1] - coarse[0])
    index = np.clip(np.floor(t).astype(np.intp), 0, len(coarse) - 2)
    shape = [1] * values.ndim
    shape[axis] = len(fine)
    fraction = (t - index).astype(np.float32).reshape(shape)
    low, high = np.take(values, index, axis=axis), np.take(values, index + 1, axis=axis)
    return low + (high - low) * fraction


def _inverse_displacement(deformation: Deformation, axes: list[np.ndarray]) -> tuple[np.ndarray, float]:
    """(I, J, K, 3) float32 D^-1(y) - y at the voxel centres y, and the largest norm it takes (mm).

    It is solved on a coarse grid and trilinearly interpolated: the field is smooth (widths >= 40 mm),
    so interpolating over DEFORMATION_GRID_STEP errs by about step^2 / 8 |d''|, hundredths of a
    millimetre. The norm of the interpolated field never exceeds the largest at the grid nodes.
    """
    coarse = [
        np.linspace(ax[0], ax[-1], max(2, int(np.ceil((ax[-1] - ax[0]) / DEFORMATION_GRID_STEP)) + 1)) for ax in axes
    ]
    nodes = np.stack(np.meshgrid(*coarse, indexing="ij"), axis=-1)
    field = (deformation.inverse(nodes) - nodes).astype(np.float32)
    largest = float(_length(field).max())
    for axis in (2, 1, 0):
        field = _upsample(field, coarse[axis], axes[axis], axis)
    return field, largest


# ----------------------------------------------------------------------------- landmarks


def _ellipse_extreme(center: np.ndarray, axis_u: np.ndarray, axis_v: np.ndarray, direction) -> np.ndarray:
    """(3,) the point of the ellipse center + cos(t) axis_u + sin(t) axis_v furthest along direction."""
    cu, cv = axis_u @ direction, axis_v @ direction
    return center + (cu * axis_u + cv * axis_v) / np.hypot(cu, cv)


# Every landmark the phantom places (those of every set in ``anatomy.LANDMARK_SETS``), named as there.
PHANTOM_LANDMARKS = (
    *("L_ASIS", "L_IOF", "L_MOF", "SPS", "IPS", "R_MOF", "R_IOF", "R_ASIS"),
    *("L_FH", "R_FH", "L_GSN", "R_GSN", "L_SPS", "R_SPS", "L_IPS", "R_IPS"),
)
# Local mm from the midline of the left and right symphysis points (L_SPS ...): on each pubic body, beside the gap.
PUBIC_POINT_OFFSET = 5.0


def _landmark_points(params: PhantomParams, pelvis: Placement, femurs: Placement) -> dict[str, np.ndarray]:
    """Name -> (3,) world mm before the deformation, of every landmark in ``PHANTOM_LANDMARKS``, each a point of
    the primitive that carries it:

    - ASIS: the anterior-most point of the iliac crest tube (``_asis``);
    - IOF, MOF: the inferior and the medial point of the obturator foramen's ellipse;
    - SPS, IPS: the top and bottom of the symphyseal face (the midline); L_SPS ... R_IPS the top and bottom of
      each pubic body's section PUBIC_POINT_OFFSET from the midline, on its surface;
    - FH: the femoral head's centre, placed with the femur;
    - GSN: the deepest point of the greater sciatic notch, the back of the acetabular cup (the notch opens
      backwards between the posterior inferior iliac spine and the ischial spine, and the cup's posterior pole
      is its floor's most anterior point).

    Points of the world-superior, -inferior or -medial extreme of an ellipse are taken after the placement;
    the rest are material points of the local frame.
    """
    right, left = _hip_shapes(params)
    down, up = np.array([0.0, 0.0, -1.0]), np.array([0.0, 0.0, 1.0])
    (by, bz), ry = PUBIC_BODY_CENTER, PUBIC_BODY_SEMI_AXES[0]
    half_gap = _half_gap(params)
    notch = np.asarray(HIP_CENTER) + CUP_OFFSET + (0.0, -CUP_RADIUS, 0.0)

    def foramen_points(side: float, shape: HipShape, mirror: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        center, u, v, _, a, b = _foramen_frame(shape)
        linear = pelvis.linear(side)
        world_center = pelvis.to_world(center * mirror)
        axis_u, axis_v = linear @ (a * u * mirror), linear @ (b * v * mirror)
        inferior = _ellipse_extreme(world_center, axis_u, axis_v, down)
        medial = _ellipse_extreme(world_center, axis_u, axis_v, np.array([-side, 0.0, 0.0]))
        return inferior, medial

    def pubic_points(side: float, shape: HipShape) -> tuple[np.ndarray, np.ndarray]:
        k = np.sqrt(1 - ((PUBIC_POINT_OFFSET - half_gap) / PUBIC_BODY_HALF_LENGTH) ** 2)  # the section's size
        center = pelvis.to_world(np.array([side * PUBIC_POINT_OFFSET, by, bz]))
        axis_y = pelvis.linear(side) @ (0.0, k * ry, 0.0)
        axis_z = pelvis.linear(side) @ (0.0, 0.0, k * shape.symphysis_height)
        return _ellipse_extreme(center, axis_y, axis_z, up), _ellipse_extreme(center, axis_y, axis_z, down)

    symphysis_center = pelvis.to_world(np.array([0.0, by, bz]))
    symphysis_y = pelvis.linear(1.0) @ (0.0, ry, 0.0)
    symphysis_z = pelvis.linear(1.0) @ (0.0, 0.0, right.symphysis_height)
    points = {
        "SPS": _ellipse_extreme(symphysis_center, symphysis_y, symphysis_z, up),
        "IPS": _ellipse_extreme(symphysis_center, symphysis_y, symphysis_z, down),
    }
    for side, shape, prefix in ((-1.0, left, "L"), (1.0, right, "R")):
        mirror = np.array([side, 1.0, 1.0])
        iof, mof = foramen_points(side, shape, mirror)
        sps, ips = pubic_points(side, shape)
        points |= {
            f"{prefix}_ASIS": pelvis.to_world(_asis(shape) * mirror),
            f"{prefix}_IOF": iof,
            f"{prefix}_MOF": mof,
            f"{prefix}_FH": femurs.to_world(np.asarray(HIP_CENTER) * mirror),
            f"{prefix}_GSN": pelvis.to_world(notch * mirror),
            f"{prefix}_SPS": sps,
            f"{prefix}_IPS": ips,
        }
    return points


def _landmarks(
    params: PhantomParams, pelvis: Placement, femurs: Placement, deformation: Deformation, landmarks: LandmarkSet
) -> np.ndarray:
    """(N, 3) world mm of the set's landmarks in its order: their points (``_landmark_points``), deformed."""
    unknown = [name for name in landmarks.names if name not in PHANTOM_LANDMARKS]
    if unknown:
        raise ValueError(
            f"the phantom cannot place landmark(s) {', '.join(unknown)} of the landmark set {landmarks.name!r}; "
            f"it places {', '.join(PHANTOM_LANDMARKS)}"
        )
    points = _landmark_points(params, pelvis, femurs)
    placed = deformation.forward(np.stack([points[name] for name in PHANTOM_LANDMARKS]))
    return placed[[PHANTOM_LANDMARKS.index(name) for name in landmarks.names]]


# ----------------------------------------------------------------------------- scene: table and implants

TABLE_CONTACT = 8.0  # mm the body's back is pressed flat on the table (at most half the fat layer)
TABLE_RAIL_SIZE = (20.0, 10.0)  # mm (width, height) of each rail, under the slab
TABLE_RAIL_HU = 1200.0
METAL_HU, LINER_HU = 3000.0, -80.0  # titanium or steel (within the DRR's clip at 3071); polyethylene

# Implants, in the right side's local frame (the left one mirrored); metal sizes are not scaled.
SACROILIAC_SCREW = ((68.0, -74.0, 47.0), (6.0, -71.0, 53.0))  # lateral ilium entry -> S1 body
SCREW_RADIUS, WASHER_RADIUS, WASHER_LENGTH = 3.5, 7.0, 3.0
PEDICLE_SCREW = ((16.0, -22.0, 3.0), (6.0, 28.0, 3.0))  # entry, tip: offsets (x, from body back, from body z)
PEDICLE_SCREW_RADIUS, SCREW_HEAD_RADIUS, ROD_RADIUS, ROD_OVERHANG = 3.25, 6.0, 2.75, 8.0
STEM = ((118.0, -8.0, -26.0), (116.0, -6.0, -60.0), (112.0, -4.0, -150.0))  # femur local mm, neck base down
STEM_RADII = (9.0, 6.5, 5.0)
NECK_RADIUS, IMPLANT_HEAD_RADIUS, CUP_SHELL = 6.0, 16.0, 3.0  # mm; the cup's outside fills the socket
ACETABULAR_OPENING = (0.72, 0.28, -0.63)


def _table_depth(params: PhantomParams) -> tuple[float, float]:
    """(mm the table adds below the body, mm of the body's back pressed flat): (0, 0) without a table."""
    if not params.table:
        return 0.0, 0.0
    return params.table_thickness + TABLE_RAIL_SIZE[1], min(TABLE_CONTACT, params.fat_thickness / 2)


def _body_center_y(params: PhantomParams) -> float:
    """World y of the body's axis: the grid is centred on body and table together."""
    depth, contact = _table_depth(params)
    return (depth - contact) / 2


def _solid(sdf: Sdf, points: np.ndarray, radius: float) -> Part:
    """A world-mm solid within ``radius`` of (N, 3) ``points``' bounding box."""
    points = np.asarray(points)
    return Part(sdf, tuple(points.min(0) - radius), tuple(points.max(0) + radius))


def _rod(a: np.ndarray, b: np.ndarray, radius_a: float, radius_b: float | None = None) -> Part:
    """A world-mm capsule from a to b (3,), its radius going from radius_a to radius_b."""
    radius = max(radius_a, radius_b or 0.0)
    return _solid(lambda p: capsule(p, a, b, radius_a, radius_b), np.stack([a, b]), radius)


def _ball(center: np.ndarray, radius: float) -> Part:
    return _solid(lambda p: sphere(p, center, radius), center[None], radius)


Place = Callable[[np.ndarray], np.ndarray]  # (3,) local mm -> (3,) world mm, deformed


def _sacroiliac_screws(place: Place) -> list[Part]:
    """An iliosacral screw on each side, from the lateral ilium into S1, with a washer at its head."""
    metal = []
    for side in (1.0, -1.0):
        entry, tip = (place(np.asarray(q) * (side, 1.0, 1.0)) for q in SACROILIAC_SCREW)
        outward = (entry - tip) / np.linalg.norm(entry - tip)
        metal += [_rod(entry, tip, SCREW_RADIUS), _rod(entry, entry + WASHER_LENGTH * outward, WASHER_RADIUS)]
    return metal


def _pedicle_screws(place: Place) -> list[Part]:
    """L4-L5 fusion: a screw through each pedicle into the body, a head at its entry, a rod on each side."""
    metal = []
    for side in (1.0, -1.0):
        heads = []
        for (_, cy, cz), (_, wy), _, _ in VERTEBRAE:
            entry, tip = (place(np.array([side * dx, cy - wy + dy, cz + dz])) for dx, dy, dz in PEDICLE_SCREW)
            heads.append(entry)
            metal += [_rod(entry, tip, PEDICLE_SCREW_RADIUS), _ball(entry, SCREW_HEAD_RADIUS)]
        low, high = heads[0], heads[-1]
        along = (high - low) / np.linalg.norm(high - low)
        metal.append(_rod(low - ROD_OVERHANG * along, high + ROD_OVERHANG * along, ROD_RADIUS))
    return metal


def _total_hip(
    side: float, place_pelvis: Place, place_femur: Place, opening: np.ndarray, scale: float
) -> tuple[list[Part], list[Part]]:
    """(metal, polyethylene) of a total hip on ``side``: a hemispherical cup filling the socket, opening
    along the world unit vector ``opening`` (3,), its liner, the head, the neck and a tapered stem."""
    mirror = np.array([side, 1.0, 1.0])
    cup_center = place_pelvis(np.asarray(HIP_CENTER) * mirror)
    outer = (FEMORAL_HEAD_RADIUS + JOINT_SPACE) * scale
    inner = outer - CUP_SHELL
    head = place_femur(np.asarray(HIP_CENTER) * mirror)
    stem = [place_femur(np.asarray(q) * mirror) for q in STEM]

    def cup(p):
        shell = np.abs(sphere(p, cup_center, outer - CUP_SHELL / 2)) - CUP_SHELL / 2
        return intersection(shell, half_space(p, cup_center, opening))

    def liner(p):
        inside_cup = intersection(sphere(p, cup_center, inner), half_space(p, cup_center, opening))
        return subtract(inside_cup, sphere(p, head, IMPLANT_HEAD_RADIUS))

    segments = zip(itertools.pairwise(stem), itertools.pairwise(STEM_RADII))
    metal = [
        _solid(cup, cup_center[None], outer),
        _ball(head, IMPLANT_HEAD_RADIUS),
        _rod(head, stem[0], NECK_RADIUS),
        *(_rod(a, b, radius_a, radius_b) for (a, b), (radius_a, radius_b) in segments),
    ]
    return metal, [_solid(liner, cup_center[None], inner)]


def _implant_solids(
    params: PhantomParams, pelvis: Placement, femurs: Placement, deformation: Deformation
) -> tuple[list[Part], list[Part]]:
    """(metal, polyethylene) world-mm solids of the subject's implant: rigid, placed at deformed points."""

    def placer(placement: Placement, turn: Callable[[np.ndarray], np.ndarray] = lambda q: q) -> Place:
        return lambda local: deformation.forward(placement.to_world(turn(np.asarray(local, dtype=np.float64))))

    if params.implant == "sacroiliac_screws":
        return _sacroiliac_screws(placer(pelvis)), []
    if params.implant == "pedicle_screws":
        rotation, pivot = _spine_rotation(params), np.asarray(SACRAL_PIVOT)
        return _pedicle_screws(placer(pelvis, lambda q: pivot + rotation @ (q - pivot))), []  # the spine's turn
    if params.implant in ("left_hip", "right_hip"):
        side = 1.0 if params.implant == "right_hip" else -1.0
        opening = pelvis.linear(side) @ (np.asarray(ACETABULAR_OPENING) * (side, 1.0, 1.0))
        return _total_hip(side, placer(pelvis), placer(femurs), opening / np.linalg.norm(opening), params.scale)
    return [], []


# ----------------------------------------------------------------------------- volume

AIR_HU, FAT_HU, MUSCLE_HU, GAS_HU = -1000.0, -100.0, 40.0, -700.0
CORTICAL_HU, CANCELLOUS_HU = 1500.0, 350.0  # times bone_density
CORTEX_THICKNESS = 2.0  # mm


def _inside_fraction(sdf: np.ndarray, voxel_size: float) -> np.ndarray:
    """Partial volume: 1 deep inside, 0 outside, linear over one voxel across the surface."""
    return np.clip(0.5 - sdf / voxel_size, 0.0, 1.0)


def _muscle_semi_axes(params: PhantomParams) -> np.ndarray:
    """(2,) world mm semi-axes (x, y) of the muscle envelope; the fat layer lies outside it."""
    s, w = params.scale, params.width_ratio * (1 + SEX_WIDTH * _sex(params))
    nominal = np.array(MUSCLE_SEMI_AXES) * (s * w * (1 + abs(params.asymmetry)), s)
    return nominal + params.soft_tissue_extra


def _grid_shape(params: PhantomParams, voxel_size: float) -> tuple[int, int, int]:
    """Voxels enclosing the body (and table) plus a margin in x and y, and a scaled height in z, within MAX_FIELD."""
    body = _muscle_semi_axes(params) + params.fat_thickness + FIELD_MARGIN
    depth, contact = _table_depth(params)
    height = FIELD_HEIGHT * params.scale * params.height_ratio * (1 - SEX_HEIGHT * _sex(params))
    field = np.minimum([2 * body[0], 2 * body[1] + depth - contact, height], MAX_FIELD)
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


SKIP_BLOCK = 3  # voxels per side of the blocks that are skipped together when far from every surface
# Bound on the world-mm change of a part's SDF estimate per mm (stretch, deformation, approximate bounds):
# 2 already gives the volume of the full evaluation on every subject tried; 3 leaves a margin.
SDF_SLOPE = 3.0
FAR = 100.0  # mm: the SDF of voxels known to be far from the surface, signed


def _near_surface_sdf(sdf: Sdf, points: np.ndarray, band: tuple[float, float], voxel: float) -> np.ndarray:
    """(a, b, c) float32 ``sdf`` of (a, b, c, 3) ``points``: exact where it may lie in ``band`` (mm), else +-FAR.

    The voxels are grouped in blocks of SKIP_BLOCK^3 and one voxel of each, at most ``reach`` voxels from
    the others along each axis, is evaluated first; a block whose value lies more than
    SDF_SLOPE * sqrt(3) * reach * voxel beyond the band is wholly outside it, and takes FAR with that
    value's sign. Only the values within the band change the HU, so the volume is that of the full evaluation
    (to float rounding: thousandths of a HU).
    """
    k = SKIP_BLOCK
    picks = [np.minimum(np.arange(0, n, k) + k // 2, n - 1) for n in points.shape[:3]]
    reach = max(k // 2, k - 1 - k // 2)
    first = sdf(points[np.ix_(*picks)])
    margin = SDF_SLOPE * np.sqrt(3.0) * reach * voxel
    near, far = (first > band[0] - margin) & (first < band[1] + margin), np.where(first < 0, -FAR, FAR)

    def spread(block_values: np.ndarray) -> np.ndarray:
        for axis, n in enumerate(points.shape[:3]):
            block_values = np.repeat(block_values, k, axis=axis).take(np.arange(n), axis=axis)
        return block_values

    values = spread(far).astype(np.float32)
    mask = spread(near)
    values[mask] = sdf(points[mask])
    return values


def _bone_sdf(params: PhantomParams, shape, affine: np.ndarray, deformation: Deformation) -> np.ndarray:
    """(I, J, K) float32 world-mm SDF of all bone, exact near the surfaces (``_near_surface_sdf``).

    Each part is evaluated only around its bounding box. A voxel y is bone where its undeformed point
    D^-1(y), taken back to the local frame, is; so the boxes grow by the largest |D^-1(y) - y| over the grid.
    """
    pelvis, femurs = _placements(params)
    axes, voxel = _world_axes(shape, affine), affine[0, 0]
    inverse, moved = _inverse_displacement(deformation, axes) if len(deformation.widths) else (None, 0.0)
    pad = 2 * voxel + CORTEX_THICKNESS + moved
    band = (-CORTEX_THICKNESS - voxel / 2, voxel / 2)
    scale = np.float32(params.scale)
    bone = np.full(shape, FAR, dtype=np.float32)
    right_femur = _femur(resected=params.implant == "right_hip")
    left_femur = _femur(resected=params.implant == "left_hip").mirrored()
    jobs = [(part, pelvis) for part in _pelvis_parts(params)] + [(right_femur, femurs), (left_femur, femurs)]
    for part, placement in jobs:
        box = _index_box(axes, placement.to_world(part.corners()), pad)
        if box is not None:
            points = _box_points(axes, box)
            if inverse is not None:
                points = points + inverse[box]

            def world_sdf(world, part=part, placement=placement):
                return part.sdf(placement.to_local(world)) * scale

            np.minimum(bone[box], _near_surface_sdf(world_sdf, points, band, voxel), out=bone[box])
    return bone


def _solids_fraction(solids: list[Part], shape, affine: np.ndarray) -> np.ndarray | None:
    """(I, J, K) float32 partial volume of the union of world-mm ``solids``; None if there are none."""
    if not solids:
        return None
    axes, voxel = _world_axes(shape, affine), affine[0, 0]
    sdf = np.full(shape, 100.0, dtype=np.float32)
    for solid in solids:
        box = _index_box(axes, np.array([solid.lo, solid.hi]), voxel)
        if box is not None:
            np.minimum(sdf[box], solid.sdf(_box_points(axes, box).astype(np.float32)), out=sdf[box])
    return _inside_fraction(sdf, voxel)


def _soft_tissue_hu(params: PhantomParams, shape, affine: np.ndarray) -> np.ndarray:
    """(I, J, K) float32 HU of air, fat, muscle, bowel gas and the table."""
    axes = _world_axes(shape, affine)
    voxel = affine[0, 0]
    mx, my = _muscle_semi_axes(params)
    x, y = axes[0][:, None].astype(np.float32), axes[1][None, :].astype(np.float32)
    center_y = _body_center_y(params)
    envelope = ellipse_2d(x, y - center_y, mx, my)
    outline = envelope - params.fat_thickness
    contact = _table_depth(params)[1]
    table_top = center_y - my - params.fat_thickness + contact
    if params.table:
        outline = np.maximum(outline, table_top - y)  # the back lies flat on the table
    body = _inside_fraction(outline, voxel)
    muscle = _inside_fraction(envelope, voxel)
    section = AIR_HU + (FAT_HU - AIR_HU) * body + (MUSCLE_HU - FAT_HU) * muscle  # (I, J)
    if params.table:
        thickness, (rail_width, rail_height) = params.table_thickness, TABLE_RAIL_SIZE
        slab = _inside_fraction(np.abs(y - (table_top - thickness / 2)) - thickness / 2, voxel)  # (1, J)
        rail_y = np.abs(y - (table_top - thickness - rail_height / 2)) - rail_height / 2
        rails = _inside_fraction(
            np.maximum(np.abs(np.abs(x) - params.table_rail_offset) - rail_width / 2, rail_y), voxel
        )
        section = section + (params.table_hu - AIR_HU) * slab + (TABLE_RAIL_HU - AIR_HU) * rails
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


def make_phantom(
    params: PhantomParams, voxel_size: float = 2.0, subject_id: str = "phantom", landmarks: LandmarkSet = PAPER
) -> Subject:
    """The CT and landmarks of the subject ``params`` describe (deterministic).

    Returns a Subject with hu (I, J, K) float32 HU in [-1024, 3071], a centred diagonal affine of
    ``voxel_size`` mm and (N, 3) landmarks in world mm, those of the set ``landmarks`` in its order (a
    ValueError names any the phantom cannot place, see ``PHANTOM_LANDMARKS``).
    """
    _check_voxel_size(voxel_size)
    shape = _grid_shape(params, voxel_size)
    affine = center_affine(np.diag([voxel_size, voxel_size, voxel_size, 1.0]), shape)
    return Subject(subject_id, _phantom_hu(params, shape, affine), affine, phantom_landmarks(params, landmarks))


def _check_voxel_size(voxel_size: float) -> None:
    if not 0.5 <= voxel_size <= 8.0:
        raise ValueError(f"voxel_size must be in [0.5, 8] mm, got {voxel_size}")


def _phantom_hu(params: PhantomParams, shape: tuple[int, int, int], affine: np.ndarray) -> np.ndarray:
    """(I, J, K) float32 HU of the subject ``params`` describes, on any grid: ``shape`` voxels placed in the world
    by the diagonal ``affine`` (positive voxel sizes, equal on every axis)."""
    voxel_size = affine[0, 0]
    pelvis, femurs = _placements(params)
    deformation = phantom_deformation(params)
    soft = _soft_tissue_hu(params, shape, affine)
    bone = _bone_sdf(params, shape, affine, deformation)
    density = params.bone_density
    inside = _inside_fraction(bone, voxel_size)
    core = _inside_fraction(bone + CORTEX_THICKNESS, voxel_size)
    hu = soft * (1 - inside) + density * (CORTICAL_HU * (inside - core) + CANCELLOUS_HU * core)
    metal, liner = _implant_solids(params, pelvis, femurs, deformation)
    for solids, value in ((liner, LINER_HU), (metal, METAL_HU)):
        fraction = _solids_fraction(solids, shape, affine)
        if fraction is not None:
            hu += (np.float32(value) - hu) * fraction
    return hu.astype(np.float32, copy=False)


def phantom_landmarks(params: PhantomParams, landmarks: LandmarkSet = PAPER) -> np.ndarray:
    """(N, 3) world mm: the landmarks of the set ``landmarks`` of the subject ``params`` describes, without building
    its volume."""
    pelvis, femurs = _placements(params)
    return _landmarks(params, pelvis, femurs, phantom_deformation(params), landmarks)


def phantom_subject(
    seed: int, voxel_size: float = 2.0, subject_id: str | None = None, landmarks: LandmarkSet = PAPER
) -> Subject:
    """``make_phantom(sample_phantom_params(seed))``, named ``phantom-{seed:05d}`` by default."""
    name = f"phantom-{seed:05d}" if subject_id is None else subject_id
    return make_phantom(sample_phantom_params(seed), voxel_size=voxel_size, subject_id=name, landmarks=landmarks)


# ----------------------------------------------------------------------------- clinical CT

CLINICAL_SHAPE = (512, 512, 320)  # columns, rows and slices of a pelvis CT: a 410 x 410 x 256 mm field at 0.8 mm
CLINICAL_VOXEL_SIZE = 0.8  # mm
CLINICAL_TILT_DEG = (3.0, 2.0)  # the grid turned about x (as a gantry tilt) and then y: an oblique direction matrix
CLINICAL_SLAB = 32  # slices made at a time: the working memory is a slab's, not the volume's


def clinical_ct(
    params: PhantomParams,
    shape: tuple[int, int, int] = CLINICAL_SHAPE,
    voxel_size: float = CLINICAL_VOXEL_SIZE,
    tilt_deg: tuple[float, float] = CLINICAL_TILT_DEG,
    subject_id: str = "clinical",
    landmarks: LandmarkSet = PAPER,
) -> Subject:
    """The subject ``params`` describes as a scanner stores it: a fixed field of view, LPS voxel order, a tilted grid.

    The phantom is made on a ``shape`` grid of ``voxel_size`` mm centred on the world origin (a field that cuts
    through the table, which is wider), whatever the body's size. Its array is in the order of a DICOM series:
    i runs towards the patient's left, j towards the posterior, k towards the superior (LPS), so the affine's
    first two columns point along -x and -y. The grid, with the anatomy and the landmarks, is then turned by
    ``tilt_deg`` degrees about the x axis and then the y axis, so the direction matrix is oblique.

    Memory: the (I, J, K) float32 volume (320 MB at the default size) plus the working arrays of one slab of
    ``CLINICAL_SLAB`` slices; no float64 copy of the volume is ever made.

    Returns:
        Subject: hu (I, J, K) float32 HU, a centred (4, 4) affine, (N, 3) landmarks of the set ``landmarks``, world mm.
    """
    _check_voxel_size(voxel_size)
    size_i, size_j, size_k = shape
    ras = center_affine(np.diag([voxel_size, voxel_size, voxel_size, 1.0]), shape)
    hu = np.empty(shape, dtype=np.float32)
    for start in range(0, size_k, CLINICAL_SLAB):
        stop = min(start + CLINICAL_SLAB, size_k)
        slab = ras.copy()
        slab[2, 3] += start * voxel_size
        hu[:, :, start:stop] = _phantom_hu(params, (size_i, size_j, stop - start), slab)[::-1, ::-1]
    lps_order = np.array([[-1.0, 0, 0, size_i - 1], [0, -1.0, 0, size_j - 1], [0, 0, 1.0, 0], [0, 0, 0, 1.0]])
    tilt = np.eye(4)
    tilt[:3, :3] = _rotation("y", tilt_deg[1]) @ _rotation("x", tilt_deg[0])
    points = phantom_landmarks(params, landmarks) @ tilt[:3, :3].T
    return Subject(subject_id, hu, tilt @ ras @ lps_order, points)


def _rotation(axis: str, degrees: float) -> np.ndarray:
    """(3, 3) rotation by ``degrees`` about the world ``axis`` ("x" or "y"), right-handed."""
    c, s = np.cos(np.radians(degrees)), np.sin(np.radians(degrees))
    if axis == "x":
        return np.array([[1.0, 0.0, 0.0], [0.0, c, -s], [0.0, s, c]])
    return np.array([[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]])
