import math

import pytest

from components.anatomy import DEEPFLUORO, PAPER
from components.manifest import claim_folder, differing_keys
from components.poses import PoseRanges
from study.config import PRESETS_DIR, ConfigError, StudyConfig, load_config
from study.tracking.params import run_params


def test_presets_load_and_resolve_the_render_camera():
    demo = load_config("demo")
    assert demo.name == "demo" and demo.data.image_size == 64
    camera = demo.data.render_camera()
    assert camera.height == camera.width == 64
    assert camera.delx * 64 == pytest.approx(1436 * 0.3)
    paper = load_config("paper")
    assert paper.data.cohort.subjects.train == 80 and paper.data.views.train == 80 and paper.data.views.novel_view == 20


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
def test_presets_have_the_papers_four_strategies_and_two_controls(preset):
    config = load_config(preset)
    train = config.train
    six = ["baseline", "composite", "pose_only", "finetune", "finetune_bce", "finetune_landmark"]
    twins = ["randomized_baseline", "randomized_finetune"]  # the sim-to-real experiment: the same, randomized
    assert set(train.strategies) == set(six + twins) and config.reported_strategies() == six + twins
    for twin in twins:
        clean = train.strategies[twin.removeprefix("randomized_")]
        assert train.strategies[twin].randomize is not None and clean.randomize is None
        assert train.strategies[twin].phases == clean.phases
        assert train.strategies[twin].init == (clean.init and f"randomized_{clean.init}")
    assert config.data.test_splits() == ("novel_view", "novel_subject", "fluoro")
    assert len(config.report.seeds) >= 3
    assert [set(p.losses) for p in train.strategies["baseline"].phases] == [{"bce"}]
    assert [set(p.losses) for p in train.strategies["composite"].phases] == [{"bce", "pose"}]
    assert [set(p.losses) for p in train.strategies["pose_only"].phases] == [{"pose"}]
    finetune = train.strategies["finetune"]
    assert finetune.init == "baseline" and [set(p.losses) for p in finetune.phases] == [{"pose"}]
    for control, loss in (("finetune_bce", "bce"), ("finetune_landmark", "landmark")):
        strategy = train.strategies[control]
        assert strategy.init == "baseline" and [set(p.losses) for p in strategy.phases] == [{loss}]
        # the same start, length and learning rate as the fine-tune: only the loss differs
        assert [(p.epochs, p.learning_rate, p.optimizer) for p in strategy.phases] == [
            (p.epochs, p.learning_rate, p.optimizer) for p in finetune.phases
        ]
    assert train.checkpoint == "last"  # the paper evaluates (and fine-tunes) the end of training


def test_report_strategies_must_be_trained_strategies():
    with pytest.raises(ConfigError, match=r"report.strategies \['nope'\] are not in train.strategies"):
        load_config("demo", ["report.strategies=[baseline, nope]"])
    assert load_config("demo", ["report.strategies=[finetune, baseline]"]).reported_strategies() == [
        "finetune",
        "baseline",
    ]


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
        (["data.poses.level=hard"], r"poses.level 'hard' sets the ranges: drop rotation_deg, translation_mm"),
        (["data.poses={level: extreme, source_to_isocenter: 800}"], "data.poses.level"),
        (["data.poses={source_to_isocenter: 800}"], "poses needs a level or both rotation_deg and translation_mm"),
        (["data.fluoro={noise: {dose: [-10, 100]}}"], r"data.fluoro.noise: .*QuantumNoise.dose must be a range"),
        (["data.fluoro={shutters: {probability: 1.5}}"], r"data.fluoro.shutters: .*Shutters.probability must be in"),
        (["data.fluoro={bone: [1.5, 1.0]}"], r"data.fluoro: .*Fluoroscope.bone must be a range"),
        (["data.fluoro={doze: 3}"], r"data.fluoro.doze: Unexpected keyword argument"),
        (["data.cohort.novel_subject_shift=1.5"], "data.cohort.novel_subject_shift"),
        (["data.cohort.annotation_noise_mm=-1"], "data.cohort.annotation_noise_mm"),
        (["data.cohort.plausibility=loud"], r"data.cohort.plausibility: Input should be 'warn', 'error' or 'off'"),
        (["train.strategies.baseline.randomize={scatter: {spr: [1, 0]}}"], r"randomize.scatter: .*Scatter.spr"),
    ],
)
def test_bad_train_sections_name_the_field(overrides, message):
    with pytest.raises(ConfigError, match=message):
        load_config("demo", overrides)


