"""Where a study keeps things, as values: its folder layout (`Layout`), one (trunk, seed) replicate (`Replicate`),
and the protocol name its findings carry. The study's file names are in `dhanalysis.vocab` ("a reproduction"), beside
every other file name the package writes.

  layout = Layout(Path("work"), "reproduction", "synth")
  layout.replicate_results(trunk, 0)        # work/results/reproduction/single-fc-trunk/seed0
  layout.detections(trunk, 0)               # work/results/reproduction/single-fc-trunk/seed0/detections
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from dhanalysis.study.plan import Trunk
from dhanalysis.vocab import DETECTIONS_DIR

# How every head is trained: from scratch on a trunk's frozen backbone, FPN and RPN
PROTOCOL = "shared-trunk"


@dataclass(frozen=True)
class Replicate:
    """One (trunk, seed) of a study: its name is its folder under the results and checkpoints
    (``<trunk>-trunk/seed<seed>``); a summary stores the two fields, so nothing reads them back from the name."""

    trunk: str  # the trunk's name (`plan.Trunk.name`)
    seed: int

    @property
    def name(self) -> str:
        return f"{self.trunk}-trunk/seed{self.seed}"

    def fields(self) -> dict:
        """What a summary records beside the replicate's checks."""
        return {"trunk": self.trunk, "seed": self.seed}

    @classmethod
    def of(cls, record: dict, name: str) -> Replicate:
        """The replicate a summary's entry ``name`` describes: its recorded fields; a summary written before they
        were recorded holds the name alone, read here, the one place that knows how `name` is built."""
        if "trunk" in record and "seed" in record:
            return cls(str(record["trunk"]), int(record["seed"]))
        trunk, _, seed = name.partition("/")
        return cls(trunk.removesuffix("-trunk"), int(seed.removeprefix("seed")))


@dataclass(frozen=True)
class Layout:
    """Where a study under ``work`` (outputs tagged ``tag``) keeps everything."""

    work: Path
    tag: str
    data_dir: str

    @property
    def data(self) -> Path:
        return self.work / "data" / self.data_dir

    @property
    def checkpoints(self) -> Path:
        return self.work / "checkpoints" / self.tag

    @property
    def results(self) -> Path:
        return self.work / "results" / self.tag

    @property
    def figures(self) -> Path:
        return self.work / "figures" / self.tag

    @property
    def backbone(self) -> Path:
        return self.checkpoints / "resnet18-synth.pth"

    def trunk(self, trunk: Trunk) -> Path:
        return self.checkpoints / "trunks" / trunk.name

    def trunk_results(self, trunk: Trunk) -> Path:
        return self.results / "trunks" / trunk.name

    @staticmethod
    def replicate(trunk: Trunk, seed: int) -> Replicate:
        return Replicate(trunk.name, seed)

    def runs(self, trunk: Trunk, seed: int) -> Path:
        """Checkpoints of one replicate's head runs: ``<grid>/<run>/``."""
        return self.checkpoints / self.replicate(trunk, seed).name

    def replicate_results(self, trunk: Trunk, seed: int) -> Path:
        """One replicate's results tree: ``sweeps/<grid>/<run>/`` and ``<model>/`` (what figures and findings read)."""
        return self.results / self.replicate(trunk, seed).name

    def detections(self, trunk: Trunk, seed: int) -> Path:
        """One replicate's analyses of its models' detections files: ``<role>/`` (`dhanalysis detections`) and
        ``<a>-vs-<b>/`` (`dhanalysis compare`). They sit one level below the results tree, not beside its model
        folders: each holds an analysis's marker files (`results.MODEL_MARKERS`), and `results.discover_models`
        reads the tree's own sub-folders only, so the figures and findings never take them for models."""
        return self.replicate_results(trunk, seed) / DETECTIONS_DIR


__all__ = ["PROTOCOL", "Layout", "Replicate"]
