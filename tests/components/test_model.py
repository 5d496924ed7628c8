import pytest
import torch

from components.anatomy import DEEPFLUORO, PAPER, LandmarkSet
from components.heatmaps import Decoding
from components.model import UNetSettings, make_unet

SETS = [PAPER, DEEPFLUORO, LandmarkSet("mine", ("SPS", "IPS", "L_FH", "R_FH", "L_ASIS"))]


@pytest.mark.parametrize("landmarks", SETS, ids=lambda landmarks: landmarks.name)
@pytest.mark.parametrize("depth", [3, 4])
def test_one_channel_in_one_out_per_landmark(depth, landmarks):
    model = make_unet(UNetSettings(encoder_depth=depth), landmarks)
    assert model(torch.randn(2, 1, 64, 64)).shape == (2, len(landmarks), 64, 64)


def test_local_encoder_weights_round_trip(tmp_path):
    torch.manual_seed(0)
    source = make_unet()
    path = tmp_path / "encoder.pt"
    torch.save(source.encoder.state_dict(), path)
    torch.manual_seed(1)
    loaded = make_unet(UNetSettings(encoder_weights=path))
    for (name, a), b in zip(source.encoder.state_dict().items(), loaded.encoder.state_dict().values()):
        assert torch.equal(a, b), name


def test_rgb_first_convolution_is_summed_to_grey(tmp_path):
    state = make_unet().encoder.state_dict()
    state["conv1.weight"] = torch.ones(64, 3, 7, 7)
    torch.save(state, tmp_path / "rgb.pt")
    model = make_unet(UNetSettings(encoder_weights=tmp_path / "rgb.pt"))
    assert torch.equal(model.encoder.conv1.weight, torch.full((64, 1, 7, 7), 3.0))


@pytest.mark.parametrize(
    "arguments, message",
    [
        (dict(encoder_depth=6), "encoder_depth must be 3, 4 or 5"),
        (dict(decoder_channels=(32, 16)), "decoder_channels needs 4 widths"),
        (dict(encoder="resnet999"), "unknown encoder 'resnet999'"),
        (dict(encoder_weights="/nonexistent/encoder.pt"), "encoder weights file not found"),
    ],
)
def test_bad_settings(arguments, message):
    with pytest.raises(ValueError, match=message):
        make_unet(UNetSettings(**arguments))


def test_foreign_weights_file(tmp_path):
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="not a torch state dict"):
        make_unet(UNetSettings(encoder_weights=tmp_path / "junk.pt"))
    torch.save({"fc.bias": torch.zeros(3)}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="does not fit encoder"):
        make_unet(UNetSettings(encoder_weights=tmp_path / "other.pt"))


@pytest.mark.parametrize("depth", [3, 4, 5])
def test_every_parameter_is_used(depth):
    """DistributedDataParallel refuses unused parameters: stages past the depth are dropped."""
    model = make_unet(UNetSettings(encoder_depth=depth))
    model(torch.randn(2, 1, 64, 64)).sum().backward()
    unused = [name for name, p in model.named_parameters() if p.grad is None]
    assert unused == []


def test_full_encoder_weights_load_into_a_shallow_encoder(tmp_path):
    full = make_unet(UNetSettings(encoder_depth=5))
    torch.save(full.encoder.state_dict(), tmp_path / "resnet18.pt")
    shallow = make_unet(UNetSettings(encoder_depth=3, encoder_weights=tmp_path / "resnet18.pt"))
    assert torch.equal(shallow.encoder.layer2[0].conv1.weight, full.encoder.layer2[0].conv1.weight)
    assert not hasattr(shallow.encoder.layer3, "weight") and isinstance(shallow.encoder.layer3, torch.nn.Identity)


@pytest.mark.parametrize("landmarks", SETS, ids=lambda landmarks: landmarks.name)
def test_checkpoint_round_trip_gives_the_same_predictions_decoding_and_landmarks(tmp_path, landmarks):
    from components.model import load_checkpoint, load_trained_model, save_checkpoint

    torch.manual_seed(0)
    settings = UNetSettings(encoder="resnet18", encoder_depth=3, decoder_channels=(32, 16, 8))
    model = make_unet(settings, landmarks).eval()
    decoding = Decoding(temperature=0.35, input="probabilities")
    save_checkpoint(tmp_path, model, settings, decoding, landmarks, epoch=4)
    image = torch.rand(2, 1, 32, 32)
    trained = load_trained_model(tmp_path)
    assert torch.equal(trained.network(image), model(image))
    assert trained.settings == settings and trained.decoding == Decoding(0.35, "probabilities")
    assert (trained.landmarks.name, trained.landmarks.names) == (landmarks.name, landmarks.names)
    assert load_checkpoint(tmp_path / "checkpoint.pt")["epoch"] == 4
    assert load_checkpoint(tmp_path)["decoding"] == {"temperature": 0.35, "input": "probabilities"}


def test_a_checkpoint_written_before_the_soft_argmax_input_and_the_landmarks_were_stored(tmp_path):
    from components.model import load_trained_model, save_checkpoint

    settings = UNetSettings(encoder="resnet18", encoder_depth=3, decoder_channels=(32, 16, 8))
    save_checkpoint(tmp_path, make_unet(settings), settings, Decoding(0.5), PAPER)
    state = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    state.pop("landmarks")
    torch.save(state | {"decoding": {"temperature": 0.5}}, tmp_path / "checkpoint.pt")  # the old format
    trained = load_trained_model(tmp_path)
    assert trained.decoding == Decoding(0.5, "logits")  # decodes logits
    assert trained.landmarks is PAPER  # detects the paper's 8


def test_bad_checkpoints(tmp_path):
    from components.model import load_checkpoint

    with pytest.raises(ValueError, match="no checkpoint here"):
        load_checkpoint(tmp_path)
    (tmp_path / "checkpoint.pt").write_bytes(b"not torch")
    with pytest.raises(ValueError, match="not a readable checkpoint"):
        load_checkpoint(tmp_path)
    torch.save({"weights": 1}, tmp_path / "checkpoint.pt")
    with pytest.raises(ValueError, match="not a study checkpoint"):
        load_checkpoint(tmp_path)
    torch.save({"model": {}, "settings": {}}, tmp_path / "checkpoint.pt")  # no decoding settings
    with pytest.raises(ValueError, match=r"not a study checkpoint .*'decoding'"):
        load_checkpoint(tmp_path)
