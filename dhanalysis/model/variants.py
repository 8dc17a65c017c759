"""The rules that turn the paper's head variants into loss weights and inference modes (Fig. 1, Table 1, §4.2).

The variants themselves are data, in `dhanalysis.vocab.VARIANTS` (figures read them without importing the model).
Each variant is a small table of *branches*. A branch is one head (an fc-head or a conv-head) and says which task it
focuses on. Its two loss weights follow from the config's ω (per head type) and λ (per head type) by one rule,
`branch_loss_weights`, so that Eq. 1-3 live in one place:

- a branch that does both tasks with equal weight (the single heads): cls = reg = ω;
- a branch that does only its focused task (Double-FC, Double-Conv, Double-Head-Reverse): focused = ω, other = 0;
- a *balanced* branch (Double-Head, Double-Head-Ext): focused = ω·λ, unfocused = ω·(1 − λ), where the fc-head focuses
  on classification (Eq. 2) and the conv-head on regression (Eq. 3). Vanilla Double-Head is λ_fc = λ_conv = 1.

A task whose weight is 0 gets no predictor layer at all, so it can neither receive gradient nor be used at inference
by mistake.
"""

from __future__ import annotations

from dhanalysis.config import LossConfig
from dhanalysis.errors import DHError
from dhanalysis.vocab import (INFERENCE_MODES, MODE_ALIASES, VARIANTS, BranchSpec, InferenceMode, Variant,
                              lookup_mode)


def get_variant(name: str) -> Variant:
    """The variant called ``name``; an unknown name is a `DHError` listing the known ones."""
    try:
        return VARIANTS[name]
    except KeyError:
        raise DHError(f"unknown variant '{name}'; choose one of: {', '.join(VARIANTS)}") from None


def branch_loss_weights(spec: BranchSpec, loss: LossConfig) -> dict[str, float]:
    """The (cls, reg) loss weights of one branch: ω and λ of Eq. 1-3 applied to the branch's focus."""
    omega = loss.w_fc if spec.head == "fc" else loss.w_conv
    if spec.focus is None:
        return {"cls": omega, "reg": omega}
    other = "reg" if spec.focus == "cls" else "cls"
    lam = (loss.lambda_fc if spec.head == "fc" else loss.lambda_conv) if spec.balanced else 1.0
    if not 0.0 <= lam <= 1.0:
        raise DHError(f"loss.lambda_{spec.head} must lie in [0, 1], got {lam}")
    return {spec.focus: omega * lam, other: omega * (1.0 - lam)}


def effective_loss_weights(variant: str, loss: LossConfig) -> dict[tuple[str, str], float]:
    """{(head type, task): weight} over all branches, e.g. {("conv", "cls"): 0.5, ...} for Double-Head-Ext."""
    weights: dict[tuple[str, str], float] = {}
    for spec in get_variant(variant).branches:
        for task, w in branch_loss_weights(spec, loss).items():
            weights[(spec.head, task)] = weights.get((spec.head, task), 0.0) + w
    return weights


# --- inference modes (Fig. 8 a-d, Table 3): rows of `dhanalysis.vocab.INFERENCE_MODES` -----------------------
def parse_mode(mode: str) -> InferenceMode:
    """The `InferenceMode` row a name (or alias: ``none``, ``<source>-cls+<head>-reg``) stands for; an unknown name
    is a `DHError` listing the modes."""
    row = lookup_mode(mode)
    if row is None:
        raise DHError(f"unknown inference mode '{mode}'; use one of {', '.join(INFERENCE_MODES)} "
                      f"(or none = {MODE_ALIASES['none']})")
    return row


def available_tasks(variant: str, loss: LossConfig) -> set[tuple[str, str]]:
    """(head type, task) pairs that the model has a trained predictor for."""
    return {key for key, w in effective_loss_weights(variant, loss).items() if w > 0}


def mode_requirements(mode: str) -> list[tuple[str, str]]:
    """(head type, task) pairs a mode reads: each classifier it scores with, then its box regressor."""
    row = parse_mode(mode)
    return [(head, "cls") for head in row.cls] + [(row.reg, "reg")]


def check_mode(variant: str, loss: LossConfig, mode: str) -> None:
    """Raise a DHError naming the missing branch and the config value that removed it."""
    have = available_tasks(variant, loss)
    for head, task in mode_requirements(mode):
        if (head, task) in have:
            continue
        what = "classifier" if task == "cls" else "box regressor"
        in_variant = any(s.head == head for s in get_variant(variant).branches)
        if not in_variant:
            reason = f"variant '{variant}' has no {head}-head"
        else:
            key = f"loss.lambda_{head}"
            value = getattr(loss, f"lambda_{head}")
            reason = f"it was trained without one ({key} = {value}, loss.w_{head} = {getattr(loss, 'w_' + head)})"
        raise DHError(
            f"mode '{mode}' needs the {head}-head {what}, but {reason}; choose another inference mode (--modes)"
        )


def applicable_modes(variant: str, loss: LossConfig) -> list[str]:
    """Every inference mode this model supports, in the order of Table 3 / Fig. 8."""
    have = available_tasks(variant, loss)
    return [m for m in INFERENCE_MODES if all(req in have for req in mode_requirements(m))]


def default_mode(variant: str, loss: LossConfig) -> str:
    """The variant's own mode when the model supports it, otherwise the first mode it does support."""
    preferred = get_variant(variant).default_mode
    modes = applicable_modes(variant, loss)
    if preferred in modes:
        return preferred
    if not modes:
        raise DHError(f"variant '{variant}' with these loss weights has no classifier and box regressor to detect with")
    return modes[0]
