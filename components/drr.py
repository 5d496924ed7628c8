"""Rendering one subject for a batch of poses, with a renderer chosen by name.

Renderers are registered by name (``RENDERERS``, filled by ``register``), each a builder of a
``Renderer``: the subject's density volume and the detector, built once per subject, then called
with batches of poses. ``SubjectRenderer`` wraps one and returns the images with the exact 2D
landmarks, projected by ``geometry.project`` (no landmark is ever found by rendering it).

- ``trilinear`` and ``siddon``: DiffDRR 0.6.1's renderers.
- ``nanodrr``: nanodrr 0.1.7 (DiffDRR's author's rewrite), given the same density and the camera
  of ``geometry.make_k_inv``, so it renders the same geometry in the same units (line integrals,
  mm, of the density). Its Triton kernel on CUDA, pure torch elsewhere.

Every renderer integrates one density, ``diffdrr_density``: DiffDRR's conversion of HU with its scale
fixed in HU rather than set by the volume (its brightest voxel, its lowest soft tissue), so metal or a
calibration rod changes the rays through it and nothing else.

Every entry declares whether it is batch invariant: whether a pose's pixels are the same (to
float noise, 1e-5 relative) rendered alone or with others (``tests/components/test_drr.py``
measures it for every entry). DiffDRR's trilinear renderer is not: it takes one ray range over the
whole batch (and patch). ``SubjectRenderer`` batches poses only through an invariant renderer.
"""

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch
import torchio
from diffdrr.drr import DRR
from nanodrr.data import Subject as NanoSubject
from nanodrr.drr import DRR as NanoDRR
from nanodrr.drr import render as nanodrr_render

from components import geometry
from components.fluoroscopy import linear_attenuation
from components.geometry import Camera
from components.subject import Subject

# HU are clipped to this range (scanner padding below, metal beyond 12 bits above); its top is density 1.
HU_RANGE = (-1024.0, 3071.0)
# Air at or below this HU (density 0), as diffdrr.data.transform_hu_to_density draws the line.
AIR_HU = -800.0
# diffdrr.data.read's frame change for orientation "AP": the C-arm turned 90 degrees about x.
DIFFDRR_AP_REORIENT = ((1.0, 0.0, 0.0, 0.0), (0.0, 0.0, -1.0, 0.0), (0.0, 1.0, 0.0, 0.0), (0.0, 0.0, 0.0, 1.0))
# nanodrr's backend per device type (its fused Triton kernel on CUDA); every other device: "torch".
NANODRR_BACKENDS = {"cuda": "triton"}


class Renderer(Protocol):
    """One subject and one detector, ready to render.

    Attributes:
        density: (I, J, K) float32 the volume it integrates, in voxel index order, on its device;
            an in-place edit shows in the next render.
    """

    density: torch.Tensor

    def __call__(self, poses: torch.Tensor) -> torch.Tensor:
        """(B, H, W) float32 DRRs, on the renderer's device, of (B, 6) float64 poses."""


# build(subject, camera, patch_size, n_points, device) -> Renderer
RendererBuilder = Callable[[Subject, Camera, int | None, int | None, torch.device], Renderer]


@dataclass(frozen=True)
class RendererEntry:
    """A registered renderer.

    Attributes:
        build: ``build(subject, camera, patch_size, n_points, device) -> Renderer``.
        batch_invariant: a pose's pixels do not depend on the other poses of its call.
    """

    build: RendererBuilder
    batch_invariant: bool


RENDERERS: dict[str, RendererEntry] = {}


def register(name: str, batch_invariant: bool):
    """Decorator: make a renderer builder available under ``name``, declaring its batch invariance."""

    def add(build: RendererBuilder) -> RendererBuilder:
        if name in RENDERERS:
            raise ValueError(f"renderer {name!r} is registered twice")
        RENDERERS[name] = RendererEntry(build, batch_invariant)
        return build

    return add


def renderer_entry(name: str) -> RendererEntry:
    """The registered renderer ``name``; an unknown name is refused with the registered ones."""
    if name not in RENDERERS:
        raise ValueError(f"unknown renderer {name!r}; registered: {sorted(RENDERERS)}")
    return RENDERERS[name]


@dataclass(frozen=True)
class RenderedViews:
    """DRRs of one subject.

    Attributes:
        images: (B, H, W) float32 line integrals of density (bone bright).
        landmarks_2d: (B, N, 2) float64 pixel coordinates (u, v) of the landmarks (NaN for one the subject lacks).
        visible: (B, N) bool, True where a landmark the subject has projects inside the image, in front of the
            source.
    """

    images: torch.Tensor
    landmarks_2d: torch.Tensor
    visible: torch.Tensor


