"""Config parsing, which every checkpoint and result folder depends on: YAML scalars become the annotated types,
``key=value`` overrides reach nested keys, unknown keys are one-line errors, renamed keys still load, a config
survives config → dict → YAML → config unchanged, and every preset under ``configs/`` loads."""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from pathlib import Path

import pytest
import yaml

import dhanalysis
from dhanalysis.config import (RENAMED_KEYS, Config, apply_overrides, config_from_dict, config_to_dict, format_override,
                               load_config, migrate, parse_override, replace)
from dhanalysis.errors import DHError


def _configs_dir() -> Path:
    """The presets: shipped inside the package when they are package data, else at the repository root."""
    packaged = Path(dhanalysis.__file__).parent / "configs"
    return packaged if packaged.is_dir() else Path(__file__).resolve().parents[1] / "configs"


PRESETS = sorted(p for p in _configs_dir().rglob("*") if p.suffix in (".yaml", ".yml"))


def _preset_id(path: Path) -> str:
    return path.relative_to(_configs_dir()).as_posix()


def _write(tmp_path: Path, text: str, name: str = "c.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def _leaves(data: dict, prefix: tuple[str, ...] = ()) -> dict[tuple[str, ...], object]:
    """Nested dict -> {key path: value} of its non-dict values."""
    out = {}
    for key, value in data.items():
        if isinstance(value, dict):
            out.update(_leaves(value, prefix + (key,)))
        else:
            out[prefix + (key,)] = value
    return out


def _annotation_ok(value: object, annotation: object) -> bool:
    """Whether ``value`` has the type its dataclass annotation declares (``X | None``, ``tuple[T, ...]``, scalars)."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        return any(_annotation_ok(value, a) for a in typing.get_args(annotation))
    if annotation is type(None):
        return value is None
    if origin is tuple:
        item = typing.get_args(annotation)[0]
        return isinstance(value, tuple) and all(_annotation_ok(v, item) for v in value)
    if annotation is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if annotation is float:
        return type(value) is float
    return isinstance(value, annotation)


def _typed_fields(obj: object, prefix: str = "") -> list[str]:
    """Dotted names of the fields (recursively) whose value does not have its annotated type."""
    bad = []
    hints = typing.get_type_hints(type(obj))
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if dataclasses.is_dataclass(value):
            bad += _typed_fields(value, f"{prefix}{f.name}.")
        elif not _annotation_ok(value, hints[f.name]):
            bad.append(f"{prefix}{f.name}={value!r}")
    return bad


# ---------------------------------------------------------------------------------------------- scalar types
def test_exponent_without_a_dot_is_a_float(tmp_path):
    # YAML 1.1 (PyYAML) reads 1e-4 as the string "1e-4"; the config must still hold the number
    assert yaml.safe_load("x: 1e-4")["x"] == "1e-4"
    cfg = load_config(_write(tmp_path, "train:\n  weight_decay: 1e-4\n  lr: 2E-3\n"))
    assert cfg.train.weight_decay == 1e-4 and type(cfg.train.weight_decay) is float
    assert cfg.train.lr == 0.002 and type(cfg.train.lr) is float
    cfg = load_config(None, ["train.weight_decay=5e-5", "model.loss.lambda_fc=7e-1"])
    assert (cfg.train.weight_decay, cfg.model.loss.lambda_fc) == (5e-5, 0.7)


def test_integers_become_floats_and_integral_floats_integers():
    cfg = load_config(None, ["train.lr=1", "train.iterations=100.0", "model.head.conv_roi_scale=2"])
    assert type(cfg.train.lr) is float and cfg.train.lr == 1.0
    assert type(cfg.train.iterations) is int and cfg.train.iterations == 100
    assert type(cfg.model.head.conv_roi_scale) is float


@pytest.mark.parametrize("override, words", [
    ("train.iterations=1.5", "'train.iterations' must be an integer, got 1.5"),
    ("train.iterations=true", "'train.iterations' must be an integer, got True"),
    ("train.iterations=many", "'train.iterations' must be an integer, got 'many'"),
    ("train.lr=fast", "'train.lr' must be a number, got 'fast'"),
    ("train.lr=true", "'train.lr' must be a number, got True"),
    ("train.amp=1", "'train.amp' must be true or false, got 1"),
    ("train.amp=maybe", "'train.amp' must be true or false, got 'maybe'"),
    ("model.rpn.anchor_sizes=[16, 32.5]", "'model.rpn.anchor_sizes' must be an integer, got 32.5"),
    ("model.head=3", "'model.head' must be a mapping, got 3"),
])
def test_values_of_the_wrong_type_are_one_line_errors_naming_the_key(override, words):
    with pytest.raises(DHError) as info:
        load_config(None, [override])
    message = str(info.value)
    assert words in message and "\n" not in message


def test_booleans_and_null():
    cfg = load_config(None, ["train.amp=false", "model.head.non_local=true", "model.backbone.weights=null"])
    assert cfg.train.amp is False and cfg.model.head.non_local is True
    assert cfg.model.backbone.weights is None
    cfg = load_config(None, ["model.backbone.weights=checkpoints/r18.pth"])
    assert cfg.model.backbone.weights == "checkpoints/r18.pth"


# ---------------------------------------------------------------------------------------------- tuples
def test_lists_become_tuples_of_the_item_type(tmp_path):
    path = _write(tmp_path, "model:\n  rpn:\n    anchor_sizes: [16, 32]\n    aspect_ratios: [1, 2]\n"
                            "train:\n  steps: [30, 40.0]\n  freeze: [backbone, rpn]\n")
    cfg = load_config(path)
    assert cfg.model.rpn.anchor_sizes == (16, 32)
    assert cfg.model.rpn.aspect_ratios == (1.0, 2.0) and all(type(a) is float for a in cfg.model.rpn.aspect_ratios)
    assert cfg.train.steps == (30, 40) and all(type(s) is int for s in cfg.train.steps)
    assert cfg.train.freeze == ("backbone", "rpn")
    hash(cfg)  # tuples, not lists: a frozen config is hashable


def test_tuple_overrides_scalars_and_empty_lists():
    cfg = load_config(None, ["train.freeze=[backbone, rpn]", "train.steps=7", "model.rpn.anchor_sizes=[8]"])
    assert cfg.train.freeze == ("backbone", "rpn")
    assert cfg.train.steps == (7,)  # one value is a one-element tuple
    assert cfg.model.rpn.anchor_sizes == (8,)
    assert load_config(None, ["train.steps=[]"]).train.steps == ()
    assert load_config(None, ["train.freeze=backbone"]).train.freeze == ("backbone",)


# ---------------------------------------------------------------------------------------------- overrides
def test_parse_override_reads_the_value_as_yaml():
    assert parse_override("model.loss.lambda_fc=0.7") == (["model", "loss", "lambda_fc"], 0.7)
    assert parse_override("train.freeze=[backbone, rpn]") == (["train", "freeze"], ["backbone", "rpn"])
    assert parse_override("data.root=a=b") == (["data", "root"], "a=b")  # only the first '=' splits
    assert parse_override("data.root=") == (["data", "root"], "")
    assert parse_override("name=[unclosed") == (["name"], "[unclosed")  # not YAML: kept as written
    assert parse_override(" train.lr =0.5") == (["train", "lr"], 0.5)
    with pytest.raises(DHError, match="is not of the form key=value"):
        parse_override("train.iterations")


# every kind of value the sweeps and converters pass (floats that look whole, ints, bools, None, names, lists of
# each) and strings YAML would read as something else were they written bare
FORMATTED = [1.0, 2.5, 0.7, 0.0, 1e-4, 1e20, float("inf"), 1, 0, 1024, True, False, None, "single-fc", "bgr255",
             "resnet50", "/data/a b/c.pth", [103.53, 116.28, 123.675], [1.0, 1.0, 1.0], [4, 8, 16, 32, 64],
             [0, 1, 2, 3, 5], ["backbone", "rpn"], [], "true", "null", "1", "1.5", "", "a: b", "[x", "- y", "#z",
             " padded ", "x=y"]


def _same(a, b) -> bool:
    if type(a) is not type(b):
        return False
    if isinstance(a, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return a == b


@pytest.mark.parametrize("value", FORMATTED, ids=repr)
def test_format_override_is_the_inverse_of_parse_override(value):
    """A value formatted as a ``--set`` string reads back as itself, type included: the torchrun lines a sweep
    writes build the configs the sweep would."""
    text = format_override("model.head.x", value)
    keys, parsed = parse_override(text)
    assert keys == ["model", "head", "x"] and _same(parsed, value), text
    assert "\n" not in text  # one shell word once quoted


def test_format_override_writes_what_a_user_would():
    assert format_override("model.head.non_local", False) == "model.head.non_local=false"
    assert format_override("model.backbone.weights", None) == "model.backbone.weights=null"
    assert format_override("model.loss.w_fc", 2.0) == "model.loss.w_fc=2.0"
    assert format_override("model.rpn.anchor_strides", (4, 8)) == "model.rpn.anchor_strides=[4, 8]"
    assert parse_override(format_override("model.rpn.anchor_strides", (4, 8)))[1] == [4, 8]  # a tuple as a list


def test_overrides_reach_nested_keys_without_touching_the_input():
    data = {"model": {"head": {"fc_dim": 64}, "variant": "single-fc"}}
    out = apply_overrides(data, ["model.head.conv_dim=32", "train.lr=0.5", "model.head.fc_dim=128"])
    assert out == {"model": {"head": {"fc_dim": 128, "conv_dim": 32}, "variant": "single-fc"}, "train": {"lr": 0.5}}
    assert data == {"model": {"head": {"fc_dim": 64}, "variant": "single-fc"}}
    # later overrides win; a scalar in the way of a nested key is replaced by a mapping
    assert apply_overrides({}, ["train.lr=1", "train.lr=2"]) == {"train": {"lr": 2}}
    assert apply_overrides({"train": 3}, ["train.lr=1"]) == {"train": {"lr": 1}}


def test_overrides_apply_after_the_file(tmp_path):
    path = _write(tmp_path, "model:\n  variant: single-fc\n  head: {fc_dim: 64}\ntrain: {lr: 0.1}\n")
    cfg = load_config(path, ["model.head.fc_dim=16", "train.iterations=5"])
    assert (cfg.model.variant, cfg.model.head.fc_dim, cfg.train.lr, cfg.train.iterations) == ("single-fc", 16, 0.1, 5)
    assert cfg.model.head.conv_dim == Config().model.head.conv_dim  # untouched keys keep their defaults


def test_replace_returns_a_new_config():
    cfg = load_config(None, ["train.lr=0.1"])
    new = replace(cfg, ["train.lr=0.2", "model.variant=double-head"])
    assert (new.train.lr, new.model.variant) == (0.2, "double-head")
    assert (cfg.train.lr, cfg.model.variant) == (0.1, Config().model.variant)
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.train.lr = 0.3


# ---------------------------------------------------------------------------------------------- unknown keys
@pytest.mark.parametrize("override, key, section", [
    ("iterations=5", "iterations", Config),
    ("model.head.fc_dimm=3", "model.head.fc_dimm", type(Config().model.head)),
    ("train.lR=0.1", "train.lR", type(Config().train)),
])
def test_unknown_keys_name_the_key_and_the_valid_ones(override, key, section):
    with pytest.raises(DHError) as info:
        load_config(None, [override])
    message = str(info.value)
    assert "\n" not in message
    assert f"unknown config key '{key}'" in message
    known = message.split("known keys: ", 1)[1]
    assert known.split(", ") == sorted(f.name for f in dataclasses.fields(section))


def test_unknown_key_in_a_file(tmp_path):
    path = _write(tmp_path, "model:\n  variant: single-fc\n  backbone: {nam: resnet18}\n")
    with pytest.raises(DHError, match=r"unknown config key 'model\.backbone\.nam'; known keys: .*\bname\b"):
        load_config(path)


def test_file_errors_are_one_line(tmp_path):
    with pytest.raises(DHError, match="does not exist"):
        load_config(tmp_path / "missing.yaml")
    for text, words in (("model: [unclosed\n", "is not valid YAML"), ("- a\n- b\n", "must hold a mapping")):
        with pytest.raises(DHError, match=words) as info:
            load_config(_write(tmp_path, text))
        assert "\n" not in str(info.value)


def test_name_defaults_to_the_file_stem(tmp_path):
    assert load_config(_write(tmp_path, "train: {lr: 0.1}\n", "my-run.yaml")).name == "my-run"
    assert load_config(_write(tmp_path, "name: other\n", "my-run.yaml")).name == "other"
    assert load_config(_write(tmp_path, "", "empty.yaml")) == Config(name="empty")


# ---------------------------------------------------------------------------------------------- renamed keys
def _nested(path: tuple[str, ...], key: str, value: object) -> dict:
    data: dict = {key: value}
    for part in reversed(path):
        data = {part: data}
    return data


def _get(obj: object, path: tuple[str, ...], key: str) -> object:
    for part in path:
        obj = getattr(obj, part)
    return getattr(obj, key)


def _other_value(default: object) -> object:
    """A value of the default's type that differs from it."""
    if isinstance(default, bool):
        return not default
    if isinstance(default, (int, float)):
        return default * 2 + 1
    return f"{default}-renamed"


@pytest.mark.parametrize("path, old, new", RENAMED_KEYS, ids=[old for _, old, _ in RENAMED_KEYS])
def test_renamed_keys_load_under_their_new_name(path, old, new):
    value = _other_value(_get(Config(), path, new))
    data = _nested(path, old, value)
    assert _get(config_from_dict(data), path, new) == value
    assert data == _nested(path, old, value)  # the stored data is not modified
    # both present: the new name wins (a config already migrated and edited keeps its edit)
    both = _nested(path, old, value)
    node = both
    for part in path:
        node = node[part]
    node[new] = _get(Config(), path, new)
    assert _get(config_from_dict(both), path, new) == _get(Config(), path, new)
    # and through a command-line override
    cfg = load_config(None, [".".join(path + (old,)) + f"={value}"])
    assert _get(cfg, path, new) == value


def test_reg_roi_scale_became_conv_roi_scale():
    cfg = config_from_dict({"model": {"variant": "double-head-ext", "head": {"reg_roi_scale": 1.3}}})
    assert cfg.model.head.conv_roi_scale == 1.3
    assert "reg_roi_scale" not in config_to_dict(cfg)["model"]["head"]


def test_migrate_leaves_other_data_alone():
    assert migrate({}) == {} and migrate(None) == {}
    data = {"model": {"head": 3}, "train": {"lr": 0.1}}  # malformed section: left for validation to report
    assert migrate(data) == data
    with pytest.raises(DHError, match="'model.head' must be a mapping"):
        config_from_dict(data)


# ---------------------------------------------------------------------------------------------- round trip
ROUND_TRIP_OVERRIDES = ["train.weight_decay=1e-4", "train.steps=[3, 5]", "train.freeze=[backbone, rpn]",
                        "train.init_from=checkpoints/trunk.pth", "model.rpn.aspect_ratios=[0.5, 1, 2]",
                        "model.backbone.weights=null", "model.head.conv_roi_scale=1.3", "train.amp=false",
                        "name=round-trip"]


@pytest.mark.parametrize("cfg", [Config(), load_config(None, ROUND_TRIP_OVERRIDES)], ids=["defaults", "edited"])
def test_config_dict_yaml_config_is_the_identity(cfg, tmp_path):
    data = config_to_dict(cfg)
    assert config_from_dict(data) == cfg
    assert config_from_dict(yaml.safe_load(yaml.safe_dump(data, sort_keys=False))) == cfg
    assert config_from_dict(json.loads(json.dumps(data))) == cfg
    path = _write(tmp_path, yaml.safe_dump(data), "stored.yaml")
    assert load_config(path) == cfg
    # plain data all the way down: what torch.load(weights_only=True) and JSON accept
    assert all(isinstance(v, (str, int, float, bool, list, type(None))) for v in _leaves(data).values())
    assert all(isinstance(v, list) for k, v in _leaves(data).items() if k[-1] in ("steps", "freeze", "anchor_sizes"))


# ---------------------------------------------------------------------------------------------- presets
def test_presets_are_found():
    names = {_preset_id(p) for p in PRESETS}
    assert "synth/single-fc.yaml" in names and "synth/double-head-ext.yaml" in names
    assert any(n.startswith("coco/") for n in names)


@pytest.mark.parametrize("path", PRESETS, ids=_preset_id)
def test_every_preset_loads_with_what_it_says(path):
    from dhanalysis.model.variants import get_variant

    cfg = load_config(path)
    assert not _typed_fields(cfg), "values not of their annotated type"
    get_variant(cfg.model.variant)  # a DHError for a variant the model does not know
    raw = migrate(yaml.safe_load(path.read_text()))
    stored = _leaves(config_to_dict(cfg))
    # every value written in the file is the one the config holds (nothing dropped, nothing misread)
    for key, value in _leaves(raw).items():
        held = stored[key]
        if isinstance(held, float) and isinstance(value, str):
            value = float(value)
        assert held == value, ".".join(key)
    assert config_from_dict(yaml.safe_load(yaml.safe_dump(config_to_dict(cfg)))) == cfg
