"""Frozen dataclass configs, loaded from YAML with dotted ``key=value`` overrides.

Every checkpoint and every result folder stores the whole config as plain data (`config_to_dict`), so a checkpoint
alone rebuilds its model and a result says what produced it. Unknown keys are rejected: a typo in a YAML file is an
error, not a silently ignored setting.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from dhanalysis.errors import DHError


@dataclass(frozen=True)
class BackboneConfig:
    """ResNet-FPN backbone. ``weights`` is a local file of ResNet weights (nothing is downloaded)."""

    name: str = "resnet50"  # resnet18 | resnet34 | resnet50 | resnet101
    weights: str | None = None
    norm: str = "frozen_bn"  # frozen_bn (pretrained backbones, the paper) | bn (training from scratch)
    trainable_layers: int = 3  # ResNet stages that train, counted from the top (0..5)
    fpn_channels: int = 256
    # stride 2 of each stage's first bottleneck on its 1×1 conv (MSRA/Caffe2 weights: detectron2's and
    # maskrcnn-benchmark's R-50/101) instead of its 3×3 conv (torchvision's and mmdetection's "pytorch" style)
    stride_in_1x1: bool = False


@dataclass(frozen=True)
class HeadConfig:
    """Widths of the RoI heads; the defaults are the paper's (§4.1, Fig. 5)."""

    roi_size: int = 7
    # RoIAlign samples per bin and axis; 0 = adaptive, ⌈RoI size / roi_size⌉ per RoI (detectron2, mmdet)
    sampling_ratio: int = 2
    # RoIAlign's half-pixel shift (torchvision's aligned=True: detectron2's ROIAlignV2, mmcv's aligned); False is
    # torchvision's detector and maskrcnn-benchmark, which also force RoIs of at least 1×1
    aligned: bool = False
    fc_dim: int = 1024
    conv_dim: int = 1024
    bottleneck_dim: int = 256
    num_blocks: int = 5  # K: residual + non-local blocks of the conv-head (Table 2)
    # §3 and Table 1: K residual blocks only; non-local blocks are the variation of Table 2's NL rows, which Fig. 8,
    # Table 3 and Table 5 use (docs/reproduce.md maps every paper item to its setting)
    non_local: bool = False
    non_local_dim: int = 512
    non_local_groups: int = 4
    non_local_mode: str = "dot"  # dot (grouped dot product / N, the authors' code) | gaussian (softmax)
    # enlarge the RoI every conv-head pools, whatever its task, about its centre (1.0: the paper; 1.3 in the authors'
    # and mmdetection's code); the fc-head always pools the RoI itself
    conv_roi_scale: float = 1.0


@dataclass(frozen=True)
class LossConfig:
    """Loss weights of Eq. 1-3: omega per head, lambda balancing the focused and unfocused task."""

    w_fc: float = 2.0
    w_conv: float = 2.5
    lambda_fc: float = 1.0
    lambda_conv: float = 1.0
    smooth_l1_beta: float = 1.0


@dataclass(frozen=True)
class RPNConfig:
    anchor_sizes: tuple[int, ...] = (32, 64, 128, 256, 512)
    aspect_ratios: tuple[float, ...] = (0.5, 1.0, 2.0)
    pre_nms_top_n_train: int = 2000
    pre_nms_top_n_test: int = 1000
    post_nms_top_n_train: int = 2000
    post_nms_top_n_test: int = 1000
    nms_thresh: float = 0.7
    batch_size_per_image: int = 256
    positive_fraction: float = 0.5
    # cell anchors: "torchvision" (rounded to whole pixels, centred on the cell's corner), "unrounded" (detectron2,
    # mmdetection 2+), "legacy" (Detectron / maskrcnn-benchmark: whole-pixel sizes centred at (stride - 1) / 2)
    anchor_style: str = "torchvision"
    # the stride of each level's anchor grid; () = torchvision's rule, padded image size // grid size (not the level's
    # stride where a padded side is not a multiple of it); (4, 8, 16, 32, 64) = detectron2, mmdet, maskrcnn-benchmark
    anchor_strides: tuple[int, ...] = ()


