import re

import pytest

from detection.config import ConfigError, config_from_dict, load_config


def test_defaults_follow_the_paper():
    cfg = load_config()
    assert cfg.model.rpn.fg_iou_thresh == 0.7 and cfg.model.rpn.bg_iou_thresh == 0.3
    assert cfg.model.rpn.post_nms_top_n_test == 300 and cfg.model.rpn.pre_nms_top_n_test == 6000
    assert cfg.model.roi_heads.batch_size_per_image == 128 and cfg.model.roi_heads.positive_fraction == 0.25
    assert cfg.model.roi_heads.bbox_reg_weights == [10.0, 10.0, 5.0, 5.0]
    assert cfg.input.test_min_size == 600 and cfg.input.test_max_size == 1000


def test_yaml_and_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("num_classes: 20\nmodel:\n  backbone:\n    depth: 101\nsolver:\n  steps: [10, 20]\n")
    cfg = load_config(path, ["solver.base_lr=0.01", "model.roi_heads.pooler=roialign", "input.train_min_sizes=512"])
    assert cfg.num_classes == 20 and cfg.model.backbone.depth == 101 and cfg.solver.steps == [10, 20]
    assert cfg.solver.base_lr == 0.01 and cfg.model.roi_heads.pooler == "roialign"
    assert cfg.input.train_min_sizes == [512]
    assert config_from_dict(cfg.to_dict()) == cfg


def test_unknown_key_lists_valid_keys(tmp_path):
    with pytest.raises(ConfigError, match=r"unknown config key 'model.rpn.nms'.*model.rpn.nms_thresh"):
        load_config(None, ["model.rpn.nms=0.5"])
    path = tmp_path / "bad.yaml"
    path.write_text("solvr:\n  base_lr: 0.1\n")
    with pytest.raises(ConfigError, match=r"bad.yaml: unknown config key 'solvr'.*solver"):
        load_config(path)


def test_wrong_type_names_key_and_type():
    with pytest.raises(ConfigError, match=r"'solver.max_iter' expects int, got 'many'"):
        load_config(None, ["solver.max_iter=many"])
    with pytest.raises(ConfigError, match="model.roi_heads.box_voting"):
        load_config(None, ["model.roi_heads.box_voting=3"])
    with pytest.raises(ConfigError, match="key.sub=value"):
        load_config(None, ["solver.max_iter"])


