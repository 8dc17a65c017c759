"""What every converter shares: reading a source file safely, mapping its keys by rule tables, and the checks.

A rule maps source keys (a regular expression, matched whole) to our key (a template with the groups, or a function
of the match), optionally changing the tensor; a drop rule names why a key is not needed. A source key that no rule
matches, or a key of our model that nothing fills, is a one-line `DHError` that lists them.
"""

from __future__ import annotations

import pickle
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch

from dhanalysis.config import Config
from dhanalysis.errors import DHError

# top-level entries of training checkpoints that hold no weights, and why they are dropped
TOP_LEVEL_DROPS = {
    "optimizer": "optimizer state",
    "scheduler": "learning-rate schedule state",
    "lr_scheduler": "learning-rate schedule state",
    "iteration": "iteration counter",
    "epoch": "epoch counter",
    "meta": "training metadata",
    "__author__": "file metadata",
    "matching_heuristics": "file metadata",
    "message_hub": "training metadata",
    "param_schedulers": "learning-rate schedule state",
}
NUM_BATCHES = "num_batches_tracked"
BN_COUNTER_REASON = "BatchNorm's update counter, which inference never reads"


@dataclass(frozen=True)
class Rule:
    """Source keys matching ``pattern`` go to ``target`` (``None``: dropped because of ``reason``).

    ``target`` is a `re.Match.expand` template or a function of the match; ``transform`` changes the tensor.
    """

    pattern: str
    target: str | Callable[[re.Match], str] | None
    reason: str = ""
    transform: Callable[[torch.Tensor], torch.Tensor] | None = None


def keep(pattern: str, target: str | Callable[[re.Match], str], transform=None) -> Rule:
    return Rule(pattern, target, transform=transform)


def drop(pattern: str, reason: str) -> Rule:
    return Rule(pattern, None, reason)


def listed(keys: list[str], limit: int = 5) -> str:
    """``a, b, c (and 12 more)``: long key lists stay on one line."""
    shown = ", ".join(keys[:limit])
    return shown + (f" (and {len(keys) - limit} more)" if len(keys) > limit else "")


class _NumpyOnly(pickle.Unpickler):
    """Unpickles plain containers and numpy arrays only (detectron2's ``.pkl`` model files); anything that could run
    code is refused."""

    ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
        ("numpy", "ndarray"), ("numpy", "dtype"), ("collections", "OrderedDict"),
    }

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"global {module}.{name} is not allowed")
        return super().find_class(module, name)


def read_source(path: str | Path) -> dict:
    """The file's top-level dict: a torch file read with ``weights_only=True``, or a pickle of numpy arrays."""
    path = Path(path)
    if not path.is_file():
        raise DHError(f"source weights {path} not found; download the file first (nothing is fetched)")
    if zipfile.is_zipfile(path):
        try:
            data = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # noqa: BLE001 - the file is at fault, whatever the unpickler says
            raise DHError(f"source weights {path} could not be read safely ({type(exc).__name__}: "
                          f"{str(exc).splitlines()[0][:120]})") from None
    else:
        try:
            with open(path, "rb") as f:
                data = _NumpyOnly(f, encoding="latin1").load()
        except Exception as exc:  # noqa: BLE001
            raise DHError(f"source weights {path} is neither a PyTorch file nor a pickle of numpy arrays "
                          f"({type(exc).__name__}: {str(exc).splitlines()[0][:120] if str(exc) else ''})") from None
    if not isinstance(data, dict):
        raise DHError(f"source weights {path} hold a {type(data).__name__}, not a dict of tensors")
    return data


def state_dict_of(data: dict, inner: tuple[str, ...], path: str) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """The weights inside a checkpoint (``data[k]`` for the first ``k`` of ``inner`` present, else ``data``) as
    float tensors, and the top-level entries dropped with their reasons."""
    dropped: dict[str, str] = {}
    state = data
    for key in inner:
        if isinstance(data.get(key), dict):
            state = data[key]
            for other in data:
                if other != key:
                    reason = TOP_LEVEL_DROPS.get(other)
                    if reason is None:
                        raise DHError(f"source weights {path}: unknown top-level entry '{other}' beside '{key}'")
                    dropped[other] = reason
            break
    tensors = {}
    for k, v in state.items():
        if k in TOP_LEVEL_DROPS and state is data:
            dropped[k] = TOP_LEVEL_DROPS[k]
            continue
        if hasattr(v, "dtype") and not isinstance(v, torch.Tensor):  # a numpy array
            v = torch.from_numpy(v.copy())
        if not isinstance(v, torch.Tensor):
            raise DHError(f"source weights {path}: entry '{k}' is a {type(v).__name__}, not a tensor")
        tensors[k] = v
    return tensors, dropped