@dataclass(frozen=True)
class ModelConfig:
    variant: str = "double-head-ext"
    num_classes: int = 0  # foreground classes; 0 = take them from the dataset's categories
    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    head: HeadConfig = field(default_factory=HeadConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    rpn: RPNConfig = field(default_factory=RPNConfig)
    min_size: int = 800
    max_size: int = 1333
    box_batch_size_per_image: int = 512
    box_positive_fraction: float = 0.25
    score_thresh: float = 0.05
    nms_thresh: float = 0.5
    detections_per_img: int = 100
    mode: str = ""  # inference mode; "" = the variant's default (see dhanalysis.model.variants)
    # what the backbone sees: "rgb" (RGB in 0-1, torchvision) or "bgr255" (BGR in 0-255, Detectron-style weights);
    # pixel_mean / pixel_std are in that format's channel order and range
    input_format: str = "rgb"
    pixel_mean: tuple[float, ...] = (0.485, 0.456, 0.406)
    pixel_std: tuple[float, ...] = (0.229, 0.224, 0.225)
    # classifier layout of converted weights (dhanalysis.model.convert): num_slots outputs (0 = num_classes + 1);
    # class_slots[i] is the slot of label i (i = 0: background; () = slot i is label i). Slots no label reads count
    # as background, so every label's probability is the source's own (torchvision's 91 COCO-id slots)
    num_slots: int = 0
    class_slots: tuple[int, ...] = ()
    # box regressor rows: "per_slot" (4 per classifier slot), "per_foreground" (4 per slot but the background's:
    # detectron2, mmdetection) or "agnostic" (4 for every class)
    reg_layout: str = "per_slot"
    # the source framework's box conventions (dhanalysis.model.conventions): "continuous" (width = x2 - x1) or
    # "plus_one" (maskrcnn-benchmark and the authors' code: width = x2 - x1 + 1 in the coder, clipping to W - 1, NMS,
    # the FPN level, the enlarged RoI and the COCO export); small-box filters "torchvision" (proposals >= 1e-3 px,
    # detections >= 1e-2 px), "detectron2" (proposals > 0 px; detections > 0 px after NMS and the top-k cut),
    # "nonempty" (mmdet: proposals > 0 px, detections all) or "none"; the dw/dh clamp "max" (log(1000/16) from above)
    # or "both" (mmdet)
    box_convention: str = "continuous"
    box_filter: str = "torchvision"
    box_clamp: str = "max"
    # the conv weights' memory format, hence the feature maps': "auto" (channels-last where oneDNN or cuDNN is
    # installed: faster; conv-heads evaluate BatchNorm-folded) or "contiguous" (the default NCHW layout and the
    # conv-heads' own modules: the arithmetic torchvision, detectron2 and mmdet run; oneDNN's channels-last kernels
    # round differently on some CPUs, so check a converted model against its source with this)
    conv_memory_format: str = "auto"
    # the test-time resize: "torchvision" (floor each side, resize the float image), "round" (detectron2, mmdet:
    # int(side·scale + 0.5)) or "maskrcnn_benchmark" (its own size rule); the last two resize the 8-bit image
    resize_rule: str = "torchvision"
    # how the 8-bit resize interpolates (not read by "torchvision"): "float" (bilinear, rounded to levels),
    # "opencv" (OpenCV's fixed-point INTER_LINEAR: mmdetection's imresize) or "pil" (Pillow's BILINEAR, antialiased
    # when shrinking: detectron2, maskrcnn-benchmark)
    resize_kernel: str = "float"
    # decode images with their EXIF orientation applied (detectron2's reader); off: the stored pixel grid, as
    # torchvision's and mmdetection's default pipelines read it
    exif_orientation: bool = False


@dataclass(frozen=True)
class DataConfig:
    root: str = "data/coco"
    train_split: str = "train2017"
    val_split: str = "val2017"
    hflip_prob: float = 0.5
    num_workers: int = 2


@dataclass(frozen=True)
class TrainConfig:
    """SGD with warm-up and multi-step decay. ``lr`` is for ``ims_per_batch`` images; scaled linearly otherwise."""

    iterations: int = 180_000
    ims_per_batch: int = 8
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 1e-4
    steps: tuple[int, ...] = (120_000, 160_000)
    gamma: float = 0.1
    warmup_iters: int = 500
    warmup_factor: float = 1.0 / 3
    clip_grad_norm: float = 0.0  # 0 = off
    amp: bool = True  # only takes effect on CUDA
    # bf16 autocast on CPUs with bf16 units (AMX / AVX-512 BF16); off elsewhere, where bf16 is emulated (BENCHMARKS.md)
    cpu_bf16: bool = False
    # shared-trunk training (dhanalysis/engine/trunk.py): start backbone + RPN from another run's checkpoint and keep
    # the parts named in `freeze` fixed; freezing both backbone and rpn runs them without gradients, cached per image
    init_from: str | None = None
    freeze: tuple[str, ...] = ()
    trunk_cache_gb: float = 4.0  # memory for cached trunk outputs; images beyond it are recomputed each time
    checkpoint_period: int = 5000
    log_period: int = 20
    seed: int = 0


@dataclass(frozen=True)
class Config:
    name: str = "model"
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)


