"""COCO box AP for every inference mode in one pass (Table 3, Fig. 8 a–d), by the package's COCO engine
(`dhanalysis.metrics.coco_match`, equal to pycocotools' COCOeval).

The backbone, RPN and RoI features are computed once per image; each mode only re-runs the cheap last step (score
fusion, box decoding, NMS). Detections are written as COCO results JSON with the dataset's original category ids.
Under torchrun the images are sharded over ranks and rank 0 merges the detections before scoring them.

``before_nms`` writes (and scores) every mode's detections before the per-class NMS and the per-image top-k, for
measures that need several boxes per object. A sidecar, ``eval_stage.json``, says which stage a folder's
detections files hold; it is eval's record of the folder, so the two stages never mix in one folder.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import pandas as pd
import torch
from torch.utils.data import DataLoader

from dhanalysis.data.coco import CocoDataset, collate_fn
from dhanalysis.engine.distributed import all_gather_object, get_rank, get_world_size, is_main
from dhanalysis.folders import FolderTaken, atomic_write_json, atomic_write_text, claim, read_json, write_table
from dhanalysis.metrics import coco_match
from dhanalysis.results import RESULTS, owned_paths
from dhanalysis.vocab import (AFTER_NMS, BEFORE_NMS, DETECTION_STAGES, EVAL_CSV, EVALUATED_IMAGES_JSON, METRICS,
                              PER_CLASS_AP_CSV, detections_file)

log = logging.getLogger(__name__)


def to_coco_results(dets: dict[str, torch.Tensor], image_id: int, label_to_cat_id: dict[int, int]) -> list[dict]:
    """One image's detections as COCO result records: bbox [x, y, w, h], original category ids, and each head's
    class score (``fc_score``, ``conv_score``: extra fields that `dhanalysis detections --score-field` reads). The
    model's boxes are continuous whatever its box convention (`dhanalysis.model.conventions.from_convention`)."""
    boxes = dets["boxes"].detach().cpu().double()
    xywh = torch.cat([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], dim=1).tolist()
    scores = dets["scores"].detach().cpu().tolist()
    labels = dets["labels"].detach().cpu().tolist()
    extra = {k: v.detach().cpu().tolist() for k, v in dets.items() if k.endswith("_score")}
    return [
        {"image_id": int(image_id), "category_id": int(label_to_cat_id[lab]), "bbox": [round(v, 3) for v in box],
         "score": round(float(s), 6), **{k: round(float(v[i]), 6) for k, v in extra.items()}}
        for i, (box, s, lab) in enumerate(zip(xywh, scores, labels))
    ]


def coco_ap(coco_gt, results: list[dict], image_ids: list[int]) -> tuple[dict[str, float], dict[int, float]]:
    """(summary metrics as fractions, per-category AP) of ``results`` against the ground truth ``coco_gt`` (a
    pycocotools COCO), on ``image_ids``, by the package's COCO engine (`coco_match`, equal to pycocotools' COCOeval).

    The summary is COCOeval's ``stats[0:6]`` (a metric without ground truth to count, -1 there, is 0). Per-category
    AP averages COCOeval's precision over IoU thresholds 0.5:0.95 and recall, area 'all', 100 detections, skipping
    the -1 entries of categories without ground truth that counts on these images; those categories get NaN.
    """
    gt = coco_gt.dataset
    ev = coco_match.evaluate(coco_match.ground_truth_boxes(gt), coco_match.result_boxes(results), image_ids,
                             [c["id"] for c in gt["categories"]])
    stats = coco_match.summarize(ev)
    summary = {name: max(float(stats[i]), 0.0) for i, name in enumerate(METRICS)}
    return summary, dict(zip(ev.params.catIds, (float(ap) for ap in coco_match.class_ap(ev))))


@torch.no_grad()
def collect_detections(
    model,
    dataset: CocoDataset,
    modes: list[str],
    device: torch.device,
    batch_size: int = 2,
    max_images: int | None = None,
    num_workers: int = 0,
    progress: bool = True,
    before_nms: bool = False,
) -> tuple[dict[str, list[dict]], list[int]]:
    """COCO result records per mode for this rank's share of the images (image i goes to rank i % world);
    ``before_nms``: every detection above the score threshold, no per-class NMS and no per-image top-k."""
    results, image_ids = collect_detections_together([model], dataset, [modes], device, batch_size, max_images,
                                                     num_workers, progress, before_nms)
    return results[0], image_ids