@pytest.mark.parametrize("value", ["leave_one_subject_out", "{kind: leave_one_subject_out}"])
def test_cross_validation_is_a_kind_alone_or_a_mapping(value):
    config = load_config("demo", [f"report.cross_validation={value}"])
    assert config.report.cross_validation.kind == "leave_one_subject_out"
    assert config.model_dump(mode="json")["report"]["cross_validation"] == {"kind": "leave_one_subject_out"}
    assert load_config("demo").report.cross_validation is None  # off by default


LOSO = "report.cross_validation=leave_one_subject_out"


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["report.cross_validation=k_fold"], r"report.cross_validation.kind: Input should be 'leave_one_subject_out'"),
        (["report.cross_validation={kind: leave_one_subject_out, k: 5}"], "report.cross_validation.k: Extra inputs"),
        ([LOSO, "data.cohort.subjects.train=2"], r"needs at least 3 training subjects .*cohort.subjects.train is 2"),
        ([LOSO, "data.views.novel_view=0"], "tests each held-out subject on its novel views: data.views.novel_view"),
        (
            [LOSO, "train=null", "report.strategies=null"],
            "report.cross_validation 'leave_one_subject_out' needs a train section",
        ),
        ([LOSO, "train.fold={number: 1, held_out: [phantom-00000]}"], "sets the fold of each run; leave train.fold"),
        (["train.fold={number: 0, held_out: [phantom-00000]}"], "train.fold.number"),
        (["train.fold={number: 1, held_out: []}"], "train.fold.held_out"),
        (["train.fold={number: 1, held_out: [a]}", "data.cohort.subjects.val=0"], "the cohort has no val subjects"),
        (["train.fold={number: 1, held_out: [a], val: novel_view}", "data.views.novel_view=0"], "no novel views"),
    ],
)
def test_bad_cross_validations_and_folds_name_the_field(overrides, message):
    with pytest.raises(ConfigError, match=message):
        load_config("demo", overrides)


def test_a_fold_is_in_the_run_name():
    config = load_config("demo", ["train.fold={number: 2, held_out: [phantom-00001]}"])
    assert config.run_name("baseline") == "demo-baseline-fold2" and config.train.fold.val == "val"
    assert load_config("demo", ["train.seed=1"]).run_name("finetune") == "demo-finetune-seed1"


def test_a_pose_level_sets_the_ranges():
    config = load_config("demo", ["data.poses={level: hard, source_to_isocenter: 800}"])
    assert config.data.poses.ranges() == PoseRanges((45.0, 45.0, 15.0), (50.0, 50.0, 50.0), 800.0)


def test_the_data_part_leaves_out_training():
    config = load_config("demo")
    assert set(config.data_part()) == {"name", "seed", "data"}
    assert load_config("demo", ["train.batch_size=2"]).data_part() == config.data_part()


@pytest.mark.parametrize(
    "overrides, names, minimum",
    [
        ([], PAPER.names, 4),
        (["data.landmarks=deepfluoro"], DEEPFLUORO.names, 4),
        (["data.landmarks={name: deepfluoro, min_for_registration: 6}"], DEEPFLUORO.names, 6),
        (
            ["data.landmarks={name: hips, names: [L_FH, R_FH, L_ASIS, R_ASIS, SPS], pairs: [[L_FH, R_FH]]}"],
            ("L_FH", "R_FH", "L_ASIS", "R_ASIS", "SPS"),
            4,
        ),
    ],
)
def test_the_landmark_set_is_configuration(overrides, names, minimum):
    config = load_config("demo", overrides)
    landmarks = config.data.landmarks.landmark_set()
    assert landmarks.names == names and config.data.landmarks.min_for_registration == minimum
    assert config.train.loss_context(config.data).min_landmarks == minimum
    again = StudyConfig.model_validate_json(config.model_dump_json())  # as checkpoints and Ray workers read it
    assert again.data.landmarks.landmark_set() == landmarks


