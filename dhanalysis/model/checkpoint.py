"""Checkpoints that rebuild their own model and cannot run code.

A checkpoint is a plain dict: ``format``, ``config`` (the whole `Config` as plain data), ``model`` (state dict) and,
for training, ``optimizer``, ``scheduler``, ``iteration`` and RNG states. It is always read with
``torch.load(weights_only=True)``, so a pickle that tries to run code is refused, and always written atomically
(temporary file, then rename), so a crash never leaves a half-written checkpoint under the real name.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from dhanalysis.config import Config, config_from_dict, config_to_dict
from dhanalysis.errors import DHError
from dhanalysis.folders import atomic_torch_save
from dhanalysis.vocab import FINAL_CHECKPOINT

FORMAT = "dhanalysis-checkpoint-v1"


def save_checkpoint(path: str | Path, model: torch.nn.Module, **extra: Any) -> None:
    """Save weights and config (plus any training state given as keyword arguments)."""
    state = {"format": FORMAT, "config": config_to_dict(model.config), "model": model.state_dict(), **extra}
    atomic_torch_save(state, path)


def read_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict:
    """The checkpoint's dict, read safely; every way a file can be wrong is a one-line `DHError`."""
    path = Path(path)
    if not path.exists():
        raise DHError(f"checkpoint {path} does not exist; train one with 'dhanalysis train' or check the path")
    if path.is_dir():
        final = path / FINAL_CHECKPOINT
        hint = f" (did you mean {final}?)" if final.exists() else ""
        raise DHError(f"checkpoint {path} is a folder, not a file{hint}")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except PermissionError:
        raise DHError(f"checkpoint {path} cannot be read (permission denied); fix its permissions or copy it") from None
    except Exception as exc:  # noqa: BLE001 - the file is at fault, whatever the unpickler says
        # every refusal of the safe unpickler mentions weights_only, garbage included: tell the two apart
        text = str(exc)
        if re.search(r"unsupported global", text, re.IGNORECASE):
            raise DHError(
                f"checkpoint {path} contains Python objects that could run code; refused to load it "
                "(only plain tensors and data are accepted)"
            ) from None
        if "Unsupported operand" in text and _is_raw_pickle(path):
            raise DHError(
                f"checkpoint {path} is a raw Python pickle, which could run code; refused to load it (only files "
                "written by torch.save with plain tensors and data are accepted)"
            ) from None
        raise DHError(f"checkpoint {path} is truncated or not a PyTorch file ({type(exc).__name__}); re-create it") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        if _looks_like_torchvision(state):
            raise DHError(f"checkpoint {path} looks like a torchvision state dict (keys such as backbone.body.*, "
                          "roi_heads.box_head.*), not a dhanalysis checkpoint; convert it first: dhanalysis convert "
                          f"--from torchvision {path} --out CKPT.pth, then pass CKPT.pth")
        raise DHError(f"checkpoint {path} was not written by dhanalysis (no '{FORMAT}' marker)")
    return state


def _looks_like_torchvision(state: Any) -> bool:
    """True for the weights of torchvision's Faster R-CNN, bare or under a 'model' key (its reference training
    script's form): the commonest file given by mistake, which 'dhanalysis convert' turns into a checkpoint."""
    if isinstance(state, dict) and isinstance(state.get("model"), dict):
        state = state["model"]
    if not isinstance(state, dict):
        return False
    keys = [k for k in state if isinstance(k, str)]
    return (any(k.startswith("backbone.body.") for k in keys)
            and any(k.startswith(("roi_heads.box_head.", "roi_heads.box_predictor.")) for k in keys))


def checkpoint_name(path: str | Path) -> str:
    """The model name a checkpoint's config holds (what names its results folder), read without loading the
    weights where the file allows (memory-mapped); a bad file is the one-line `DHError` `read_checkpoint` gives."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception:  # noqa: BLE001 - not mappable (an old format) or not a checkpoint: read it the full way
        state = None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        state = read_checkpoint(path)
    try:
        return config_from_dict(state["config"]).name
    except DHError as exc:
        raise DHError(f"checkpoint {path} holds a config this version cannot read: {exc}") from None


def check_model_names(ckpts: Sequence[str | Path], names: Sequence[str] = (), flag: str = "--name") -> list[str]:
    """The name of each checkpoint's model (``names`` when given, else each config's), checked before any model runs:
    every model writes its own results folder, so a name that cannot name a folder or that two checkpoints share
    would otherwise stop a multi-model command after the first model's results are written. ``flag``: the option
    that gives names, for the remedy. Returns the names (none for a lone checkpoint without ``names``, which is not
    read); ``names`` of another count than ``ckpts`` are left to the caller's own check."""
    if names and len(names) != len(ckpts):
        return list(names)
    if len(ckpts) < 2 and not names:
        return []  # one model: its name is checked as it loads, before anything is written
    found = list(names) if names else [checkpoint_name(c) for c in ckpts]
    first: dict[str, str] = {}
    for ckpt, name in zip(map(str, ckpts), found):
        if not name or "/" in name or name in (".", ".."):
            raise DHError(f"model name '{name}' of {ckpt} cannot name a folder; give it another with {flag}")
        if name in first:
            clash = (f"{first[name]} and {ckpt} are both given the name '{name}'" if names else
                     f"checkpoints {first[name]} and {ckpt} both hold a model named '{name}'")
            raise DHError(f"{clash} and each model needs its own results folder; give each checkpoint its own {flag}")
        first[name] = ckpt
    return found


def _is_raw_pickle(path: Path) -> bool:
    """True when the file starts like a pickle of protocol 2..5 (a PROTO opcode), not a torch zip archive."""
    with open(path, "rb") as f:
        head = f.read(2)
    return len(head) == 2 and head[0] == 0x80 and 2 <= head[1] <= 5


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu", config: Config | None = None):
    """Rebuild the model a checkpoint was saved from and load its weights (eval mode).

    ``config``: load the weights into this config's model instead; differing keys or shapes are reported by name.
    """
    from dhanalysis.model.build import build_model

    state = read_checkpoint(path, map_location)
    try:
        stored = config_from_dict(state["config"])
    except DHError as exc:
        raise DHError(f"checkpoint {path} holds a config this version cannot read: {exc}") from None
    cfg = config or stored
    if config is not None and config.model.variant != stored.model.variant:
        raise DHError(
            f"checkpoint {path} is a '{stored.model.variant}' model but the config asks for '{config.model.variant}'"
        )
    model = build_model(cfg, num_classes=stored.model.num_classes, pretrained=False)  # the state replaces them
    load_state_checked(model, state["model"], str(path))
    model.to(map_location)
    model.eval()
    return model


def load_state_checked(model: torch.nn.Module, weights: dict, source: str) -> None:
    """``load_state_dict`` that names the keys that are missing, unexpected or of another shape."""
    own = model.state_dict()
    missing = sorted(set(own) - set(weights))
    unexpected = sorted(set(weights) - set(own))
    wrong = sorted(k for k in set(own) & set(weights) if own[k].shape != weights[k].shape)
    if missing or unexpected or wrong:
        parts = []
        if missing:
            parts.append(f"missing {len(missing)} (e.g. {', '.join(missing[:3])})")
        if unexpected:
            parts.append(f"unexpected {len(unexpected)} (e.g. {', '.join(unexpected[:3])})")
        if wrong:
            k = wrong[0]
            parts.append(f"{len(wrong)} of another shape (e.g. {k}: {tuple(weights[k].shape)} vs {tuple(own[k].shape)})")
        raise DHError(f"weights in {source} do not fit the model: {'; '.join(parts)}")
    model.load_state_dict(weights)