@torch.no_grad()
def collect_detections_together(
    models: list,
    dataset: CocoDataset,
    modes: list[list[str]],
    device: torch.device,
    batch_size: int = 2,
    max_images: int | None = None,
    num_workers: int = 0,
    progress: bool = True,
    before_nms: bool = False,
) -> tuple[list[dict[str, list[dict]]], list[int]]:
    """`collect_detections` of several models that share their backbone, FPN and RPN (heads on one frozen trunk):
    each batch runs the trunk once, on the first model, and every model's RoI heads on its features and proposals,
    so each model gets the detections it would get alone. ``modes[i]``: the modes of ``models[i]``."""
    rank, world = get_rank(), get_world_size()
    n = len(dataset) if max_images is None else min(len(dataset), max_images)
    indices = list(range(rank, n, world))
    subset = torch.utils.data.Subset(dataset, indices)
    loader = DataLoader(subset, batch_size=batch_size, collate_fn=collate_fn, num_workers=num_workers)
    results: list[dict[str, list[dict]]] = [{m: [] for m in ms} for ms in modes]
    image_ids: list[int] = []
    bar = None
    if progress and is_main():
        from tqdm import tqdm

        bar = tqdm(total=len(indices), desc="eval", unit="img", dynamic_ncols=True)
    lead = models[0]
    for model in models:
        model.eval()
    for images, targets in loader:
        images = [img.to(device) for img in images]
        trunk = lead.trunk_pass(images)
        outputs = [model.detect_modes(trunk, ms, suppress=not before_nms) for model, ms in zip(models, modes)]
        for by_mode, res in zip(outputs, results):
            for mode, dets in by_mode.items():
                for det, target in zip(dets, targets):
                    res[mode] += to_coco_results(det, int(target["image_id"]), dataset.label_to_cat_id)
        image_ids += [int(t["image_id"]) for t in targets]
        if bar is not None:
            bar.update(len(images))
    if bar is not None:
        bar.close()
    return results, image_ids


