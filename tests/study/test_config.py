import pytest

from study.config import PRESETS_DIR, ConfigError, load_config


def test_presets_load_and_resolve_the_render_camera():
    demo = load_config("demo")
    assert demo.name == "demo" and demo.data.image_size == 96
    camera = demo.data.render_camera()
    assert camera.height == camera.width == 96
    assert camera.delx * 96 == pytest.approx(1436 * 0.3)
    paper = load_config("paper")
    assert (
        paper.data.cohort.subjects.train == 80 and paper.data.views.train == 100 and paper.data.views.novel_view == 20
    )


def test_a_batch_must_split_evenly_over_the_ddp_workers():
    with pytest.raises(ConfigError, match="batch_size 16 does not split evenly over 3 workers"):
        load_config("demo", ["train.workers=3"])
    assert load_config("demo").train.launcher == "auto"


def test_overrides_are_parsed_as_yaml():
    config = load_config("demo", ["data.image_size=64", "data.poses.rotation_deg=[5, 6, 7]", "seed=9"])
    assert config.data.image_size == 64 and config.data.poses.rotation_deg == (5.0, 6.0, 7.0) and config.seed == 9


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["data.image_size=3"], "data.image_size"),
        (["data.colour=red"], "data.colour: Extra inputs are not permitted"),
        (["data.cohort.kind=folder"], "cohort.path is required"),
        (["data.renderer.name=raymarch"], "data.renderer.name"),
    ],
)
def test_bad_values_name_the_file_and_field(overrides, message):
    with pytest.raises(ConfigError, match=message) as error:
        load_config("demo", overrides)
    assert str(error.value).startswith(str(PRESETS_DIR / "demo.yaml"))


def test_malformed_override():
    with pytest.raises(ConfigError, match=r"override 'data\.image_size': expected dotted\.path=value"):
        load_config("demo", ["data.image_size"])


def test_unknown_preset_lists_the_presets():
    with pytest.raises(ConfigError, match=r"neither a config file nor a preset .*demo, paper"):
        load_config("demp")


def test_missing_and_invalid_files(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(str(tmp_path / "none.yaml"))
    broken = tmp_path / "broken.yaml"
    broken.write_text("name: [unclosed\n")
    with pytest.raises(ConfigError, match=f"{broken}: not valid YAML"):
        load_config(str(broken))


@pytest.mark.parametrize("preset", ["demo", "paper"])
def test_presets_have_the_papers_four_strategies(preset):
    train = load_config(preset).train
    assert set(train.strategies) == {"baseline", "composite", "pose_only", "finetune"}
    assert [set(p.losses) for p in train.strategies["baseline"].phases] == [{"bce"}]
    assert [set(p.losses) for p in train.strategies["composite"].phases] == [{"bce", "pose"}]
    assert [set(p.losses) for p in train.strategies["pose_only"].phases] == [{"pose"}]
    assert train.strategies["finetune"].init == "baseline"
    assert [set(p.losses) for p in train.strategies["finetune"].phases] == [{"pose"}]


@pytest.mark.parametrize(
    "overrides, message",
    [
        (
            ["train.strategies.baseline.phases=[{losses: {mse: 1}, epochs: 1, learning_rate: 0.1}]"],
            r"unknown loss\(es\) \['mse'\]",
        ),
        (
            ["train.strategies.baseline.phases=[{losses: {bce: 0}, epochs: 1, learning_rate: 0.1}]"],
            "each with a weight > 0",
        ),
        (["train.strategies.baseline.phases=[]"], "train.strategies.baseline.phases"),
        (["train.strategies.baseline.init=finetune"], "init chain .* is a cycle"),
        (["train.augment={gamma: [2, 1]}"], "IntensityRanges.gamma"),
        (["train.divergence_factor=1"], "train.divergence_factor"),
        (["train.selection_metric=loss"], "train.selection_metric"),
    ],
)
def test_bad_train_sections_name_the_field(overrides, message):
    with pytest.raises(ConfigError, match=message):
        load_config("demo", overrides)


def test_the_data_part_leaves_out_training():
    config = load_config("demo")
    assert set(config.data_part()) == {"name", "seed", "data"}
    assert load_config("demo", ["train.batch_size=2"]).data_part() == config.data_part()
