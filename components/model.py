"""The landmark U-Net: segmentation-models-pytorch, 1 input channel, one output channel per landmark.

Encoder weights are random unless a local weights file is given; nothing is ever downloaded.
"""

import hashlib
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from components.anatomy import PAPER, LandmarkSet, landmark_record, landmark_set_of
from components.heatmaps import Decoding

DECODER_CHANNELS = (256, 128, 64, 32, 16)


@dataclass(frozen=True)
class UNetSettings:
    """The U-Net's architecture, and where its encoder weights come from (validated on construction).

    Attributes:
        encoder: any segmentation-models-pytorch encoder name (e.g. "resnet18", "resnet34").
        encoder_depth: 3 to 5 down-sampling stages (H and W must be divisible by 2**depth).
        decoder_channels: one width per stage (None: the last ``encoder_depth`` of 256..16).
        encoder_weights: a local file with the encoder's state dict (``torch.save``); a 3-channel
            first convolution in it is summed to 1 channel. None: random initialisation. Never downloaded.
    """

    encoder: str = "resnet18"
    encoder_depth: int = 4
    decoder_channels: tuple[int, ...] | None = None
    encoder_weights: str | None = None

    def __post_init__(self):
        if not 3 <= self.encoder_depth <= 5:
            raise ValueError(f"encoder_depth must be 3, 4 or 5, got {self.encoder_depth}")
        if self.decoder_channels is not None:
            object.__setattr__(self, "decoder_channels", tuple(self.decoder_channels))
            if len(self.decoder_channels) != self.encoder_depth:
                raise ValueError(
                    f"decoder_channels needs {self.encoder_depth} widths (one per stage), got {self.decoder_channels}"
                )
        if self.encoder_weights is not None:
            object.__setattr__(self, "encoder_weights", str(self.encoder_weights))

    def architecture(self) -> dict:
        """What defines the network's shape (a checkpoint stores this; its weights replace any encoder file)."""
        channels = list(self.decoder_channels) if self.decoder_channels is not None else None
        return {"encoder": self.encoder, "encoder_depth": self.encoder_depth, "decoder_channels": channels}


def make_unet(settings: UNetSettings = UNetSettings(), landmarks: LandmarkSet = PAPER) -> torch.nn.Module:
    """A U-Net mapping (B, 1, H, W) images to (B, N, H, W) heatmap logits, a channel per landmark of the set."""
    # imported here, not at the top: smp brings timm and torchvision (about 2.5 s of imports), which every
    # process that reads a config (a rendering actor, a command that never builds a model) would pay for
    import segmentation_models_pytorch as smp

    channels = settings.decoder_channels or DECODER_CHANNELS[-settings.encoder_depth :]
    try:
        model = smp.Unet(
            encoder_name=settings.encoder,
            encoder_depth=settings.encoder_depth,
            encoder_weights=None,
            decoder_channels=channels,
            in_channels=1,
            classes=len(landmarks),
        )
    except KeyError as error:
        raise ValueError(
            f"unknown encoder {settings.encoder!r} (segmentation-models-pytorch encoders, e.g. resnet18)"
        ) from error
    dropped = drop_unused_stages(model.encoder, settings.encoder_depth)
    if settings.encoder_weights is not None:
        load_encoder_weights(model, Path(settings.encoder_weights), skip=dropped)
    return model


def drop_unused_stages(encoder: torch.nn.Module, depth: int) -> list[str]:
    """Replace the encoder stages that a shallower ``depth`` never runs by ``Identity``.

    smp keeps, e.g., ResNet's ``layer4`` at depth 4 without using it; unused parameters would make
    DistributedDataParallel fail and checkpoints larger. Found by one backward pass on a dummy image.
    Returns the names of the dropped stages.
    """
    size = 2 ** (depth + 1)
    was_training = encoder.training
    encoder.eval()  # no batch-norm statistics from the dummy image
    encoder.zero_grad(set_to_none=True)
    sum(feature.sum() for feature in encoder(torch.zeros(1, 1, size, size))).backward()
    encoder.train(was_training)
    dropped = []
    for name, child in list(encoder.named_children()):
        parameters = list(child.parameters())
        if parameters and all(p.grad is None for p in parameters):
            setattr(encoder, name, torch.nn.Identity())
            dropped.append(name)
    encoder.zero_grad(set_to_none=True)
    return dropped