def default_n_points(subject: Subject) -> int:
    """Samples per ray for the trilinear renderers: about one per voxel along the volume's diagonal."""
    extent = np.asarray(subject.hu.shape) * subject.spacing
    return int(np.ceil(np.linalg.norm(extent) / subject.spacing.min()))


def clipped_hu(subject: Subject) -> np.ndarray:
    """(I, J, K) float32 the subject's HU clipped to ``HU_RANGE``."""
    return np.clip(subject.hu, *HU_RANGE).astype(np.float32)


def diffdrr_density(hu: np.ndarray) -> np.ndarray:
    """(I, J, K) float32 the density every renderer integrates: a fixed linear map of (I, J, K) HU above air.

    density = (HU - AIR_HU) / (HU_RANGE[1] - AIR_HU), the HU clipped to [AIR_HU, HU_RANGE[1]]: air (at or below
    ``AIR_HU``) is 0 and ``HU_RANGE[1]`` is 1, whatever else the volume holds. This is DiffDRR 0.6.1's
    ``transform_hu_to_density`` (bone multiplier 1) with its two numbers that depend on the volume fixed:
    DiffDRR subtracts the volume's lowest soft-tissue HU (just above -800 in most CTs) and divides by the
    volume's maximum, so one metal voxel scales the whole image down, and a field cut through the skin
    can shift it. Memory: one float32 copy of the volume.
    """
    density = np.clip(hu, AIR_HU, HU_RANGE[1]).astype(np.float32, copy=False)
    density -= np.float32(AIR_HU)
    density /= np.float32(HU_RANGE[1] - AIR_HU)
    return density


def diffdrr_subject(density: torch.Tensor, affine: np.ndarray) -> torchio.Subject:
    """What ``diffdrr.data.read`` makes of a volume (orientation "AP"), holding the (I, J, K) ``density`` itself.

    ``read`` would convert the volume again (its per-volume min-max scaling, with index arrays of every
    voxel: gigabytes at 512 x 512 x 300); this takes the density as it is, without a copy. The (4, 4)
    affine is already centred on the voxel grid (``components.subject``), as ``read`` would centre it.
    """
    image = torchio.ScalarImage(tensor=density[None], affine=affine.copy())
    reorient = torch.tensor(DIFFDRR_AP_REORIENT, dtype=torch.float32)
    return torchio.Subject(volume=image, mask=None, orientation="AP", reorient=reorient, density=image, fiducials=None)


def camera_to_world(poses: torch.Tensor) -> torch.Tensor:
    """(B, 4, 4) camera -> world matrices (pinhole camera frame of ``geometry``) of (B, 6) poses."""
    rotation_wc, translation_wc = geometry.make_rt_inv(poses)
    matrix = torch.eye(4, dtype=poses.dtype, device=poses.device).repeat(len(poses), 1, 1)
    matrix[:, :3, :3] = rotation_wc.transpose(-1, -2)
    matrix[:, :3, 3] = -(rotation_wc.transpose(-1, -2) @ translation_wc[..., None])[..., 0]
    return matrix