# ---------------------------------------------------------------------------------------------- value ranges
@dataclass(frozen=True)
class Bounds:
    """The values a numeric config key accepts; for a list key, what each item accepts (and whether it may be
    empty). Floats must also be finite: a NaN learning rate passes every comparison it meets and fails iterations
    later, far from the setting that caused it."""

    kind: type  # int or float
    low: float | None = None
    high: float | None = None
    low_open: bool = False  # low itself excluded
    high_open: bool = False  # high itself excluded
    non_empty: bool = False

    def holds(self, value: Any) -> bool:
        """Whether one scalar value lies in the range."""
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value:
            return False
        if self.kind is int and not isinstance(value, int):
            return False
        if self.kind is float and value in (float("inf"), float("-inf")):
            return False
        if self.low is not None and (value <= self.low if self.low_open else value < self.low):
            return False
        return self.high is None or (value < self.high if self.high_open else value <= self.high)

    def describe(self, plural: bool = False) -> str:
        """``an integer >= 1``, ``a number in [0, 1)``, ``finite numbers > 0`` (``plural``: a list's items)."""
        noun = ("integers" if plural else "an integer") if self.kind is int else (
            ("finite numbers" if plural else "a finite number") if self.high is None or self.low is None
            else ("numbers" if plural else "a number"))
        low, high = _shown(self.low), _shown(self.high)
        if self.low is not None and self.high is not None:
            if self.kind is int:
                return f"{noun} from {low} to {high}"
            return f"{noun} in {'(' if self.low_open else '['}{low}, {high}{')' if self.high_open else ']'}"
        if self.low is not None:
            return f"{noun} {'>' if self.low_open else '>='} {low}"
        if self.high is not None:
            return f"{noun} {'<' if self.high_open else '<='} {high}"
        return noun


def _ints(low: int, high: int | None = None, non_empty: bool = False) -> Bounds:
    return Bounds(int, low, high, non_empty=non_empty)


def _reals(low: float | None = None, high: float | None = None, low_open: bool = False, high_open: bool = False,
           non_empty: bool = False) -> Bounds:
    return Bounds(float, low, high, low_open, high_open, non_empty)


POSITIVE, COUNT, FRACTION, WEIGHT = _ints(1), _ints(0), _reals(0.0, 1.0), _reals(0.0)