def evaluate(
    model,
    dataset: CocoDataset,
    modes: list[str] | None = None,
    device: torch.device | str = "cpu",
    batch_size: int = 2,
    max_images: int | None = None,
    out: str | Path | None = None,
    name: str | None = None,
    num_workers: int = 0,
    progress: bool = True,
    before_nms: bool = False,
    overwrite: bool = False,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Evaluate ``modes`` (default: every mode the model supports) in one pass.

    Returns (``eval`` table: model, mode, AP, AP50, AP75, APs, APm, APl as fractions; ``per_class_ap`` table: model,
    mode, category_id, category, AP). With ``out``, rank 0 writes ``eval_stage.json`` first, then
    ``detections_<mode>.json``, ``evaluated_images.json``, ``per_class_ap.csv`` and ``eval.csv``.
    ``before_nms``: the detections, and the AP computed on them, are those before the per-class NMS and the per-image
    top-k (`claim_eval_folder` refuses a folder holding the other stage unless ``overwrite``).
    """
    return evaluate_together([model], dataset, [modes], device, batch_size, max_images, [out], [name], num_workers,
                             progress, before_nms, overwrite)[0]


def shared_trunk(models: list) -> bool:
    """Whether the models' backbones, FPNs, RPNs and input transforms are the same (objects or equal weights)."""
    lead = models[0]
    for model in models[1:]:
        if (model.transform.min_size, model.transform.max_size) != (lead.transform.min_size, lead.transform.max_size):
            return False
        for part in ("backbone", "rpn"):
            a, b = getattr(lead, part), getattr(model, part)
            if a is not b and any(not torch.equal(x, y) for x, y in zip(a.state_dict().values(),
                                                                          b.state_dict().values())):
                return False
    return True


def evaluate_together(
    models: list,
    dataset: CocoDataset,
    modes: list[list[str] | None] | None = None,
    device: torch.device | str = "cpu",
    batch_size: int = 2,
    max_images: int | None = None,
    outs: list[str | Path | None] | None = None,
    names: list[str | None] | None = None,
    num_workers: int = 0,
    progress: bool = True,
    before_nms: bool = False,
    overwrite: bool = False,
) -> list[tuple[pd.DataFrame, pd.DataFrame]]:
    """`evaluate` for models whose heads share one trunk: the trunk runs once per batch for all of them
    (`collect_detections_together`); each model's tables and files are what `evaluate` would write for it alone."""
    from dhanalysis.errors import DHError
    from dhanalysis.model.variants import applicable_modes

    if len(models) > 1 and not shared_trunk(models):
        raise DHError("models evaluated together must share their backbone, FPN, RPN and input size; evaluate them "
                      "one at a time")
    modes = [ms or applicable_modes(m.config.model.variant, m.config.model.loss)
             for m, ms in zip(models, modes or [None] * len(models))]
    outs, names = outs or [None] * len(models), names or [None] * len(models)
    for model, ms, out in zip(models, modes, outs):  # every folder before any image runs: a refusal loses nothing
        if out is not None:
            claim_eval_folder(out, detections_info(model, ms, before_nms), overwrite, writer=is_main())
    device = torch.device(device)
    start = time.perf_counter()
    results, image_ids = collect_detections_together(models, dataset, modes, device, batch_size, max_images,
                                                     num_workers, progress, before_nms)
    gathered = all_gather_object((results, image_ids))
    if not is_main():
        return [(pd.DataFrame(), pd.DataFrame()) for _ in models]
    image_ids = sorted({i for _, ids in gathered for i in ids})
    return [score_detections([res[i] for res, _ in gathered], image_ids, dataset, modes[i], outs[i],
                             names[i] or models[i].config.name, start) for i in range(len(models))]


EVAL_OUTPUTS = RESULTS["eval"]  # its record, DETECTIONS_INFO_JSON, is the sidecar of the detections files
STAGE_WORDS = {AFTER_NMS: "after NMS", BEFORE_NMS: "before NMS"}


def detections_info(model, modes: list[str], before_nms: bool) -> dict:
    """The sidecar of a model's detections files: their stage and what post-processed them (the score threshold
    always; the NMS threshold and the per-image cap only after NMS, since before it neither applies)."""
    heads = model.roi_heads
    return {"stage": BEFORE_NMS if before_nms else AFTER_NMS, "score_thresh": float(heads.score_thresh),
            "nms_thresh": None if before_nms else float(heads.nms_thresh),
            "max_per_image": None if before_nms else int(heads.detections_per_img), "modes": list(modes)}


def stored_stage(folder: str | Path) -> str | None:
    """The stage of the detections ``folder`` holds: its sidecar's, else ``after_nms`` when it holds eval outputs
    written before sidecars existed (eval wrote nothing else then), else None (nothing evaluated there yet)."""
    folder = Path(folder)
    record = folder / EVAL_OUTPUTS.summary
    if record.is_file():
        info = read_json(record)
        stage = info.get("stage") if isinstance(info, dict) else None
        if stage not in DETECTION_STAGES:
            raise FolderTaken(folder, f"{record} does not name the stage of the detections ({stage!r})")
        return stage
    return AFTER_NMS if any(p.exists() for p in owned_paths(folder, EVAL_OUTPUTS)) else None


def claim_eval_folder(folder: str | Path, info: dict, overwrite: bool = False, writer: bool = True) -> None:
    """Make ``folder`` take this evaluation's detections, of the stage ``info`` names, and write ``info`` there.

    Detections of the other stage already there are refused (`FolderTaken`) unless ``overwrite``, which deletes every
    eval output first: an AP beside detections of another stage, or files of both stages side by side, would read
    as one evaluation. The sidecar is written before any detection, so a killed run's files are tagged too.
    """
    folder = Path(folder)
    wanted = info["stage"]
    try:
        stored = stored_stage(folder)
    except FolderTaken:
        if not overwrite:
            raise
        stored = "unreadable"  # a damaged sidecar tags nothing: starting again replaces it and what it described
    if stored is not None and stored != wanted and not overwrite:
        raise FolderTaken(folder, f"{folder} holds detections {STAGE_WORDS[stored]} and this evaluation writes them "
                                  f"{STAGE_WORDS[wanted]}")
    claim(folder, {"stage": wanted}, None if stored is None else {"stage": stored}, owned_paths(folder, EVAL_OUTPUTS),
          overwrite=overwrite, what=EVAL_OUTPUTS.what, writer=writer)
    if writer:
        atomic_write_json(folder / EVAL_OUTPUTS.summary, info)


def score_detections(per_rank: list[dict[str, list[dict]]], image_ids: list[int], dataset: CocoDataset,
                     modes: list[str], out: str | Path | None, name: str, start: float
                     ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """AP of every mode from every rank's detections; with ``out``, the detections and tables written there."""
    rows, class_rows = [], []
    names = dict(zip(dataset.label_to_cat_id.values(), dataset.category_names))
    for mode in modes:
        merged = [r for res in per_rank for r in res[mode]]
        summary, per_class = coco_ap(dataset.coco, merged, image_ids)
        rows.append({"model": name, "mode": mode, **summary})
        class_rows += [{"model": name, "mode": mode, "category_id": c, "category": names.get(c, str(c)), "AP": ap}
                       for c, ap in per_class.items()]
        if out is not None:
            Path(out).mkdir(parents=True, exist_ok=True)
            atomic_write_text(Path(out) / detections_file(mode), json.dumps(merged))
    table, per_class_table = pd.DataFrame(rows), pd.DataFrame(class_rows)
    if out is not None:
        # the images AP covers, recorded apart from the detections: a weak model may detect nothing on them
        atomic_write_json(Path(out) / EVALUATED_IMAGES_JSON, {"image_ids": sorted(image_ids)})
        # eval.csv last: its presence means the whole evaluation is on disk (the demo skips a step on it)
        write_table(per_class_table, Path(out) / PER_CLASS_AP_CSV, parquet=False)
        write_table(table, Path(out) / EVAL_CSV, parquet=False)
        log.info("evaluated %d images in %.1fs; wrote %s", len(image_ids), time.perf_counter() - start, out)
    return table, per_class_table