@pytest.mark.parametrize(
    "value, message",
    [
        ("pelvis12", r"data\.landmarks: .*unknown landmark set 'pelvis12'; registered: paper, deepfluoro"),
        ("{name: paper, pairs: [[L_ASIS, R_ASIS]]}", "pairs belong to a set of one's own"),
        ("{name: paper, names: [SPS, IPS, L_ASIS, R_ASIS]}", "'paper' is a registered landmark set; give your own"),
        ("{name: mine, names: [SPS, SPS, L_ASIS, R_ASIS]}", r"landmark set 'mine': names repeat \['SPS'\]"),
        ("{name: mine, names: [SPS, IPS, L_FH, R_FH], pairs: [[L_FH, L_ASIS]]}", r"pairs name \['L_ASIS'\]"),
        ("{name: deepfluoro, min_for_registration: 15}", "min_for_registration 15 is more than the set's 14"),
        (
            "{name: paper, min_for_registration: 3}",
            r"data\.landmarks\.min_for_registration: .*greater than or equal to 4",
        ),
        ("{name: mine, names: [SPS, IPS, L_FH, L_PSIS]}", "the phantom cannot place L_PSIS"),
        ("{name: paper, colour: red}", r"data\.landmarks\.colour: Extra inputs are not permitted"),
    ],
)
def test_a_bad_landmark_set_names_the_field(value, message):
    with pytest.raises(ConfigError, match=message) as error:
        load_config("demo", [f"data.landmarks={value}"])
    assert "data" in str(error.value) and "\n" not in str(error.value)


def test_a_folder_cohort_may_name_landmarks_the_phantom_cannot_place(tmp_path):
    own = "{name: mine, names: [SPS, IPS, L_FH, L_PSIS]}"
    cohort = f"data.cohort={{kind: folder, path: {tmp_path}, subjects: {{train: 1, val: 0, novel_subject: 0}}}}"
    config = load_config("demo", [cohort, f"data.landmarks={own}"])
    assert config.data.landmarks.landmark_set().names == ("SPS", "IPS", "L_FH", "L_PSIS")


def test_a_deepfluoro_cohort_tests_on_the_real_split_too():
    subjects = "{train: 4, val: 1, novel_subject: 1}"
    cohort = f"data.cohort={{kind: deepfluoro, path: /data/ipcai_2020_full_res_data.h5, subjects: {subjects}}}"
    config = load_config("demo", [cohort, "data.landmarks=deepfluoro"])
    assert config.data.cohort.crop == 50 and config.data.test_splits() == (
        "novel_view",
        "novel_subject",
        "fluoro",
        "real",
    )
    assert "real" not in load_config("demo").data.test_splits()


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["data.cohort={kind: deepfluoro, subjects: {train: 4, val: 1, novel_subject: 1}}"], "cohort.path is required"),
        (
            ["data.cohort={kind: deepfluoro, path: f.h5, subjects: {train: 4, val: 1, novel_subject: 1}}"],
            "the DeepFluoro release has no SPS, IPS",
        ),
        (
            ["data.cohort={kind: deepfluoro, path: f.h5, crop: -1, subjects: {train: 1, val: 0, novel_subject: 0}}"],
            r"data\.cohort\.crop",
        ),
    ],
)
def test_bad_deepfluoro_cohorts_name_the_field(overrides, message):
    with pytest.raises(ConfigError, match=message):
        load_config("demo", overrides)


def test_the_data_part_holds_the_landmark_set_but_not_the_registrations_minimum():
    config = load_config("demo", ["data.landmarks=deepfluoro"])
    assert config.data_part()["data"]["landmarks"] == {"name": "deepfluoro", "names": None, "pairs": []}
    stricter = load_config("demo", ["data.landmarks={name: deepfluoro, min_for_registration: 8}"])
    assert stricter.data_part() == config.data_part()  # the same rows: it changes the measures only
    assert load_config("demo").data_part() != config.data_part()


