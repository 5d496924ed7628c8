"""``study predict``: the landmarks (and, given the subject's 3D landmarks, the C-arm pose) of X-ray images.

The landmarks are those of the model's set (its checkpoint's, ``data.landmarks``), keyed by their
names in the JSON; 3D landmark files are read against the same set (extra names ignored, missing ones
left out of the registration). An image is taken to cover the config's whole detector, whatever its
pixel count: it is resized to the model's resolution with ``geometry.rescale`` (intrinsics kept
consistent), and the landmarks are mapped back to the image's own pixels. Writes ``<image stem>.json``
and ``<image stem>_landmarks.png``.
"""

import json
from pathlib import Path

import numpy as np
import torch

from components import geometry, heatmaps, registration
from components.anatomy import LandmarkSet
from components.images import read_xray
from components.model import TrainedModel, load_trained_model
from components.volumes import landmark_file_beside, load_landmarks, load_subject
from study import console
from study.config import ConfigError, StudyConfig
from study.evaluation.models import resolve_model
from study.figures import draw_image, draw_landmarks, plt, save_figure
from study.files import write_text

__all__ = ["predict"]


def landmarks_3d_of(subject: str | None, landmarks_3d: str | None, landmarks: LandmarkSet) -> torch.Tensor | None:
    """(N, 3) world landmarks of the set (mm, RAS+, the CT grid centred frame of docs/architecture.md; NaN for one
    the file lacks) from a CT and the landmark file beside it, or from a landmark file already in that frame
    (RAS, or LPS mm)."""
    if subject and landmarks_3d:
        raise ConfigError("give --subject or --landmarks-3d, not both")
    if subject:
        return torch.from_numpy(load_subject(subject, landmark_file_beside(subject), landmarks=landmarks).landmarks)
    if landmarks_3d:
        points, frame = load_landmarks(landmarks_3d, landmarks=landmarks)
        if frame == "voxel":
            raise ConfigError(f"{landmarks_3d}: voxel coordinates need their CT; use --subject <CT> instead")
        return torch.from_numpy(points * np.array([-1.0, -1.0, 1.0]) if frame == "lps" else points)
    return None


def predict_image(
    model: TrainedModel, image: np.ndarray, config: StudyConfig, landmarks_3d: torch.Tensor | None
) -> dict:
    """Landmarks (argmax and soft-argmax, in the image's pixels, by the model's landmark names) and, with 3D
    landmarks, the pose (None, with the reason, when fewer than ``data.landmarks.min_for_registration`` of
    them have 3D positions or they are degenerate)."""
    height, width = image.shape
    size = config.data.image_size
    native = geometry.rescale(config.data.detector.camera(), height, width)[0]
    camera, resized, _ = geometry.rescale(native, size, size, image=torch.from_numpy(image)[None, None])
    with torch.no_grad():
        logits = model.network(resized.float()).float()
    points = {
        "argmax": heatmaps.argmax(logits)[0].double(),
        "soft_argmax": model.decoding.soft_argmax(logits)[0].double(),
    }
    result = {"image_size": [height, width], "model_size": size}
    for method, model_points in points.items():
        back = geometry.rescale(camera, height, width, points_2d=model_points)[2]
        result[f"landmarks_{method}"] = {
            name: [round(float(u), 3), round(float(v), 3)] for name, (u, v) in zip(model.landmarks.names, back)
        }
    if landmarks_3d is not None:
        minimum = config.data.landmarks.min_for_registration
        solved = registration.solve(landmarks_3d[None].double(), points["argmax"][None], camera, min_landmarks=minimum)
        pose = solved.pose[0]
        if not torch.isfinite(pose).all():
            known = int(torch.isfinite(landmarks_3d).all(-1).sum())
            result["pose"] = None
            result["pose_failure"] = (
                f"{known} of the {len(model.landmarks)} landmarks have 3D positions; a registration needs "
                f"{minimum} that are not coplanar (data.landmarks.min_for_registration)"
            )
            return result
        angles, _ = geometry.pose_to_euler_zxy(pose[None])
        result["pose"] = {
            "rotation_vector_rad": pose[:3].tolist(),
            "translation_mm": pose[3:].tolist(),
            "euler_zxy_deg": torch.rad2deg(angles[0]).tolist(),
            "converged": bool(solved.converged[0]),
            "reprojection_rms_px": float(solved.residuals[0].pow(2).sum(-1).nanmean().sqrt()) * native.width / size,
        }
    return result


def write_overlay(image: np.ndarray, result: dict, landmarks: LandmarkSet, out: Path) -> Path:
    figure, axis = plt.subplots(figsize=(5, 5 * image.shape[0] / image.shape[1]))
    axis.axis("off")
    draw_image(axis, image)
    points = np.array([result["landmarks_argmax"][name] for name in landmarks.names])
    draw_landmarks(axis, points, np.ones(len(points), dtype=bool), numbered=True, marker="x")
    axis.set_title("predicted landmarks (argmax)", fontsize=8)
    return save_figure(figure, out)


def predict(
    reference: str,
    images: list[str],
    config: StudyConfig | None = None,
    subject: str | None = None,
    landmarks_3d: str | None = None,
    out_dir: str | Path = "predictions",
) -> list[dict]:
    """``study predict``: a JSON file and an overlay PNG per image in ``out_dir``; returns the results."""
    checkpoint, _, config = resolve_model(reference, config)
    model = load_trained_model(checkpoint)
    if model.landmarks.names != config.data.landmarks.landmark_set().names:
        raise ConfigError(
            f"{reference}: the model detects the landmark set {model.landmarks.name!r}, not the config's "
            f"{config.data.landmarks.name!r}"
        )
    points_3d = landmarks_3d_of(subject, landmarks_3d, model.landmarks)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    results = []
    for path in images:
        image = read_xray(path)
        result = {"image": str(path)} | predict_image(model, image, config, points_3d)
        stem = Path(path).name.split(".")[0]
        write_text(json.dumps(result, indent=2) + "\n", out_dir / f"{stem}.json")
        write_overlay(image, result, model.landmarks, out_dir / f"{stem}_landmarks.png")
        pose = result.get("pose")
        line = f"{path}: {out_dir / (stem + '.json')}"
        if pose:
            angles, translation = (
                np.round(pose["euler_zxy_deg"], 1).tolist(),
                np.round(pose["translation_mm"], 1).tolist(),
            )
            line += f"; pose ZXY {angles} deg, t {translation} mm"
        elif "pose_failure" in result:
            line += f"; no pose: {result['pose_failure']}"
        console.say(line)
        results.append(result)
    return results