# Every numeric key of `Config`, with the values it accepts (a test keeps the table and the dataclasses in step).
# Zero is allowed only where the key gives it a meaning: num_classes 0 (from the dataset), sampling_ratio 0
# (adaptive), num_slots 0 (num_classes + 1), a loss weight or clip_grad_norm 0 (off), warmup_iters 0 (none).
RANGES: dict[str, Bounds] = {
    "model.num_classes": COUNT,
    "model.backbone.trainable_layers": _ints(0, 5),  # ResNet stages, counted from the top
    "model.backbone.fpn_channels": POSITIVE,
    "model.head.roi_size": POSITIVE,
    "model.head.sampling_ratio": COUNT,
    "model.head.fc_dim": POSITIVE,
    "model.head.conv_dim": POSITIVE,
    "model.head.bottleneck_dim": POSITIVE,
    "model.head.num_blocks": POSITIVE,  # the conv-head has at least one block (K = 0 of Table 2 is a Single-FC)
    "model.head.non_local_dim": POSITIVE,
    "model.head.non_local_groups": POSITIVE,
    "model.head.conv_roi_scale": _reals(0.0, low_open=True),
    "model.loss.w_fc": WEIGHT,
    "model.loss.w_conv": WEIGHT,
    "model.loss.lambda_fc": FRACTION,  # Eq. 2-3 weigh the focused task by λ and the other by 1 − λ
    "model.loss.lambda_conv": FRACTION,
    "model.loss.smooth_l1_beta": WEIGHT,  # 0 is the L1 loss
    "model.rpn.anchor_sizes": _ints(1, non_empty=True),
    "model.rpn.aspect_ratios": _reals(0.0, low_open=True, non_empty=True),
    "model.rpn.pre_nms_top_n_train": POSITIVE,
    "model.rpn.pre_nms_top_n_test": POSITIVE,
    "model.rpn.post_nms_top_n_train": POSITIVE,
    "model.rpn.post_nms_top_n_test": POSITIVE,
    "model.rpn.nms_thresh": FRACTION,
    "model.rpn.batch_size_per_image": POSITIVE,
    "model.rpn.positive_fraction": FRACTION,
    "model.rpn.anchor_strides": POSITIVE,  # [] keeps torchvision's rule
    "model.min_size": POSITIVE,
    "model.max_size": POSITIVE,
    "model.box_batch_size_per_image": POSITIVE,
    "model.box_positive_fraction": FRACTION,
    "model.score_thresh": FRACTION,
    "model.nms_thresh": FRACTION,
    "model.detections_per_img": POSITIVE,
    "model.pixel_mean": _reals(non_empty=True),
    "model.pixel_std": _reals(0.0, low_open=True, non_empty=True),
    "model.num_slots": COUNT,
    "model.class_slots": COUNT,
    "data.hflip_prob": FRACTION,
    "data.num_workers": COUNT,
    "train.iterations": POSITIVE,
    "train.ims_per_batch": POSITIVE,
    "train.lr": _reals(0.0, low_open=True),
    "train.momentum": _reals(0.0, 1.0, high_open=True),
    "train.weight_decay": WEIGHT,
    "train.steps": POSITIVE,
    "train.gamma": _reals(0.0, 1.0, low_open=True),
    "train.warmup_iters": COUNT,
    "train.warmup_factor": FRACTION,
    "train.clip_grad_norm": WEIGHT,
    "train.trunk_cache_gb": WEIGHT,
    "train.checkpoint_period": POSITIVE,
    "train.log_period": POSITIVE,
    "train.seed": _ints(0, 2**32 - 1),  # what every seeded generator (torch, numpy, Python) accepts
}


def _shown(value: Any) -> str:
    """A value as the user reads it: lists as lists, whole-number floats of a range without their ``.0``."""
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_shown(v) for v in value) + "]"
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    return repr(value) if isinstance(value, str) else str(value)


def check_ranges(cfg: Config) -> Config:
    """Refuse a config with a numeric value out of its key's range (`RANGES`), in one line naming the key, the value,
    the range and how to set it. Run whenever a config is built, so a bad value stops a command before it writes
    anything, instead of hanging a sampler or dividing by zero hours later. Returns ``cfg``."""
    for key, bounds in RANGES.items():
        value: Any = cfg
        for part in key.split("."):
            value = getattr(value, part)
        if isinstance(value, tuple):
            ok = all(bounds.holds(v) for v in value) and (bool(value) or not bounds.non_empty)
            wanted = f"{'a non-empty' if bounds.non_empty else 'a'} list of {bounds.describe(plural=True)}"
        else:
            ok, wanted = bounds.holds(value), bounds.describe()
        if not ok:
            raise DHError(f"config key '{key}' must be {wanted}, got {_shown(value)}; change it in the config file or "
                          f"with --set {key}=VALUE")
    return cfg


