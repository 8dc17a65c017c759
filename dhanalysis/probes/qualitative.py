"""Where the heads disagree (paper A.3, Figs. A.4 and A.5): one Double-Head-Ext model read three ways on the same
images — conv-head alone (``conv``), fc-head alone (``fc``) and both heads (``complementary``) — and the images where
the paper's two kinds of disagreement are clearest.

- **Fig. A.4, the fc-head classifies better**: ground-truth objects the fc-head alone detects (a detection of the
  object's class with IoU ≥ 0.5 and score ≥ ``score_thresh``) and the conv-head alone misses.
- **Fig. A.5, the conv-head localises better**: duplicates, i.e. a second confident detection of one object (IoU ≥
  ``dup_iou`` with an object that already has a correct detection) that the fc-head alone keeps and the conv-head
  alone does not.

`disagreements` returns the tidy tables the figures draw: every confident detection of every mode on the picked
images plus their ground truth (mode ``ground-truth``, status naming the modes that found it;
``qualitative.csv``) and one row per image with its counts (``qualitative_images.csv``).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from dhanalysis.vocab import QUALITATIVE_CSV, QUALITATIVE_IMAGES_CSV, QUALITATIVE_MODES

MODES = QUALITATIVE_MODES
CONV_ALONE, FC_ALONE = MODES[:2]
DETECTION_COLUMNS = ("image_id", "file", "case", "mode", "x1", "y1", "x2", "y2", "label", "category", "score",
                     "gt_index", "iou", "status")
IMAGE_COLUMNS = ("image_id", "file", "case", "rank", "fc_only_found", "fc_extra_duplicates")


def _assign(boxes, labels, scores, gt, gt_labels, score_thresh: float, dup_iou: float):
    """Per detection: (matched ground truth or -1, its IoU, status: 'found' / 'duplicate' / 'other')."""
    import torch
    from torchvision.ops import box_iou

    keep = scores >= score_thresh
    boxes, labels, scores = boxes[keep], labels[keep], scores[keep]
    order = torch.argsort(scores, descending=True)
    boxes, labels, scores = boxes[order], labels[order], scores[order]
    iou = box_iou(boxes, gt) * (labels[:, None] == gt_labels[None, :]) if len(gt) else boxes.new_zeros(len(boxes), 0)
    found = torch.zeros(len(gt), dtype=torch.bool)
    rows = []
    for d in range(len(boxes)):
        best_iou, best = (iou[d].max(0) if iou.shape[1] else (boxes.new_tensor(0.0), torch.tensor(-1)))
        g, v = int(best), float(best_iou)
        if v >= 0.5 and not found[g]:
            found[g] = True
            status = "found"
        elif g >= 0 and found[g] and v >= dup_iou:
            status = "duplicate"
        else:
            status = "other"
        rows.append((boxes[d].tolist(), int(labels[d]), float(scores[d]), g if v > 0 else -1, v, status))
    return rows, found


def disagreements(model, dataset, device="cpu", max_images: int | None = None, score_thresh: float = 0.5,
                  dup_iou: float = 0.3, per_case: tuple[int, int] = (3, 2)) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(detections, images) for the ``per_case`` = (A.4, A.5) images of ``dataset`` where the heads disagree most.

    ``model`` must support the ``conv``, ``fc`` and ``complementary`` modes (a Double-Head-Ext with λ < 1).
    """
    import torch

    n = len(dataset) if max_images is None else min(len(dataset), max_images)
    names = dict(enumerate(dataset.category_names, start=1))
    per_image = []
    model.eval()
    with torch.no_grad():
        for index in range(n):
            image, target = dataset[index]
            keep = target["iscrowd"] == 0
            gt, gt_labels = target["boxes"][keep], target["labels"][keep]
            by_mode = model.predict_modes([image.to(device)], list(MODES))
            assigned = {}
            for mode in MODES:
                d = {k: v.cpu() for k, v in by_mode[mode][0].items()}
                assigned[mode] = _assign(d["boxes"], d["labels"], d["scores"], gt, gt_labels, score_thresh, dup_iou)
            fc_only = int((assigned[FC_ALONE][1] & ~assigned[CONV_ALONE][1]).sum())
            dups = {m: sum(r[5] == "duplicate" for r in assigned[m][0]) for m in MODES}
            per_image.append((index, int(target["image_id"]), fc_only, dups[FC_ALONE] - dups[CONV_ALONE], assigned))
    picks = []
    for case, key, count in (("A.4", 2, per_case[0]), ("A.5", 3, per_case[1])):
        ranked = sorted((p for p in per_image if p[key] > 0), key=lambda p: (-p[key], p[1]))[:count]
        picks += [(case, rank, p) for rank, p in enumerate(ranked, 1)]
    det_rows, image_rows = [], []
    for case, rank, (index, image_id, fc_only, extra_dups, assigned) in picks:
        file = str(dataset.image_path(index))
        image_rows.append((image_id, file, case, rank, fc_only, extra_dups))
        image, target = dataset[index]
        keep = target["iscrowd"] == 0
        for g, (box, label) in enumerate(zip(target["boxes"][keep].tolist(), target["labels"][keep].tolist())):
            found_by = [m for m in MODES if bool(assigned[m][1][g])]
            det_rows.append((image_id, file, case, "ground-truth", *box, label, names.get(label, str(label)),
                             float("nan"), g, 1.0, "found by " + (", ".join(found_by) if found_by else "none")))
        for mode in MODES:
            for box, label, score, g, v, status in assigned[mode][0]:
                det_rows.append((image_id, file, case, mode, *box, label, names.get(label, str(label)), score, g, v,
                                 status))
    return (pd.DataFrame(det_rows, columns=list(DETECTION_COLUMNS)),
            pd.DataFrame(image_rows, columns=list(IMAGE_COLUMNS)))


def write_disagreements(detections: pd.DataFrame, images: pd.DataFrame, folder: str | Path) -> None:
    from dhanalysis.folders import atomic_write_text

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write_text(folder / QUALITATIVE_CSV, detections.to_csv(index=False, float_format="%.4g"))
    atomic_write_text(folder / QUALITATIVE_IMAGES_CSV, images.to_csv(index=False))
