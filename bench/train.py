"""Training seconds per iteration: our Single-FC vs torchvision's stock Faster R-CNN, Double-Head-Ext vs Single-FC, and
Double-Head-Ext vs the same model with its conv-head trained as the stock NCHW modules.

Every model gets the same ResNet-18-FPN backbone weights (`build_backbone`), the same RPN and box-sampling settings,
the same two 320-pixel images and targets, and SGD; iterations are interleaved after a warm-up. torchvision's model
is ``FasterRCNN`` with its default ``MultiScaleRoIAlign``, ``TwoMLPHead`` and ``FastRCNNPredictor``.
"""

from __future__ import annotations

import copy

import torch
from torchvision.models.detection import FasterRCNN

from bench.common import interleaved, log, paired_ratio
from dhanalysis.config import load_config
from dhanalysis.model import build_model
from dhanalysis.model.heads import detected_training_form

SIZE = 320  # small but real: 2 images × 320² keeps ~12 iterations inside the time budget on 2 busy cores


def small_config(variant: str, box_batch: int):
    return load_config(f"configs/coco/r50/{variant}.yaml", [
        "model.num_classes=80", "model.backbone.name=resnet18", f"model.min_size={SIZE}", f"model.max_size={SIZE}",
        f"model.box_batch_size_per_image={box_batch}"])


def inputs(device: str, seed: int = 0) -> tuple[list[torch.Tensor], list[dict[str, torch.Tensor]]]:
    """Two random ``SIZE``² images with four boxes each."""
    g = torch.Generator().manual_seed(seed)
    images = [torch.rand(3, SIZE, SIZE, generator=g).to(device) for _ in range(2)]
    targets = []
    for _ in images:
        xy = torch.rand(4, 2, generator=g) * (SIZE - 200)
        wh = 40 + torch.rand(4, 2, generator=g) * 160
        targets.append({"boxes": torch.cat([xy, xy + wh], 1).to(device),
                        "labels": torch.randint(1, 81, (4,), generator=g).to(device)})
    return images, targets


def torchvision_twin(ours) -> FasterRCNN:
    """torchvision's stock Faster R-CNN with ``ours``' backbone weights, anchors, sizes and sampling settings."""
    m = ours.config.model
    rpn = ours.rpn
    return FasterRCNN(
        copy.deepcopy(ours.backbone), num_classes=m.num_classes + 1, min_size=m.min_size, max_size=m.max_size,
        rpn_anchor_generator=copy.deepcopy(rpn.anchor_generator),
        rpn_pre_nms_top_n_train=m.rpn.pre_nms_top_n_train, rpn_post_nms_top_n_train=m.rpn.post_nms_top_n_train,
        rpn_nms_thresh=m.rpn.nms_thresh, rpn_batch_size_per_image=m.rpn.batch_size_per_image,
        rpn_positive_fraction=m.rpn.positive_fraction, box_batch_size_per_image=m.box_batch_size_per_image,
        box_positive_fraction=m.box_positive_fraction)


def step_fn(model, images, targets):
    """One SGD iteration (forward, backward, step) of a detection model in training mode."""
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.SGD(params, lr=1e-4, momentum=0.9)

    def step() -> None:
        losses = model(images, targets)
        opt.zero_grad(set_to_none=True)
        sum(losses.values()).backward()
        opt.step()
    return step


def run(device: str = "cpu", repeats: int = 3, ext_box_batch: int = 64) -> dict:
    """``{"single_fc_over_torchvision", "double_head_ext_over_single_fc", ...}`` (median paired ratios of s/iter)."""
    images, targets = inputs(device)
    torch.manual_seed(0)
    ours = build_model(small_config("single-fc", 512)).to(device)
    tv = torchvision_twin(ours).to(device)
    t = interleaved({"single_fc": step_fn(ours, images, targets), "torchvision": step_fn(tv, images, targets)},
                    repeats=repeats)
    out = {"images": 2, "size": SIZE, "backbone": "resnet18-fpn", "box_batch_size_per_image": 512,
           "single_fc_s_per_iter": t["single_fc"]["best"], "torchvision_s_per_iter": t["torchvision"]["best"],
           "single_fc_over_torchvision": paired_ratio(t, "single_fc", "torchvision"),
           "single_fc_over_torchvision_of_best": t["single_fc"]["best"] / t["torchvision"]["best"]}
    log(f"train: single-fc {out['single_fc_s_per_iter']:.2f} s/iter, torchvision {out['torchvision_s_per_iter']:.2f} "
        f"s/iter ({out['single_fc_over_torchvision']:.3f}x)")
    # the conv-head costs ~27x the fc-head per RoI: fewer RoIs per image keep this comparison inside the budget
    torch.manual_seed(0)
    fc_small = build_model(small_config("single-fc", ext_box_batch)).to(device)
    ext = build_model(small_config("double-head-ext", ext_box_batch)).to(device)
    ext_stock = copy.deepcopy(ext)  # the same model whose conv-head trains as the NCHW modules
    ext_stock.roi_heads.branches["conv"].head.training_form = "modules"
    ext_stock.roi_heads.branches["conv"].head.to(memory_format=torch.contiguous_format)  # NCHW weights too
    t = interleaved({"single_fc": step_fn(fc_small, images, targets), "ext": step_fn(ext, images, targets),
                     "ext_stock": step_fn(ext_stock, images, targets)}, repeats=min(3, repeats))
    out.update({"ext_box_batch_size_per_image": ext_box_batch, "ext_single_fc_s_per_iter": t["single_fc"]["best"],
                "double_head_ext_s_per_iter": t["ext"]["best"],
                "double_head_ext_stock_s_per_iter": t["ext_stock"]["best"],
                "double_head_ext_over_single_fc": paired_ratio(t, "ext", "single_fc"),
                "double_head_ext_over_stock_modules": paired_ratio(t, "ext", "ext_stock"),
                "conv_head_trains_in": detected_training_form(torch.device(device))})
    log(f"train: double-head-ext {out['double_head_ext_s_per_iter']:.2f} s/iter ({out['conv_head_trains_in']}), "
        f"{out['double_head_ext_stock_s_per_iter']:.2f} with the stock modules, single-fc "
        f"{out['ext_single_fc_s_per_iter']:.2f} at {ext_box_batch} RoIs/image")
    return out