def test_the_paper_preset_is_the_paper():
    config = load_config("paper")
    data, train = config.data, config.train
    subjects, views = data.cohort.subjects, data.views
    assert (subjects.train, subjects.novel_subject) == (80, 10)  # 80 training CTs, 10 novel-subject CTs (3.1)
    assert subjects.val == 5  # not in the paper: a val split of its own subjects
    # 100 images per CT: 80 train + 20 novel views (80 x 20 = 1600 novel-view images), 100 per novel subject (1000)
    assert (views.train, views.novel_view, views.novel_subject) == (80, 20, 100)
    assert subjects.train * views.novel_view == 1600 and subjects.novel_subject * views.novel_subject == 1000
    assert data.detector.sdd == 1020.0
    # one learning rate for every strategy and phase, the fine-tune's included
    rates = {phase.learning_rate for strategy in train.strategies.values() for phase in strategy.phases}
    assert rates == {1e-3}
    six = {"baseline", "composite", "pose_only", "finetune", "finetune_bce", "finetune_landmark"}
    assert set(train.strategies) == six | {"randomized_baseline", "randomized_finetune"}  # ours: sim-to-real twins
    epochs = {name: [p.epochs for p in strategy.phases] for name, strategy in train.strategies.items()}
    assert epochs["baseline"] == epochs["composite"] == epochs["pose_only"] == [28]
    for name in ("finetune", "finetune_bce", "finetune_landmark"):
        assert train.strategies[name].init == "baseline" and epochs[name] == [1]
    assert train.strategies["finetune_landmark"].phases[0].losses == {"landmark": 1.0}
    loss = train.loss
    assert loss.pos_weight is None  # plain BCEWithLogitsLoss
    assert (loss.solver, loss.unrolled_optimizer, loss.unrolled_iterations, loss.unrolled_bounds) == (
        "unrolled",
        "adam",
        100,
        True,
    )
    assert loss.soft_argmax_input == "probabilities" and loss.decoding().input == "probabilities"
    assert loss.temperature < 1 / math.log(data.image_size**2)  # probabilities: contrast <= 1 (heatmaps docstring)
    context = train.loss_context(data)
    low, high = context.bounds
    assert high[3:] == (20.0, 840.0, 20.0) and low[3:] == (-20.0, 760.0, -20.0)  # the sampling ranges, mm
    assert all(math.radians(15.0) < h < math.radians(20.0) for h in high[:3])
    assert load_config("paper", ["train.loss.unrolled_bounds=false"]).train.loss_context(data).bounds is None


def test_paper_tuned_keeps_the_platforms_choices():
    tuned, paper = load_config("paper_tuned"), load_config("paper")
    loss = tuned.train.loss
    assert (loss.solver, loss.pos_weight, loss.soft_argmax_input, loss.temperature) == ("implicit", 20.0, "logits", 1.0)
    assert (tuned.data.views.train, tuned.data.views.novel_view) == (100, 20)
    assert tuned.train.strategies["finetune"].phases[0].learning_rate == 1e-4
    assert set(tuned.train.strategies) == set(paper.train.strategies)
    assert tuned.data.cohort == paper.data.cohort and tuned.data.poses == paper.data.poses
    assert tuned.report == paper.report  # the same strategies over the same three seeds


def test_paper_tuned_extends_paper_and_resolves_as_when_it_spelled_everything_out():
    tuned, paper = load_config("paper_tuned").model_dump(mode="json"), load_config("paper").model_dump(mode="json")

    def tenth(loss: str) -> list[dict]:  # one epoch of ``loss`` at a tenth of the training rate
        phase = {"losses": {loss: 1.0}, "epochs": 1, "steps_per_epoch": None, "optimizer": "adam"}
        return [phase | {"learning_rate": 0.0001, "weight_decay": 0.0}]

    expected = {  # every value in which the spelled-out paper_tuned.yaml differed from paper
        "name": "paper_tuned",
        "data.views.train": 100,
        "train.loss.pos_weight": 20.0,
        "train.loss.solver": "implicit",
        "train.loss.soft_argmax_input": "logits",
        "train.loss.temperature": 1.0,
        "train.loss.unrolled_learning_rate": 0.02,
        "train.strategies.finetune.phases": tenth("pose"),
        "train.strategies.finetune_bce.phases": tenth("bce"),
        "train.strategies.finetune_landmark.phases": tenth("landmark"),
        "train.strategies.randomized_finetune.phases": tenth("pose"),
    }
    assert differing_keys(paper, tuned) == set(expected)
    for path, value in expected.items():
        node = tuned
        for key in path.split("."):
            node = node[key]
        assert node == value, path


def write_yaml(path, text: str):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return str(path)


def test_a_config_that_extends_a_preset_names_only_what_differs(tmp_path):
    mine = write_yaml(
        tmp_path / "mine.yaml",
        "extends: demo\nname: mine\ndata: {image_size: 32, poses: {rotation_deg: [5, 5, 5]}}\nreport: {seeds: [7]}\n",
    )
    config = load_config(mine)
    spelled_out = ["name=mine", "data.image_size=32", "data.poses.rotation_deg=[5, 5, 5]", "report.seeds=[7]"]
    assert config == load_config("demo", spelled_out)
    assert config.data.poses.translation_mm == (20.0, 40.0, 20.0)  # nested mappings merge: the rest is demo's
    assert config.report.seeds == [7]  # lists are replaced whole


