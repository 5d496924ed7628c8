import math
from dataclasses import replace

import pytest
import torch

from components import geometry, heatmaps, losses, registration
from components.geometry import Camera
from components.losses import LossContext, LossSettings, WeightedLoss
from components.model import UNetSettings, make_unet
from components.phantom import phantom_subject
from components.poses import PoseRanges, pose_bounds

CAMERA = Camera(sdd=1020.0, height=64, width=64, delx=431 / 64, dely=431 / 64)


@pytest.fixture(scope="module")
def batch():
    """Two views of a phantom at 64 px: true poses, landmarks and visibility."""
    landmarks_3d = torch.from_numpy(phantom_subject(0, voxel_size=4.0).landmarks).expand(2, -1, -1).clone()
    angles = torch.tensor([[0.05, -0.1, 0.08], [-0.1, 0.05, 0.0]], dtype=torch.float64)
    pose = geometry.pose_from_euler_zxy(
        angles, torch.tensor([[5.0, 800.0, -8.0], [-6.0, 790.0, 4.0]], dtype=torch.float64)
    )
    landmarks_2d = geometry.project(landmarks_3d, pose, CAMERA)
    return {
        "image": torch.zeros(2, 1, 64, 64),
        "landmarks_2d": landmarks_2d,
        "visible": torch.ones(2, 8, dtype=torch.bool),
        "landmarks_3d": landmarks_3d,
        "pose": pose,
    }


def peaked_logits(points: torch.Tensor, sigma: float = 1.0) -> torch.Tensor:
    """(B, 8, 64, 64) log-Gaussian logits whose soft-argmax (T = 1) is ``points``."""
    return (-heatmaps.squared_distances(points.float(), 64, 64) / (2 * sigma**2)).requires_grad_()


def test_registry_knows_the_four_losses():
    assert set(losses.LOSSES) == {"bce", "pose", "reprojection", "landmark"}


def test_bce_of_zero_logits_is_log_two(batch):
    value, parts = losses.LOSSES["bce"](torch.zeros(2, 8, 64, 64), batch, LossContext(CAMERA, 800.0))
    assert value.item() == pytest.approx(math.log(2)) and parts["bce"] == pytest.approx(math.log(2))


def test_bce_positive_weight_and_invisible_masking(batch):
    # logits 0 everywhere: per pixel ln 2 * (pos_weight on the disk pixels, 1 elsewhere).
    context = LossContext(CAMERA, 800.0, LossSettings(radius=1.0, pos_weight=5.0))
    masked = dict(batch, visible=batch["visible"].clone())
    masked["visible"][:, 1:] = False
    value, _ = losses.LOSSES["bce"](torch.zeros(2, 8, 64, 64), masked, context)
    disk = heatmaps.disk_targets(batch["landmarks_2d"], batch["visible"], 64, 64, 1.0)[:, 0]
    expected = math.log(2) * (1 + 4 * disk.mean((-2, -1))).mean()
    assert value.item() == pytest.approx(expected.item(), rel=1e-6)


def test_landmark_loss_is_the_mean_distance(batch):
    shifted = batch["landmarks_2d"] + torch.tensor([3.0, 4.0], dtype=torch.float64)
    value, parts = losses.LOSSES["landmark"](peaked_logits(shifted), batch, LossContext(CAMERA, 800.0))
    assert value.item() == pytest.approx(5.0, abs=1e-3) and parts["landmark_px"] == pytest.approx(5.0, abs=1e-3)


@pytest.mark.parametrize("name", ["pose", "reprojection"])
def test_registration_losses_vanish_at_the_truth(batch, name):
    value, _ = losses.LOSSES[name](peaked_logits(batch["landmarks_2d"]), batch, LossContext(CAMERA, 800.0))
    assert abs(value.item()) < 1e-3


def test_pose_loss_weights_rotation_degrees_and_translation_mm(batch):
    moved = batch["landmarks_2d"] + torch.tensor([2.0, -1.0], dtype=torch.float64)
    logits = peaked_logits(moved)
    context = LossContext(CAMERA, 800.0, LossSettings(rotation_weight=2.0, translation_weight=0.5))
    value, parts = losses.LOSSES["pose"](logits, batch, context)
    assert parts["pose_rotation_deg"] > 0.1 and parts["pose_translation_mm"] > 1.0
    assert value.item() == pytest.approx(
        2.0 * parts["pose_rotation_deg"] + 0.5 * parts["pose_translation_mm"], rel=1e-5
    )