def row_bands(camera: Camera, patch_size: int | None) -> list[slice]:
    """Pixel ranges of the flattened (H * W) image, whole rows, about ``patch_size ** 2`` pixels each."""
    rows = camera.height if patch_size is None else max(1, patch_size**2 // camera.width)
    return [
        slice(start * camera.width, min(start + rows, camera.height) * camera.width)
        for start in range(0, camera.height, rows)
    ]


class DiffDRRRenderer:
    """DiffDRR's ``DRR`` module (``method`` "trilinear" or "siddon") for one subject and detector, integrating
    ``diffdrr_density``."""

    def __init__(
        self,
        subject: Subject,
        camera: Camera,
        method: str,
        patch_size: int | None,
        n_points: int | None,
        device: torch.device,
    ):
        self.render_kwargs = {"n_points": n_points or default_n_points(subject)} if method == "trilinear" else {}
        density = torch.from_numpy(diffdrr_density(subject.hu))
        self.module = DRR(
            diffdrr_subject(density, subject.affine),
            sdd=camera.sdd,
            height=camera.height,
            width=camera.width,
            delx=camera.delx,
            dely=camera.dely,
            x0=camera.x0,
            y0=camera.y0,
            renderer=method,
            patch_size=patch_size,
        ).to(device)
        self.density = self.module.density
        self.device = device

    @torch.no_grad()
    def __call__(self, poses: torch.Tensor) -> torch.Tensor:
        """(B, H, W) float32 DRRs of (B, 6) poses."""
        angles, translation = geometry.pose_to_euler_zxy(poses.to(self.device, torch.float64))
        image = self.module(
            angles.float(),
            translation.float(),
            parameterization="euler_angles",
            convention="ZXY",
            **self.render_kwargs,
        )
        return image[:, 0].float()


class NanoDRRRenderer:
    """nanodrr's ray marcher for one subject and detector, in DiffDRR's geometry and density.

    The volume is ``diffdrr_density`` of the HU (nanodrr's own HU -> attenuation conversion is off),
    the camera is ``geometry.make_k_inv`` and the pose ``camera_to_world``, so the images are
    DiffDRR's: line integrals (mm) of the same density, from the same source through the same
    pixel centres. nanodrr clips every ray to the volume on its own and samples ``n_samples``
    points inside it, so a pose's pixels never depend on its batch-mates (beyond float32 rounding).
    """

    def __init__(
        self,
        subject: Subject,
        camera: Camera,
        patch_size: int | None,
        n_points: int | None,
        device: torch.device,
    ):
        density = torch.from_numpy(diffdrr_density(subject.hu))
        volume = torchio.ScalarImage(tensor=density[None], affine=subject.affine.copy())
        self.volume = NanoSubject.from_images(volume, convert_to_mu=False).to(device)
        k_inv = geometry.make_k_inv(camera, dtype=torch.float32)[None]
        self.module = NanoDRR(k_inv, torch.tensor([camera.sdd], dtype=torch.float32), camera.height, camera.width)
        self.module = self.module.to(device)
        self.n_samples = n_points or default_n_points(subject)
        self.bands = row_bands(camera, patch_size)
        self.camera = camera
        self.device = device
        self.backend = NANODRR_BACKENDS.get(device.type, "torch")
        # nanodrr stores the volume as (1, 1, K, J, I) (``image`` is the stored tensor with the
        # conversion off); this is an (I, J, K) view of it.
        self.density = self.volume.image[0, 0].permute(2, 1, 0)

    @torch.no_grad()
    def __call__(self, poses: torch.Tensor) -> torch.Tensor:
        """(B, H, W) float32 DRRs of (B, 6) poses, a band of rows per call of nanodrr."""
        rt_inv = camera_to_world(poses.to(self.device, torch.float64)).float()
        width = self.camera.width
        bands = [
            nanodrr_render(
                self.volume,
                self.module.k_inv,
                rt_inv,
                self.module.sdd,
                (band.stop - band.start) // width,
                width,
                n_samples=self.n_samples,
                src=self.module.src,
                tgt=self.module.tgt[:, band],
                backend=self.backend,
            )
            for band in self.bands
        ]
        return torch.cat(bands, dim=2)[:, 0].float()


@register("trilinear", batch_invariant=False)
def build_trilinear(
    subject: Subject, camera: Camera, patch_size: int | None, n_points: int | None, device: torch.device
) -> Renderer:
    """DiffDRR's trilinear renderer: fast and smooth; one ray range per call (and patch)."""
    return DiffDRRRenderer(subject, camera, "trilinear", patch_size, n_points, device)


@register("siddon", batch_invariant=True)
def build_siddon(
    subject: Subject, camera: Camera, patch_size: int | None, n_points: int | None, device: torch.device
) -> Renderer:
    """DiffDRR's Siddon renderer: exact ray tracing through the voxels (``n_points`` unused)."""
    return DiffDRRRenderer(subject, camera, "siddon", patch_size, n_points, device)


@register("nanodrr", batch_invariant=True)
def build_nanodrr(
    subject: Subject, camera: Camera, patch_size: int | None, n_points: int | None, device: torch.device
) -> Renderer:
    """nanodrr: trilinear samples on each ray inside the volume; Triton on CUDA, torch elsewhere."""
    return NanoDRRRenderer(subject, camera, patch_size, n_points, device)


def landmark_visibility(landmarks_2d: torch.Tensor, depth: torch.Tensor, camera: Camera) -> torch.Tensor:
    """(B, N) bool: present (finite, not a NaN landmark the subject lacks), inside the [0, W) x [0, H) image
    and at positive depth."""
    u, v = landmarks_2d.unbind(-1)
    present = torch.isfinite(landmarks_2d).all(-1) & torch.isfinite(depth)
    return present & (u >= 0) & (u < camera.width) & (v >= 0) & (v < camera.height) & (depth > 0)


class SubjectRenderer:
    """A registered renderer for one subject and one detector, built once and reused for every pose.

    Args:
        subject: the CT and its landmarks (world frame centred on the voxel grid).
        camera: the detector at the resolution to render.
        renderer: a name in ``RENDERERS``: "trilinear" (DiffDRR, fast, smooth), "siddon" (DiffDRR,
            exact ray tracing) or "nanodrr" (nanodrr, trilinear per ray; fastest, Triton on CUDA).
        patch_size: render the detector in parts of ``patch_size ** 2`` pixels (bounds memory);
            DiffDRR's patches, or bands of whole rows for nanodrr.
        n_points: samples per ray for "trilinear" and "nanodrr" (default: ``default_n_points``).
        views_per_call: poses rendered together (1 is fastest on a CPU, more on a GPU), for a
            batch-invariant renderer only: one that is not (trilinear) renders one pose per call
            whatever this says, so a pose's image never depends on the poses beside it.
        device: where to render.
    """

    def __init__(
        self,
        subject: Subject,
        camera: Camera,
        renderer: str = "trilinear",
        patch_size: int | None = None,
        n_points: int | None = None,
        views_per_call: int = 1,
        device: str | torch.device = "cpu",
    ):
        entry = renderer_entry(renderer)
        if patch_size is not None and (camera.height * camera.width) % (patch_size**2):
            raise ValueError(
                f"patch_size {patch_size} must tile the {camera.height}x{camera.width} detector "
                f"(height * width divisible by patch_size ** 2)"
            )
        if views_per_call < 1:
            raise ValueError(f"views_per_call must be >= 1, got {views_per_call}")
        self.subject = subject
        self.camera = camera
        self.name = renderer
        self.device = torch.device(device)
        self.batch_invariant = entry.batch_invariant
        self.views_per_call = views_per_call
        self.drr = entry.build(subject, camera, patch_size, n_points, self.device)

    @property
    def poses_per_call(self) -> int:
        """Poses rendered together: ``views_per_call``, or 1 for a renderer that is not batch invariant."""
        return self.views_per_call if self.batch_invariant else 1

    @torch.no_grad()
    def render_images(self, poses: torch.Tensor) -> torch.Tensor:
        """(B, H, W) float32 DRRs of (B, 6) poses, ``poses_per_call`` at a time."""
        return torch.cat([self.drr(chunk).cpu() for chunk in poses.split(self.poses_per_call)])

    @torch.no_grad()
    def render_attenuation(self, poses: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(tau_soft, tau_bone): two (B, H, W) float32 optical depths of (B, 6) poses, the line integrals of the
        subject's soft-tissue and bone attenuation (``fluoroscopy.linear_attenuation``: physical units, not
        DiffDRR's normalised density). The renderer's own volume is swapped for each part, then restored."""
        soft, bone = linear_attenuation(torch.from_numpy(clipped_hu(self.subject)))
        density = self.drr.density
        kept = density.clone()
        try:
            depths = []
            for part in (soft, bone):
                density.copy_(part.to(density.device, density.dtype))
                depths.append(self.render_images(poses))
        finally:
            density.copy_(kept)
        return depths[0], depths[1]

    def project_landmarks(
        self, poses: torch.Tensor, landmarks: np.ndarray | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, N, 2) float64 pixel coordinates and (B, N) visibility of (N, 3) landmarks (default: the subject's)
        for (B, 6) poses; a landmark the subject lacks (a NaN row) is NaN and invisible in every view."""
        poses = poses.to(torch.float64).cpu()
        landmarks = self.subject.landmarks if landmarks is None else landmarks
        landmarks = torch.from_numpy(landmarks).to(torch.float64).expand(len(poses), -1, -1)
        landmarks_2d = geometry.project(landmarks, poses, self.camera)
        depth = geometry.to_camera_frame(landmarks, poses)[..., 2]
        return landmarks_2d, landmark_visibility(landmarks_2d, depth, self.camera)

    def render(self, poses: torch.Tensor) -> RenderedViews:
        """DRRs of (B, 6) poses with their exact 2D landmarks and visibility."""
        landmarks_2d, visible = self.project_landmarks(poses)
        return RenderedViews(self.render_images(poses), landmarks_2d, visible)


def to_uint16(images: torch.Tensor) -> np.ndarray:
    """(B, H, W) uint16 of (B, H, W) float images, each min-max scaled to the full range."""
    flat = images.reshape(len(images), -1)
    low = flat.min(dim=1).values[:, None, None]
    span = (flat.max(dim=1).values[:, None, None] - low).clamp_min(1e-12)
    return ((images - low) / span * 65535.0).round().to(torch.int32).numpy().astype(np.uint16)