def read_torch_file(path: Path, what: str):
    """``torch.load`` of tensors only, on the CPU; a foreign file raises ``ValueError`` naming it."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        raise ValueError(f"{path}: not {what} ({error.__class__.__name__}: {error})") from error


def load_encoder_weights(model: torch.nn.Module, path: Path, skip: list[str] = ()) -> None:
    """Load a local encoder state dict into ``model.encoder``; clear errors for a bad file.

    Keys of the stages named in ``skip`` (those a shallow encoder dropped) are ignored.
    """
    if not path.is_file():
        raise ValueError(f"{path}: encoder weights file not found")
    state = read_torch_file(path, "a torch state dict")
    if not isinstance(state, dict):
        raise ValueError(f"{path}: expected a state dict of the encoder, got {type(state).__name__}")
    state = {key: value for key, value in state.items() if key.split(".")[0] not in skip}
    own = model.encoder.state_dict()
    for key, value in state.items():
        if key in own and value.dim() == 4 and value.shape[1] == 3 and own[key].shape[1] == 1:
            state[key] = value.sum(1, keepdim=True)  # an RGB first convolution for grey images
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    wrong_shape = sorted(k for k in set(own) & set(state) if own[k].shape != state[k].shape)
    if missing or unexpected or wrong_shape:
        raise ValueError(
            f"{path}: does not fit encoder {type(model.encoder).__name__}: {len(missing)} missing keys "
            f"(e.g. {missing[:2]}), {len(unexpected)} unexpected (e.g. {unexpected[:2]}), "
            f"{len(wrong_shape)} of another shape (e.g. {wrong_shape[:2]})"
        )
    model.encoder.load_state_dict(state)


CHECKPOINT_FILE = "checkpoint.pt"


@dataclass
class TrainedModel:
    """A checkpoint's U-Net (in eval mode), with its architecture, the decoding it was trained with and the
    landmark set of its channels."""

    network: torch.nn.Module
    settings: UNetSettings
    decoding: Decoding
    landmarks: LandmarkSet


def save_checkpoint(
    folder: str | Path,
    model: torch.nn.Module,
    settings: UNetSettings,
    decoding: Decoding,
    landmarks: LandmarkSet,
    **state,
) -> Path:
    """Write ``folder/checkpoint.pt``: the weights, the architecture, the decoding (temperature and
    soft-argmax input), the landmark set of the model's channels and any training state.

    Written to a temporary name and renamed, so a checkpoint is never half-written.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / CHECKPOINT_FILE
    temporary = folder / f".{CHECKPOINT_FILE}.tmp"
    content = {
        "model": model.state_dict(),
        "settings": settings.architecture(),
        "decoding": asdict(decoding),
        "landmarks": landmark_record(landmarks),
    }
    torch.save(content | state, temporary)
    temporary.replace(path)
    return path


def load_checkpoint(path: str | Path) -> dict:
    """The contents of a checkpoint folder (or its ``checkpoint.pt``), on the CPU; clear errors."""
    path = Path(path)
    file = path / CHECKPOINT_FILE if path.is_dir() else path
    if not file.is_file():
        raise ValueError(f"{path}: no checkpoint here (expected a folder with {CHECKPOINT_FILE}, or the file)")
    state = read_torch_file(file, "a readable checkpoint")
    if not isinstance(state, dict) or not {"model", "settings", "decoding"} <= set(state):
        raise ValueError(f"{file}: not a study checkpoint (expected the keys 'model', 'settings' and 'decoding')")
    return state


def load_trained_model(path: str | Path) -> TrainedModel:
    """The U-Net of a checkpoint, with its weights, in eval mode, the decoding it was trained with and its
    landmark set."""
    return trained_model(load_checkpoint(path))


def trained_model(state: dict) -> TrainedModel:
    """``load_trained_model`` of a checkpoint's contents already read (``load_checkpoint``)."""
    settings = UNetSettings(**state["settings"])
    landmarks = checkpoint_landmarks(state)
    network = make_unet(settings, landmarks)
    network.load_state_dict(state["model"])
    return TrainedModel(network.eval(), settings, read_decoding(state["decoding"]), landmarks)


def checkpoint_landmarks(state: dict) -> LandmarkSet:
    """The landmark set of a checkpoint's channels; one written before sets were stored has the paper's 8."""
    return landmark_set_of(state["landmarks"]) if "landmarks" in state else PAPER


def read_decoding(stored: dict) -> Decoding:
    """A checkpoint's decoding; one written before the soft-argmax input was stored decoded logits."""
    return Decoding(**({"input": "logits"} | stored))


def weights_fingerprint(state_dict: dict[str, torch.Tensor]) -> str:
    """sha256 over a state dict's names and tensor bytes: equal weights have equal fingerprints."""
    digest = hashlib.sha256()
    for name in sorted(state_dict):
        tensor = state_dict[name].detach().cpu().contiguous()
        digest.update(name.encode())
        digest.update(tensor.view(-1).view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
    return digest.hexdigest()