def test_missing_or_invalid_file(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "broken.yaml"
    bad.write_text("a: [1, 2\n")
    with pytest.raises(ConfigError, match="broken.yaml: invalid YAML"):
        load_config(bad)


def test_exponent_floats_without_a_dot_are_floats(tmp_path):
    # YAML 1.1 (PyYAML) reads 1e-4 and 1e30 as strings; float fields take them as numbers.
    path = tmp_path / "c.yaml"
    path.write_text("solver:\n  weight_decay: 1e-4\n")
    cfg = load_config(path, ["solver.base_lr=1e30", "solver.momentum=.9"])
    assert cfg.solver.weight_decay == 1e-4 and cfg.solver.base_lr == 1e30 and cfg.solver.momentum == 0.9
    with pytest.raises(ConfigError, match=r"'solver.base_lr' expects float, got 'fast'"):
        load_config(None, ["solver.base_lr=fast"])


@pytest.mark.parametrize(("override", "expected"), [
    ("solver.base_lr=-0.02", "solver.base_lr=-0.02 must be a positive finite number"),
    ("solver.base_lr=.nan", "solver.base_lr=nan must be a positive finite number"),
    ("solver.momentum=-0.9", "solver.momentum=-0.9 must be in [0, 1)"),
    ("solver.ims_per_batch=0", "solver.ims_per_batch=0 must be at least 1"),
    ("solver.max_iter=0", "solver.max_iter=0 must be at least 1"),
    ("solver.max_iter=-5", "solver.max_iter=-5 must be at least 1"),
    ("input.train_min_sizes=[]", "input.train_min_sizes=[] must be a non-empty list of positive sizes"),
    ("data.num_workers=-1", "data.num_workers=-1 must be non-negative"),
    ("num_classes=-1", "num_classes=-1 must be non-negative"),
    ("input.pixel_std=[0.2,0,0.2]", "input.pixel_std=[0.2, 0.0, 0.2] must be 3 positive numbers"),
    ("model.roi_heads.pooler=roiwarp", "model.roi_heads.pooler='roiwarp' must be 'roipool' or 'roialign'"),
    ("test.pyramid_levels_per_roi=3", "test.pyramid_levels_per_roi=3 must be 1 (the nearest level) or 2"),
])  # fmt: skip
def test_out_of_range_values_are_refused_when_loading(override, expected):
    with pytest.raises(ConfigError, match=r"^invalid config: .*" + re.escape(expected)):
        load_config(overrides=[override])


def test_all_out_of_range_values_are_named_in_one_error(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("solver: {base_lr: -1, max_iter: 0}\ndata: {num_workers: -2}\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(info.value) == ("invalid config: solver.base_lr=-1.0 must be a positive finite number; "
                               "solver.max_iter=0 must be at least 1 (0 would write an untrained model_final.pth); "
                               "data.num_workers=-2 must be non-negative (0 loads in the main process)")


def test_own_data_training_keys_and_their_ranges():
    cfg = load_config(overrides=["data.keep_empty=true", "data.sampler=repeat_factor", "data.repeat_threshold=0.01"])
    assert (cfg.data.keep_empty, cfg.data.sampler, cfg.data.repeat_threshold) == (True, "repeat_factor", 0.01)
    default = load_config().data
    assert (default.keep_empty, default.sampler) == (False, "grouped")  # the default: as before
    with pytest.raises(ConfigError, match=re.escape("data.sampler='uniform' must be 'grouped' or 'repeat_factor'")):
        load_config(overrides=["data.sampler=uniform"])
    with pytest.raises(ConfigError, match=re.escape("data.repeat_threshold=0.0 must be in (0, 1]")):
        load_config(overrides=["data.repeat_threshold=0"])


@pytest.mark.parametrize(("override", "expected"), [
    ("input.pixel_mean=[.nan,0,0]", "input.pixel_mean=[nan, 0.0, 0.0] must be 3 finite numbers"),
    ("model.roi_heads.score_thresh=.nan", "model.roi_heads.score_thresh=nan must be in [0, 1)"),
    ("model.rpn.post_nms_top_n_test=0", "model.rpn.post_nms_top_n_test=0 must be at least 1"),
    ("model.rpn.pre_nms_top_n_test=-1", "model.rpn.pre_nms_top_n_test=-1 must be at least 1"),
    ("test.pyramid_min_sizes=[0]", "test.pyramid_min_sizes=[0] must be positive sizes"),
    ("test.pyramid_min_sizes=[600,-400]", "test.pyramid_min_sizes=[600, -400] must be positive sizes"),
    ("model.roi_heads.pooler_resolution=0", "model.roi_heads.pooler_resolution=0 must be at least 1"),
    ("input.pixel_scale=.inf", "input.pixel_scale=inf must be a positive finite number"),
    ("model.anchors.sizes=[32,.inf]", "model.anchors.sizes=[32.0, inf] must be a non-empty list of positive finite"),
    ("model.rpn.min_box_size=.nan", "model.rpn.min_box_size=nan must be a non-negative finite number"),
])  # fmt: skip
def test_non_finite_and_zero_sizes_are_refused_naming_key_and_range(override, expected):
    """Each of these used to load and end in mAP 0 or a late traceback."""
    with pytest.raises(ConfigError, match=r"^invalid config: .*" + re.escape(expected)):
        load_config(overrides=[override])


def _numeric_keys(obj: object, prefix: str = "") -> list[str]:
    """Dotted keys whose type is a number, a list of numbers or an optional number."""
    import dataclasses
    import typing

    keys = []
    for name, hint in typing.get_type_hints(type(obj)).items():
        value = getattr(obj, name)
        if dataclasses.is_dataclass(value):
            keys += _numeric_keys(value, f"{prefix}{name}.")
            continue
        inner = [hint, *typing.get_args(hint)]
        if any(t in (int, float) for t in inner):
            keys.append(prefix + name)
    return keys


def test_every_numeric_key_has_a_declared_range():
    from detection.config import _RULES, Config

    declared = {key for key, _, _ in _RULES}
    missing = [key for key in _numeric_keys(Config()) if key not in declared]
    assert not missing, f"numeric config keys without a range in detection.config._RULES: {missing}"
    assert len(_numeric_keys(Config())) > 50


def test_yaml_alias_bombs_are_refused_quickly_and_the_error_stays_short(tmp_path):
    """400 bytes of nested aliases (×10 per level) used to take 44 s, 1.4 GB and give a 33 MB error line."""
    import time

    levels = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    levels += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 9)]
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text("\n".join(levels) + "\nsolver: {steps: *a8}\n")
    start = time.monotonic()
    with pytest.raises(ConfigError) as info:
        load_config(bomb)
    assert time.monotonic() - start < 5
    assert str(info.value) == (f"{bomb}: YAML aliases expand to more than 100000 values; refused (a config has "
                               "about 100)")
    with pytest.raises(ConfigError, match=r"^override 'solver.steps=.*chars\): YAML aliases expand"):
        load_config(overrides=[_override_bomb()])  # the same on the command line
    recursive = tmp_path / "recursive.yaml"
    recursive.write_text("solver: &s {steps: *s}\n")
    with pytest.raises(ConfigError, match="recursive.yaml: a YAML alias refers to its own anchor"):
        load_config(recursive)


def _override_bomb() -> str:
    parts = ["&a0 [1, 1, 1, 1, 1, 1, 1, 1, 1, 1]"]
    for i in range(1, 7):
        parts.append(f"&a{i} [{', '.join([f'*a{i - 1}'] * 10)}]")
    return "solver.steps=[" + ", ".join(parts) + "]"


def test_a_long_value_is_truncated_in_the_error():
    with pytest.raises(ConfigError) as info:
        load_config(overrides=["solver.base_lr=" + "x" * 100_000])
    assert len(str(info.value)) < 300 and "chars)" in str(info.value)


@pytest.mark.parametrize(("content", "expected"), [
    ("solver: {base_lr: 0.01}\n".encode("utf-16"), "UTF-16 text; a config file must be UTF-8"),
    (b"solver: {base_lr: 0.01}  # caf\xe9\n", "not UTF-8 text (byte 30); a config file must be UTF-8"),
])  # fmt: skip
def test_non_utf8_config_files_are_one_line(tmp_path, content, expected):
    path = tmp_path / "c.yaml"
    path.write_bytes(content)
    with pytest.raises(ConfigError, match=re.escape(f"{path}: {expected}")):
        load_config(path)
    with pytest.raises(ConfigError, match="is a folder"):
        load_config(tmp_path)
