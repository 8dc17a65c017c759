"""Heads, variants, RoI heads, model building, checkpoints and parameter counts."""

from dhanalysis.model.build import DoubleHeadRCNN, build_model
from dhanalysis.model.checkpoint import load_checkpoint, read_checkpoint, save_checkpoint
from dhanalysis.model.variants import VARIANTS, get_variant

__all__ = ["DoubleHeadRCNN", "build_model", "load_checkpoint", "read_checkpoint", "save_checkpoint", "VARIANTS",
           "get_variant"]