def strip_prefix(state: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """Keys without ``prefix`` where every key has it (``module.`` of DistributedDataParallel)."""
    if state and all(k.startswith(prefix) for k in state):
        return {k[len(prefix):]: v for k, v in state.items()}
    return state


def apply_rules(state: dict[str, torch.Tensor], rules: list[Rule], path: str
                ) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Map every source key by the first rule that matches it: (our state dict, {dropped key: reason})."""
    mapped: dict[str, torch.Tensor] = {}
    dropped: dict[str, str] = {}
    unknown: list[str] = []
    rules = [drop(r".*\.num_batches_tracked", BN_COUNTER_REASON), *rules]
    compiled = [(re.compile(r.pattern), r) for r in rules]
    for key, tensor in state.items():
        for regex, rule in compiled:
            match = regex.fullmatch(key)
            if match is None:
                continue
            if rule.target is None:
                dropped[key] = rule.reason
            else:
                target = rule.target(match) if callable(rule.target) else match.expand(rule.target)
                if target in mapped:
                    raise DHError(f"source weights {path}: two keys map to {target} (the second is {key})")
                mapped[target] = rule.transform(tensor) if rule.transform else tensor
            break
        else:
            unknown.append(key)
    if unknown:
        raise DHError(f"source weights {path}: {len(unknown)} keys neither mapped nor dropped: "
                      f"{listed(sorted(unknown))}")
    return mapped, dropped


def load_converted(cfg: Config, weights: dict[str, torch.Tensor], path: str):
    """Build ``cfg``'s model and load the mapped weights strictly: every key of ours filled, every mapped key used,
    every shape equal. BatchNorm counters the source does not have start at 0."""
    from dhanalysis.model.build import build_model

    model = build_model(cfg, pretrained=False)  # every weight comes from the source
    own = model.state_dict()
    weights = dict(weights)
    for key in own:
        if key.endswith(NUM_BATCHES) and key not in weights:
            weights[key] = torch.zeros_like(own[key])
    missing = sorted(set(own) - set(weights))
    unexpected = sorted(set(weights) - set(own))
    if missing:
        raise DHError(f"source weights {path}: {len(missing)} weights of the model are missing: {listed(missing)}")
    if unexpected:
        raise DHError(f"source weights {path}: {len(unexpected)} mapped weights have no place in the model: "
                      f"{listed(unexpected)}")
    wrong = sorted(k for k in own if own[k].shape != weights[k].shape)
    if wrong:
        k = wrong[0]
        raise DHError(f"source weights {path}: {len(wrong)} weights of another shape, e.g. {k}: "
                      f"{tuple(weights[k].shape)} vs the model's {tuple(own[k].shape)}")
    model.load_state_dict({k: v.to(own[k].dtype) for k, v in weights.items()})
    model.eval()
    return model


def resnet_depth(state: dict[str, torch.Tensor], stage3_block: str, path: str) -> str:
    """``resnet50`` or ``resnet101`` from the number of blocks of stage 3 (conv4_x): 6 or 23.

    ``stage3_block`` is a regex whose group 1 is the block index within that stage.
    """
    regex = re.compile(stage3_block)
    blocks = {int(m.group(1)) for k in state if (m := regex.fullmatch(k))}
    depth = {6: "resnet50", 23: "resnet101"}.get(len(blocks))
    if depth is None:
        raise DHError(f"source weights {path}: a ResNet with {len(blocks)} blocks in its third stage is neither "
                      "R-50 (6) nor R-101 (23)")
    return depth


def shape(state: dict[str, torch.Tensor], key: str, path: str) -> tuple[int, ...]:
    """The shape of a key every source of this kind has; its absence is a one-line error."""
    if key not in state:
        raise DHError(f"source weights {path}: missing {key}; is this the right --from?")
    return tuple(state[key].shape)


def background_last_settings(slots: int, reg_rows: int) -> dict[str, Any]:
    """Config values for a classifier with the background in its last slot (detectron2, mmdetection) and a
    regressor of one box per foreground class, or one class-agnostic box (``reg_rows`` = 4)."""
    classes = slots - 1
    return {"model.num_classes": classes, "model.num_slots": slots, "model.class_slots": [classes, *range(classes)],
            "model.reg_layout": "agnostic" if reg_rows == 4 else "per_foreground"}
