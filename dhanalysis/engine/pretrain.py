"""Backbone pretraining by classifying box crops: the synthetic stand-in for ImageNet weights.

The paper fine-tunes detectors from ImageNet-pretrained ResNets with frozen BatchNorm (§5.1). Nothing is downloaded
here, so for CPU work on the synthetic dataset we pretrain the ResNet ourselves, once, on crops of the training
split's ground-truth boxes (plus background crops that overlap no box), then every variant fine-tunes from the same
weights, as in the paper. Crops come from RoIAlign on the decoded images, so a whole batch of jittered, rescaled
crops costs one vectorised call. The output is a plain ResNet state dict: ``model.backbone.weights=PATH``.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torchvision.models import resnet
from torchvision.ops import box_iou, roi_align

from dhanalysis.data.coco import CocoDataset
from dhanalysis.errors import DHError
from dhanalysis.folders import atomic_torch_save

log = logging.getLogger(__name__)

MEAN = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
STD = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)


def _load_split(dataset: CocoDataset) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """All images (N, 3, S, S) uint8 (padded to the largest), boxes (M, 5) [image, x1, y1, x2, y2], labels (M,)."""
    images, boxes, labels = [], [], []
    for i in range(len(dataset)):
        img, target = dataset[i]
        images.append((img * 255).round().to(torch.uint8))
        b = target["boxes"]
        boxes.append(torch.cat([torch.full((len(b), 1), float(i)), b], dim=1))
        labels.append(target["labels"])
    h = max(im.shape[1] for im in images)
    w = max(im.shape[2] for im in images)
    batch = torch.zeros(len(images), 3, h, w, dtype=torch.uint8)
    for i, im in enumerate(images):
        batch[i, :, : im.shape[1], : im.shape[2]] = im
    return batch, torch.cat(boxes), torch.cat(labels)


def _sample_crops(
    images: torch.Tensor, boxes: torch.Tensor, labels: torch.Tensor, batch: int, crop: int, g: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """A batch of normalised crops (B, 3, crop, crop) and labels: 3/4 jittered object boxes, 1/4 background."""
    n_obj = batch * 3 // 4
    idx = torch.randint(len(boxes), (n_obj,), generator=g)
    b = boxes[idx]
    wh = (b[:, 3:5] - b[:, 1:3]).clamp(min=4)
    centre = (b[:, 1:3] + b[:, 3:5]) / 2 + (torch.rand(n_obj, 2, generator=g) - 0.5) * 0.3 * wh
    scale = 1.15 + 0.5 * torch.rand(n_obj, 1, generator=g)
    side = (wh * scale).max(dim=1, keepdim=True).values.expand(-1, 2)
    obj = torch.cat([b[:, :1], centre - side / 2, centre + side / 2], dim=1)

    n_bg = batch - n_obj
    h, w = images.shape[2:]
    img_idx = torch.randint(len(images), (n_bg * 4,), generator=g).float()
    size = 16 + torch.rand(n_bg * 4, 1, generator=g) * (min(h, w) / 2)
    xy = torch.rand(n_bg * 4, 2, generator=g) * (torch.tensor([w, h]) - size)
    bg = torch.cat([img_idx[:, None], xy, xy + size], dim=1)
    iou = torch.zeros(len(bg))
    for i in img_idx.unique():
        sel, own = img_idx == i, boxes[:, 0] == i
        if own.any():
            iou[sel] = box_iou(bg[sel, 1:], boxes[own, 1:]).max(dim=1).values
    bg = bg[iou < 0.3][:n_bg]
    rois = torch.cat([obj, bg])
    target = torch.cat([labels[idx], torch.zeros(len(bg), dtype=torch.long)])
    # convert only the images this batch crops from
    used, local = rois[:, 0].long().unique(return_inverse=True)
    rois = torch.cat([local[:, None].float(), rois[:, 1:]], dim=1)
    crops = roi_align(images[used].float() / 255, rois, (crop, crop), spatial_scale=1.0, sampling_ratio=2,
                      aligned=True)
    flip = torch.rand(len(crops), generator=g) < 0.5
    crops[flip] = crops[flip].flip(-1)
    return (crops - MEAN) / STD, target


def pretrain_backbone(
    root: str | Path,
    split: str,
    out: str | Path,
    arch: str = "resnet18",
    iterations: int = 600,
    batch_size: int = 64,
    crop_size: int = 48,
    lr: float = 0.05,
    seed: int = 0,
    progress: bool = True,
) -> Path:
    """Train ``arch`` to classify box crops (C classes + background) and save its state dict (no ``fc``) to ``out``.

    ``lr`` is the OneCycle peak. At 0.1 the loss jumps during the warm-up (1.6 to 3.5 around iteration 35, LR ~0.035)
    and where it lands depends on the machine's kernels: 600 iterations gave a crop accuracy of 0.840 on one two-core
    machine and 0.700 on another, the same seed bit for bit. At 0.05 the same run gives 0.922 there (0.02: 0.901), and
    every detector fine-tuned from these weights inherits the difference.
    """
    if arch not in ("resnet18", "resnet34", "resnet50", "resnet101"):
        raise DHError(f"unknown backbone '{arch}'; choose resnet18, resnet34, resnet50 or resnet101")
    out = Path(out)
    start = time.perf_counter()
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    dataset = CocoDataset(root, split, train=True)
    images, boxes, labels = _load_split(dataset)
    if not len(boxes):
        raise DHError(f"{root}/{split} has no boxes to pretrain on")
    net = getattr(resnet, arch)(num_classes=dataset.num_classes + 1)
    accuracy = _train_on_crops(net, (images, boxes, labels), g, iterations, batch_size, crop_size, lr,
                               f"pretrain {arch}" if progress else None)
    state = {k: v for k, v in net.state_dict().items() if not k.startswith("fc.")}
    atomic_torch_save(state, out)
    log.info("pretrained %s on %d boxes of %s/%s in %.0fs (crop accuracy %.3f over the last quarter); wrote %s",
             arch, len(boxes), root, split, time.perf_counter() - start, accuracy, out)
    return out


def _train_on_crops(net: torch.nn.Module, split: tuple[torch.Tensor, torch.Tensor, torch.Tensor], g: torch.Generator,
                    iterations: int, batch_size: int, crop_size: int, lr: float, progress: str | None) -> float:
    """Train ``net`` in place on fresh crops of ``split`` (`_load_split`'s images, boxes, labels) every iteration,
    SGD under a OneCycle schedule peaking at ``lr``; returns the crop accuracy over the last quarter of the
    iterations, the one number that says whether the weights are worth fine-tuning from. ``progress``: the
    description of a progress bar (None: no bar)."""
    opt = torch.optim.SGD(net.parameters(), lr=lr, momentum=0.9, weight_decay=1e-4, nesterov=True)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=iterations, pct_start=0.15)
    bar = None
    if progress is not None:
        from tqdm import tqdm

        bar = tqdm(total=iterations, desc=progress, unit="it", dynamic_ncols=True)
    net.train()
    correct = seen = 0
    for it in range(iterations):
        x, y = _sample_crops(*split, batch_size, crop_size, g)
        logits = net(x)
        loss = F.cross_entropy(logits, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if it >= iterations * 3 // 4:  # accuracy over the last quarter, on fresh crops
            correct += int((logits.argmax(1) == y).sum())
            seen += len(y)
        if bar is not None:
            bar.update(1)
            bar.set_postfix(loss=f"{loss.item():.3f}")
    if bar is not None:
        bar.close()
    return correct / max(seen, 1)
