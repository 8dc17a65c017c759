"""Rule tables for the ResNet body as detectron2 and maskrcnn-benchmark name it (torchvision's and mmdetection's names
are ours already)."""

from __future__ import annotations

from dhanalysis.model.convert.common import Rule, keep

BN = r"(weight|bias|running_mean|running_var)"


def detectron2_resnet(prefix: str = r"backbone\.bottom_up\.") -> list[Rule]:
    """detectron2: ``stem.conv1`` (+ ``.norm``), ``res2..res5.{i}.conv{1,2,3}`` (+ ``.norm``), ``.shortcut``."""
    stage = lambda m: f"layer{int(m.group(1)) - 1}"  # noqa: E731 - res2 is layer1
    return [
        keep(prefix + r"stem\.conv1\.weight", "backbone.body.conv1.weight"),
        keep(prefix + r"stem\.conv1\.norm\." + BN, r"backbone.body.bn1.\1"),
        keep(prefix + r"res([2-5])\.(\d+)\.conv([1-3])\.weight",
             lambda m: f"backbone.body.{stage(m)}.{m.group(2)}.conv{m.group(3)}.weight"),
        keep(prefix + r"res([2-5])\.(\d+)\.conv([1-3])\.norm\." + BN,
             lambda m: f"backbone.body.{stage(m)}.{m.group(2)}.bn{m.group(3)}.{m.group(4)}"),
        keep(prefix + r"res([2-5])\.(\d+)\.shortcut\.weight",
             lambda m: f"backbone.body.{stage(m)}.{m.group(2)}.downsample.0.weight"),
        keep(prefix + r"res([2-5])\.(\d+)\.shortcut\.norm\." + BN,
             lambda m: f"backbone.body.{stage(m)}.{m.group(2)}.downsample.1.{m.group(3)}"),
    ]


def maskrcnn_benchmark_resnet(frozen_bn_eps: float) -> list[Rule]:
    """maskrcnn-benchmark: ``body.stem.conv1`` / ``bn1``, ``body.layer1..4`` with torchvision's block names.

    Its FrozenBatchNorm2d divides by √var without an epsilon; ours adds 1e-5, so the variance is stored less it.
    """
    var = lambda t: t - frozen_bn_eps  # noqa: E731
    return [
        keep(r"backbone\.body\.stem\.conv1\.weight", "backbone.body.conv1.weight"),
        keep(r"backbone\.body\.stem\.bn1\.running_var", "backbone.body.bn1.running_var", var),
        keep(r"backbone\.body\.stem\.bn1\.(weight|bias|running_mean)", r"backbone.body.bn1.\1"),
        keep(r"backbone\.body\.(layer[1-4]\.\d+\.(?:bn[1-3]|downsample\.1))\.running_var",
             r"backbone.body.\1.running_var", var),
        keep(r"backbone\.body\.(layer[1-4]\.\d+\.(?:conv[1-3]\.weight|downsample\.0\.weight|"
             r"(?:bn[1-3]|downsample\.1)\.(?:weight|bias|running_mean)))", r"backbone.body.\1"),
    ]