def test_reprojection_is_the_rms_pixel_error(batch):
    moved = batch["landmarks_2d"].clone()
    moved[:, 0] += torch.tensor([6.0, 0.0], dtype=torch.float64)  # one landmark off by 6 px
    logits = peaked_logits(moved)
    value, _ = losses.LOSSES["reprojection"](logits, batch, LossContext(CAMERA, 800.0))
    solved = registration.solve(batch["landmarks_3d"], heatmaps.soft_argmax(logits.detach(), 1.0).double(), CAMERA).pose
    error = geometry.project(batch["landmarks_3d"], solved, CAMERA) - batch["landmarks_2d"]
    expected = error.pow(2).sum(-1).mean(-1).sqrt().mean()
    assert value.item() == pytest.approx(expected.item(), rel=1e-5)
    assert 0.1 < value.item() < 6.0  # the fit spreads the 6 px over all landmarks


@pytest.mark.parametrize("solver", ["implicit", "unrolled"])
@pytest.mark.parametrize("name", ["pose", "reprojection"])
def test_registration_losses_reach_the_model_parameters(batch, name, solver):
    torch.manual_seed(0)
    model = make_unet(UNetSettings(encoder_depth=3))
    logits = model(torch.randn(2, 1, 64, 64))
    context = LossContext(CAMERA, 800.0, LossSettings(temperature=1.0, solver=solver, unrolled_iterations=10))
    value, _ = losses.LOSSES[name](logits, batch, context)
    value.backward()
    gradients = [p.grad for p in model.parameters() if p.grad is not None]
    assert gradients and all(torch.isfinite(g).all() for g in gradients)
    assert sum(g.abs().sum() for g in gradients) > 0


# The bounds of the poses of the ``batch`` fixture's kind: ZXY Euler within 15 degrees, +-20/40/20 mm.
BOUNDS = pose_bounds(PoseRanges((15.0, 15.0, 15.0), (20.0, 40.0, 20.0), 800.0))
# Adam at 0.1 (the paper preset's rate) converges in 100 steps; L-BFGS needs far fewer.
UNROLLED = {
    "adam": LossSettings(solver="unrolled", unrolled_optimizer="adam", unrolled_learning_rate=0.1),
    "lbfgs": LossSettings(solver="unrolled", unrolled_optimizer="lbfgs", unrolled_iterations=30),
}


@pytest.mark.parametrize("optimizer", ["adam", "lbfgs"])
def test_the_pose_loss_through_the_unrolled_solver(batch, optimizer):
    context = LossContext(CAMERA, 800.0, UNROLLED[optimizer], BOUNDS)
    perfect = peaked_logits(batch["landmarks_2d"])
    value, parts = losses.LOSSES["pose"](perfect, batch, context)
    # near 0 at the truth (the poses start 6-8 degrees and ~10 mm from the AP view)
    assert parts["pose_failures"] == 0 and value.item() < (0.3 if optimizer == "adam" else 0.01)
    moved = peaked_logits(batch["landmarks_2d"] + torch.tensor([2.0, -1.0], dtype=torch.float64))
    value, parts = losses.LOSSES["pose"](moved, batch, context)
    assert torch.isfinite(value) and parts["pose_rotation_deg"] > 0.1
    value.backward()
    assert torch.isfinite(moved.grad).all() and moved.grad.abs().sum() > 0


@pytest.mark.parametrize("optimizer", ["adam", "lbfgs"])
def test_the_unrolled_solution_never_leaves_its_bounds(batch, optimizer):
    # a box around the AP view that the true poses (up to 6 degrees, 10 mm off it) lie outside
    low, high = pose_bounds(PoseRanges((1.0, 1.0, 1.0), (2.0, 2.0, 2.0), 800.0))
    settings, perfect = UNROLLED[optimizer], peaked_logits(batch["landmarks_2d"]).detach()
    solved = losses.register_predicted(perfect, batch, LossContext(CAMERA, 800.0, settings, (low, high))).pose
    low, high = torch.tensor(low, dtype=solved.dtype), torch.tensor(high, dtype=solved.dtype)
    assert ((solved >= low - 1e-9) & (solved <= high + 1e-9)).all()
    assert ((solved - low).abs() < 1e-6).any() or ((solved - high).abs() < 1e-6).any()  # pressed against a face
    unbounded = LossContext(CAMERA, 800.0, replace(settings, unrolled_bounds=False), (tuple(low), tuple(high)))
    free = losses.register_predicted(perfect, batch, unbounded).pose
    assert ((free < low - 1e-3) | (free > high + 1e-3)).any()  # unrolled_bounds off: the box is ignored


