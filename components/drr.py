"""Rendering one subject for a batch of poses with DiffDRR.

The DiffDRR module (the subject's density volume and the detector) is built once per subject in
``SubjectRenderer``; every call renders a batch of poses and returns the images with the exact 2D
landmarks, projected by ``geometry.project`` (no landmark is ever found by rendering it).
"""

from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from diffdrr.data import read
from diffdrr.drr import DRR
from torchio import ScalarImage

from components import geometry
from components.geometry import Camera
from components.subject import Subject

# HU outside this range (metal, scanner padding) would rescale DiffDRR's per-volume density.
HU_RANGE = (-1024.0, 3071.0)


@dataclass(frozen=True)
class RenderedViews:
    """DRRs of one subject.

    Attributes:
        images: (B, H, W) float32 line integrals of density (bone bright).
        landmarks_2d: (B, 8, 2) float64 pixel coordinates (u, v) of the landmarks.
        visible: (B, 8) bool, True where a landmark projects inside the image, in front of the source.
    """

    images: torch.Tensor
    landmarks_2d: torch.Tensor
    visible: torch.Tensor


def default_n_points(subject: Subject) -> int:
    """Samples per ray for the trilinear renderer: about one per voxel along the volume's diagonal."""
    extent = np.asarray(subject.hu.shape) * subject.spacing
    return int(np.ceil(np.linalg.norm(extent) / subject.spacing.min()))


def landmark_visibility(landmarks_2d: torch.Tensor, depth: torch.Tensor, camera: Camera) -> torch.Tensor:
    """(B, N) bool: inside the [0, W) x [0, H) image and at positive depth."""
    u, v = landmarks_2d.unbind(-1)
    return (u >= 0) & (u < camera.width) & (v >= 0) & (v < camera.height) & (depth > 0)


class SubjectRenderer:
    """DiffDRR for one subject and one detector, built once and reused for every pose.

    Args:
        subject: the CT and its landmarks (world frame centred on the voxel grid).
        camera: the detector at the resolution to render.
        renderer: "trilinear" (fast, smooth) or "siddon" (exact ray tracing).
        patch_size: render the detector in square patches of this many pixels (bounds memory).
        n_points: samples per ray for "trilinear" (default: ``default_n_points``).
        views_per_call: poses rendered together; 1 is fastest on a CPU, more on a GPU.
        device: where to render.
    """

    def __init__(
        self,
        subject: Subject,
        camera: Camera,
        renderer: Literal["trilinear", "siddon"] = "trilinear",
        patch_size: int | None = None,
        n_points: int | None = None,
        views_per_call: int = 1,
        device: str | torch.device = "cpu",
    ):
        if renderer not in ("trilinear", "siddon"):
            raise ValueError(f"renderer must be 'trilinear' or 'siddon', got {renderer!r}")
        if patch_size is not None and (camera.height * camera.width) % (patch_size**2):
            raise ValueError(
                f"patch_size {patch_size} must tile the {camera.height}x{camera.width} detector "
                f"(height * width divisible by patch_size ** 2)"
            )
        self.subject = subject
        self.camera = camera
        self.device = torch.device(device)
        self.views_per_call = views_per_call
        self.render_kwargs = {"n_points": n_points or default_n_points(subject)} if renderer == "trilinear" else {}
        hu = np.clip(subject.hu, *HU_RANGE).astype(np.float32)
        # diffdrr.data.read edits the affine it is given: hand it a copy.
        volume = ScalarImage(tensor=torch.from_numpy(hu)[None], affine=subject.affine.copy())
        self.drr = DRR(
            read(volume),
            sdd=camera.sdd,
            height=camera.height,
            width=camera.width,
            delx=camera.delx,
            dely=camera.dely,
            x0=camera.x0,
            y0=camera.y0,
            renderer=renderer,
            patch_size=patch_size,
        ).to(self.device)

    @torch.no_grad()
    def render_images(self, poses: torch.Tensor) -> torch.Tensor:
        """(B, H, W) float32 DRRs of (B, 6) poses."""
        images = []
        for chunk in poses.split(self.views_per_call):
            angles, translation = geometry.pose_to_euler_zxy(chunk.to(self.device, torch.float64))
            image = self.drr(
                angles.float(),
                translation.float(),
                parameterization="euler_angles",
                convention="ZXY",
                **self.render_kwargs,
            )
            images.append(image[:, 0].float().cpu())
        return torch.cat(images)

    def project_landmarks(self, poses: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, 8, 2) float64 pixel coordinates and (B, 8) visibility of the landmarks for (B, 6) poses."""
        poses = poses.to(torch.float64).cpu()
        landmarks = torch.from_numpy(self.subject.landmarks).to(torch.float64).expand(len(poses), -1, -1)
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