def test_a_nested_key_replaces_that_key_and_lists_replace_whole(tmp_path):
    phases = "[{losses: {bce: 1.0}, epochs: 1, learning_rate: 0.01}]"
    mine = write_yaml(
        tmp_path / "mine.yaml", f"extends: demo\ntrain: {{strategies: {{baseline: {{phases: {phases}}}}}}}\n"
    )
    demo, config = load_config("demo"), load_config(mine)
    assert [(p.epochs, p.learning_rate) for p in config.train.strategies["baseline"].phases] == [(1, 0.01)]
    assert set(config.train.strategies) == set(demo.train.strategies)  # the other strategies stay
    assert config.train.strategies["finetune"] == demo.train.strategies["finetune"]


def test_chains_resolve_base_first_and_paths_are_relative_to_the_extending_file(tmp_path):
    write_yaml(tmp_path / "lab.yaml", "extends: demo\nname: lab\nseed: 5\ndata: {image_size: 48}\n")
    mine = write_yaml(tmp_path / "studies" / "mine.yaml", "extends: ../lab.yaml\nname: mine\ndata: {shard_size: 5}\n")
    config = load_config(mine)
    assert (config.name, config.seed, config.data.image_size, config.data.shard_size) == ("mine", 5, 48, 5)
    assert config.data.views == load_config("demo").data.views


def test_overrides_apply_after_the_merge(tmp_path):
    mine = write_yaml(tmp_path / "mine.yaml", "extends: demo\ndata: {image_size: 32}\n")
    assert load_config(mine, ["data.image_size=48"]).data.image_size == 48
    assert load_config(mine, ["data.poses.source_to_isocenter=700"]).data.poses.rotation_deg == (15.0, 15.0, 15.0)


@pytest.mark.parametrize(
    "files, message",
    [
        (
            {"a.yaml": "extends: a.yaml\n"},
            r"a\.yaml: extends 'a\.yaml' closes a cycle of config files: .*a\.yaml -> .*a\.yaml$",
        ),
        (
            {"a.yaml": "extends: b.yaml\n", "b.yaml": "extends: a.yaml\n"},
            r"b\.yaml: extends 'a\.yaml' closes a cycle of config files: .*a\.yaml -> .*b\.yaml -> .*a\.yaml$",
        ),
        (
            {"a.yaml": "extends: demp\n"},
            r"a\.yaml: extends 'demp', which is neither a preset \(demo, paper, paper_tuned\)",
        ),
        ({"a.yaml": "extends: nope.yaml\n"}, r"a\.yaml: extends 'nope\.yaml', but .*nope\.yaml is not a file"),
        ({"a.yaml": "extends: [demo]\n"}, r"a\.yaml: extends must name a preset or a \.yaml file, got \['demo'\]"),
        ({"a.yaml": "extends: demo\ndata: {colour: red}\n"}, r"a\.yaml: data\.colour: Extra inputs are not permitted"),
    ],
)
def test_bad_extends_name_the_files(tmp_path, files, message):
    for name, text in files.items():
        write_yaml(tmp_path / name, text)
    with pytest.raises(ConfigError, match=message):
        load_config(str(tmp_path / "a.yaml"))


def test_what_is_recorded_is_the_resolved_config(tmp_path):
    mine = write_yaml(tmp_path / "mine.yaml", "extends: demo\nname: mine\ndata: {image_size: 32}\n")
    config, spelled_out = load_config(mine), load_config("demo", ["name=mine", "data.image_size=32"])
    artifact = config.model_dump(mode="json")  # the config.yaml of every run
    assert "extends" not in artifact and artifact == spelled_out.model_dump(mode="json")
    assert run_params(config, "baseline", None) == run_params(spelled_out, "baseline", None)
    claimed = claim_folder(tmp_path / "data", config.data_part())  # a data set's manifest
    assert claimed["config"]["data"]["image_size"] == 32 and "extends" not in claimed["config"]
    assert claimed["config_hash"] == claim_folder(tmp_path / "data", spelled_out.data_part())["config_hash"]