def test_the_soft_argmax_input_reaches_the_losses_and_the_decoding(batch):
    settings = LossSettings(temperature=1.0, soft_argmax_input="probabilities")
    assert settings.decoding() == heatmaps.Decoding(1.0, "probabilities")
    logits = peaked_logits(batch["landmarks_2d"])
    at_logits, _ = losses.LOSSES["landmark"](logits, batch, LossContext(CAMERA, 800.0))
    at_probabilities, _ = losses.LOSSES["landmark"](logits, batch, LossContext(CAMERA, 800.0, settings))
    # sigmoid(logits) / 1 is an almost flat softmax: the points fall towards the image centre
    assert at_logits.item() < 0.01 and at_probabilities.item() > 5.0


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"unrolled_optimizer": "sgd"}, "unrolled_optimizer"),
        ({"unrolled_learning_rate": 0.0}, "unrolled_learning_rate"),
        ({"soft_argmax_input": "heatmap"}, "soft_argmax_input"),
    ],
)
def test_bad_unrolled_and_decoding_settings(changes, message):
    with pytest.raises(ValueError, match=message):
        LossSettings(**changes)


def test_bad_bounds():
    with pytest.raises(ValueError, match=r"LossContext\.bounds"):
        LossContext(CAMERA, 800.0, bounds=((0.0,) * 6, (-1.0,) * 6))


LOSS_CASES = {
    "bce-disk": ("bce", LossSettings()),
    "bce-gaussian": ("bce", LossSettings(target="gaussian")),
    "landmark": ("landmark", LossSettings()),
    "pose": ("pose", LossSettings()),
    "pose-unrolled": ("pose", UNROLLED["lbfgs"]),
    "reprojection": ("reprojection", LossSettings()),
}


@pytest.mark.parametrize("name, settings", LOSS_CASES.values(), ids=LOSS_CASES.keys())
def test_a_landmark_the_subject_lacks_is_masked_out_of_every_loss(batch, name, settings):
    """An absent landmark (NaN in 2D and 3D, never visible) counts as an invisible one: the same value and
    gradients as that landmark masked with finite coordinates, never a NaN."""
    masked = dict(batch, visible=batch["visible"].clone())
    masked["visible"][:, 2] = False
    absent = dict(masked, landmarks_2d=masked["landmarks_2d"].clone(), landmarks_3d=masked["landmarks_3d"].clone())
    absent["landmarks_2d"][:, 2] = torch.nan
    absent["landmarks_3d"][:, 2] = torch.nan
    context = LossContext(CAMERA, 800.0, settings, BOUNDS)
    moved = batch["landmarks_2d"] + torch.tensor([1.5, -1.0], dtype=torch.float64)
    results = []
    for rows in (masked, absent):
        logits = peaked_logits(moved)
        value, _ = losses.LOSSES[name](logits, rows, context)
        value.backward()
        results.append((value.detach(), logits.grad))
    (value, gradient), (value_absent, gradient_absent) = results
    assert torch.isfinite(value_absent) and torch.isfinite(gradient_absent).all()
    assert value_absent.item() == pytest.approx(value.item(), rel=1e-9, abs=1e-12)
    assert torch.allclose(gradient_absent, gradient, rtol=1e-6, atol=1e-9)
    assert gradient_absent[:, 2].abs().sum() == 0  # nothing pulls on an absent landmark's heatmap


@pytest.mark.parametrize("minimum, failures", [(7, 0), (8, 2)])
@pytest.mark.parametrize("name", ["pose", "reprojection"])
def test_a_registration_with_fewer_visible_landmarks_than_the_minimum_is_a_pose_failure(batch, name, minimum, failures):
    seven = dict(batch, visible=batch["visible"].clone())
    seven["visible"][:, 5] = False
    context = LossContext(CAMERA, 800.0, min_landmarks=minimum)
    logits = peaked_logits(batch["landmarks_2d"] + torch.tensor([1.0, 0.0], dtype=torch.float64))
    value, parts = losses.LOSSES[name](logits, seven, context)
    solved = losses.register_predicted(logits.detach(), seven, context).pose
    assert int((~torch.isfinite(solved).all(-1)).sum()) == failures
    assert parts.get("pose_failures", failures) == failures
    assert torch.isfinite(value) and (value.item() == 0.0) == (failures == 2)  # nothing solved: no pose loss


def test_a_minimum_below_four_landmarks_is_refused():
    with pytest.raises(ValueError, match="min_landmarks must be an integer >= 4, got 3"):
        LossContext(CAMERA, 800.0, min_landmarks=3)


def test_weighted_sum_of_named_losses(batch):
    logits = peaked_logits(batch["landmarks_2d"] + torch.tensor([3.0, 4.0], dtype=torch.float64))
    context = LossContext(CAMERA, 800.0)
    total, parts = WeightedLoss({"bce": 1.0, "landmark": 0.1})(logits, batch, context)
    assert total.item() == pytest.approx(parts["bce"] + 0.1 * parts["landmark_px"], rel=1e-6)
    assert parts["loss"] == pytest.approx(total.item())


@pytest.mark.parametrize("weights, message", [({"dice": 1.0}, r"unknown loss\(es\) \['dice'\]"), ({}, "at least one")])
def test_bad_loss_names(weights, message):
    with pytest.raises(ValueError, match=message):
        WeightedLoss(weights)