def _resolve_type(annotation: Any) -> Any:
    """Strip ``X | None`` to ``X``; other annotations are returned unchanged."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        return args[0] if len(args) == 1 else annotation
    return annotation


def _coerce(value: Any, annotation: Any, where: str) -> Any:
    """Convert YAML data to the annotated type; raise DHError naming the key when it does not fit."""
    tp = _resolve_type(annotation)
    if value is None:
        return None
    if dataclasses.is_dataclass(tp):
        if dataclasses.is_dataclass(value):
            return value
        if not isinstance(value, dict):
            raise DHError(f"config key '{where}' must be a mapping, got {value!r}")
        return _from_dict(tp, value, where)
    if typing.get_origin(tp) is tuple:
        item_type = typing.get_args(tp)[0]
        if not isinstance(value, (list, tuple)):
            value = [value]
        return tuple(_coerce(v, item_type, where) for v in value)
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise DHError(f"config key '{where}' must be true or false, got {value!r}")
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or int(value) != value:
            raise DHError(f"config key '{where}' must be an integer, got {value!r}")
        return int(value)
    if tp is float:
        if isinstance(value, str):  # YAML 1.1 reads "1e-4" (no dot) as a string
            try:
                value = float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise DHError(f"config key '{where}' must be a number, got {value!r}")
        return float(value)
    if tp is str:
        return str(value)
    return value


def _from_dict(cls: type, data: dict, prefix: str = "") -> Any:
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        where = f"{prefix}." if prefix else ""
        raise DHError(f"unknown config key '{where}{unknown[0]}'; known keys: {', '.join(sorted(names))}")
    kwargs = {k: _coerce(v, hints[k], f"{prefix}.{k}" if prefix else k) for k, v in data.items()}
    return cls(**kwargs)


# keys renamed since checkpoints were first written: (section path, old name, new name)
RENAMED_KEYS = ((("model", "head"), "reg_roi_scale", "conv_roi_scale"),)


def migrate(data: dict) -> dict:
    """Stored configs with renamed keys read as today's (a checkpoint written before a rename keeps loading).

    ``model.head.reg_roi_scale`` enlarged the RoI of the regression-focused branches; its successor
    ``conv_roi_scale`` enlarges the conv-head's, which is the same branch in Double-Head(-Ext), the only variants
    the enlargement was used with in public code.
    """
    data = dict(data or {})
    for path, old, new in RENAMED_KEYS:
        node = data
        for key in path:
            if not isinstance(node.get(key), dict):
                break
            node[key] = dict(node[key])
            node = node[key]
        else:
            if old in node:
                value = node.pop(old)
                node.setdefault(new, value)
    return data


def config_from_dict(data: dict) -> Config:
    """Build a Config from nested plain data (YAML or a checkpoint's stored config), its values range-checked."""
    return check_ranges(_from_dict(Config, migrate(data)))


def config_to_dict(cfg: Config) -> dict:
    """Plain nested data (tuples become lists) that YAML, JSON and ``torch.load(weights_only=True)`` all accept."""

    def plain(x: Any) -> Any:
        if isinstance(x, dict):
            return {k: plain(v) for k, v in x.items()}
        if isinstance(x, (list, tuple)):
            return [plain(v) for v in x]
        return x

    return plain(dataclasses.asdict(cfg))


def parse_override(text: str) -> tuple[list[str], Any]:
    """``model.loss.lambda_fc=0.7`` -> (["model", "loss", "lambda_fc"], 0.7); the value is parsed as YAML."""
    if "=" not in text:
        raise DHError(f"override '{text}' is not of the form key=value (e.g. train.iterations=100)")
    key, raw = text.split("=", 1)
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return key.strip().split("."), value


_END_OF_DOCUMENT = "\n...\n"  # what PyYAML writes after a lone scalar


def format_override(key: str, value: Any) -> str:
    """``("model.head.non_local", False)`` -> ``"model.head.non_local=false"``: the ``--set`` string that
    `parse_override` reads back as exactly ``value`` (YAML: true/false, null, lists in flow style, strings quoted
    where YAML would read them as something else). Library values become command-line strings only here, at the
    edge: the torchrun lines a sweep writes, the runs it lists."""
    plain = list(value) if isinstance(value, tuple) else value
    text = yaml.safe_dump(plain, default_flow_style=True, width=float("inf"))
    return f"{key}={text.removesuffix(_END_OF_DOCUMENT).rstrip()}"


def _assign(data: dict, keys: list[str], value: Any) -> None:
    """Set ``data[k1][k2]...[kn] = value``, copying each nested dict on the way (the input is never changed)."""
    node = data
    for k in keys[:-1]:
        child = node.get(k)
        child = dict(child) if isinstance(child, dict) else {}
        node[k] = child
        node = child
    node[keys[-1]] = list(value) if isinstance(value, tuple) else value


def apply_overrides(data: dict, overrides: list[str] | None) -> dict:
    """Apply ``key=value`` overrides to nested plain data (validated later, when the Config is built)."""
    data = dict(data)
    for text in overrides or []:
        _assign(data, *parse_override(text))
    return data


def apply_values(data: dict, values: dict[str, Any] | None) -> dict:
    """Apply ``{"train.iterations": 100, ...}`` (dotted keys, plain values) to nested plain data: what the library
    passes between layers, where the command line passes ``key=value`` strings (`apply_overrides`)."""
    data = dict(data)
    for key, value in (values or {}).items():
        _assign(data, key.split("."), value)
    return data


def preset_path(name: str | Path) -> Path:
    """The shipped preset ``name`` (``synth/single-fc.yaml``, also spelled ``configs/synth/single-fc.yaml``): package
    data under ``dhanalysis/configs``, so an installed package has them wherever it runs."""
    import importlib.resources

    parts = Path(name).parts
    parts = parts[1:] if parts[:1] == ("configs",) else parts
    return Path(str(importlib.resources.files("dhanalysis").joinpath("configs", *parts)))


def presets() -> list[str]:
    """Every shipped preset, as ``configs/<group>/<name>.yaml``."""
    root = preset_path("")
    return sorted(f"configs/{p.relative_to(root).as_posix()}" for p in root.rglob("*.yaml"))


def load_config(path: str | Path | None = None, overrides: list[str] | None = None,
                values: dict[str, Any] | None = None) -> Config:
    """Read a YAML config (or the defaults when ``path`` is None) and apply dotted overrides: ``key=value`` strings
    (the command line's), then ``values`` (``{dotted.key: value}``, the library's).

    A relative ``configs/...`` path that is not there (any folder but a clone's root) reads the shipped preset.
    """
    data: dict = {}
    if path is not None:
        path = Path(path)
        if not path.is_file() and not path.is_absolute() and path.parts[:1] == ("configs",):
            path = preset_path(path) if preset_path(path).is_file() else path
        if not path.is_file():
            groups = ", ".join(sorted({Path(p).parent.as_posix() for p in presets()}))
            raise DHError(f"config file {path} does not exist; the shipped presets are the YAML files of {groups} "
                          "(e.g. configs/synth/single-fc.yaml)")
        try:
            data = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as exc:
            raise DHError(f"config file {path} is not valid YAML: {str(exc).splitlines()[0]}") from None
        if not isinstance(data, dict):
            raise DHError(f"config file {path} must hold a mapping at the top level")
        data.setdefault("name", path.stem)
    return config_from_dict(apply_values(apply_overrides(data, overrides), values))


def replace(cfg: Config, overrides: list[str]) -> Config:
    """A copy of ``cfg`` with dotted overrides applied."""
    return config_from_dict(apply_overrides(config_to_dict(cfg), overrides))
