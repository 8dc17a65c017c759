"""A converted mmdetection model against mmdetection itself, image by image (not part of the test suite).

  VENV/bin/python tools/mmdet_parity.py [--out parity.json] [--write-docs docs/published-models.md]

VENV is a virtual environment with mmcv 2.1.0 and mmdet 3.3.0 (``/work/shared/tools/build-mmdet.sh VENV``, about
twenty minutes on two cores) and this project installed into it (``VENV/bin/pip install --no-deps -e .``, then
``VENV/bin/pip install pandas pyyaml tqdm seaborn scikit-learn``). Without mmdetection the script prints one line and
exits 0.

For each of mmdetection's ``faster-rcnn_r50_fpn_1x`` (Shared2FCBBoxHead) and ``dh-faster-rcnn_r50_fpn_1x``
(DoubleHeadRoIHead, K = 5 conv-head, RoI × 1.3 for regression), built from their model dicts (written out below) with
random weights (random BatchNorm statistics so that they matter; a classifier sharpened so that random scores pass
the 0.05 threshold; a spread-out objectness so that the RPN's top-k is not decided by ties), it

1. saves an mmdetection checkpoint (``{"meta", "state_dict"}``), converts it (``dhanalysis convert --from mmdet``);
2. runs both on real photographs (matplotlib's and scikit-learn's sample photographs, cropped to 3:2 and 4:3 and
   scaled once to a short side of 800, landscape and portrait, saved losslessly so both read the same pixels), one
   image per batch, mmdetection through its own test pipeline (LoadImageFromFile, Resize to (1333, 800) keeping the
   ratio, PackDetInputs, DetDataPreprocessor);
3. compares the RPN proposals (the same count; each proposal's distance to the nearest of the other's, in px) and the
   final detections matched one to one (same label; box difference in px, score difference), and counts.

The target: every detection within 0.01 px and 1e-4 in score, the same count, on every photograph. The "resized"
rows (the originals at their own size, which both libraries resize) check the 8-bit resize too: the converted model
reproduces OpenCV's fixed-point bilinear filter (``model.resize_kernel=opencv``), without which a level's difference on
one pixel in ten is amplified by a random network into different proposals.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import logging
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root: bench.mmdet's model dicts
from bench.mmdet import model_dict  # noqa: E402
from tests.helpers import match_detections, randomise_norms  # noqa: E402

PARITY_BEGIN, PARITY_END = "<!-- mmdet-parity:begin -->", "<!-- mmdet-parity:end -->"
BOX_TOL, SCORE_TOL = 0.01, 1e-4
# A near-tie: scores this close are equal to float32 rounding near 1 (a sharpened random classifier saturates), and
# which of a tied NMS cluster's boxes comes first is the kernels' rounding; one such swap suppresses one box more or
# fewer and so moves one more detection across the cap: 2 of an image's 100 (a systematic difference moves far more)
TIE, MOST_TIES = 1e-6, 0.02


def random_mmdet_model(double_head: bool, seed: int = 0):
    """The model with random weights that detect: BatchNorm statistics and affine parameters drawn at random, the
    classifier and the RPN's objectness spread wide, the regressors moved off zero."""
    import torch
    from mmdet.registry import MODELS
    from mmengine.config import ConfigDict

    torch.manual_seed(seed)
    model = MODELS.build(ConfigDict(model_dict(double_head)))
    model.init_weights()
    randomise_norms(model)
    with torch.no_grad():
        head = model.roi_head.bbox_head
        for layer, scale in ((head.fc_cls, 40.0), (head.fc_reg, 5.0), (model.rpn_head.rpn_cls, 10.0),
                             (model.rpn_head.rpn_reg, 1.0)):
            layer.reset_parameters()
            layer.weight.mul_(scale)
    return model.eval()


def photographs(folder: Path) -> list[tuple[str, Path, bool]]:
    """(name, PNG path, at short side 800) for each test photograph, written into ``folder``."""
    import matplotlib
    from PIL import Image

    sources = {"grace_hopper": Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"}
    if importlib.util.find_spec("sklearn") is not None:
        images = Path(importlib.util.find_spec("sklearn").origin).parent / "datasets" / "images"
        sources.update(china=images / "china.jpg", flower=images / "flower.jpg")
    plan = [("grace_hopper", (2, 3), (800, 1200)), ("grace_hopper", (3, 4), (800, 1067))]
    if "china" in sources:
        plan += [("china", (3, 2), (1200, 800)), ("flower", (4, 3), (1067, 800))]
    else:  # only one photograph at hand: its landscape crops
        plan += [("grace_hopper", (3, 2), (1200, 800)), ("grace_hopper", (4, 3), (1067, 800))]
    out = []
    for stem, (rw, rh), size in plan:
        image = Image.open(sources[stem]).convert("RGB")
        w, h = image.size
        cw, ch = (w, round(w * rh / rw)) if w * rh / rw <= h else (round(h * rw / rh), h)
        left, top = (w - cw) // 2, (h - ch) // 2
        path = folder / f"{stem}_{rw}x{rh}_{size[0]}x{size[1]}.png"
        image.crop((left, top, left + cw, top + ch)).resize(size, Image.BICUBIC).save(path)
        out.append((f"{stem} {rw}:{rh} {size[0]}×{size[1]}", path, True))
    for stem in sources if "china" in sources else ["grace_hopper"]:
        image = Image.open(sources[stem]).convert("RGB")
        path = folder / f"{stem}_original.png"
        image.save(path)
        out.append((f"{stem} {image.size[0]}×{image.size[1]} (resized)", path, False))
    return out


def mmdet_outputs(model, pipeline, path: Path):
    """mmdetection's RPN proposals (resized-image coordinates) and detections (original image) of one image."""
    import torch

    data = pipeline(dict(img_path=str(path), img_id=0))
    batch = model.data_preprocessor({"inputs": [data["inputs"]], "data_samples": [data["data_samples"]]}, False)
    with torch.no_grad():
        feats = model.extract_feat(batch["inputs"])
        proposals = model.rpn_head.predict(feats, batch["data_samples"], rescale=False)
        dets = model.roi_head.predict(feats, proposals, batch["data_samples"], rescale=True)[0]
    return proposals[0].bboxes, dets.bboxes, dets.scores, dets.labels + 1


def our_outputs(model, path: Path):
    import torch
    from PIL import Image
    from torchvision.transforms.functional import pil_to_tensor

    image = pil_to_tensor(Image.open(path).convert("RGB")).float() / 255
    with torch.no_grad():
        image_list, features, _ = model.features([image])
        proposals = model.rpn(image_list, features)[0][0]
        dets = model([image])[0]
    return proposals, dets["boxes"], dets["scores"], dets["labels"]


def compare(mm, ours, nms_iou: float) -> dict:
    """Counts and the largest differences: proposals by nearest box; detections by nearest box of the same label,
    a near-tie in NMS (`tests.helpers.match_detections`: scores within ``TIE``, overlap beyond ``nms_iou``, and the
    one detection a swap lets in under the cap) counted apart, at most ``MOST_TIES`` of the detections."""
    import torch

    (mp, mb, ms, ml), (op, ob, os_, ol) = mm, ours
    row = {"proposals": [len(mp), len(op)], "detections": [len(mb), len(ob)]}
    if len(mp) and len(op):
        d = torch.cdist(op.double(), mp.double(), p=float("inf"))
        row["proposal_max_px"] = float(max(d.min(1).values.max(), d.min(0).values.max()))
        row["proposals_apart"] = int((d.min(1).values > BOX_TOL).sum())  # ours with no mmdetection box within 0.01 px
        row["proposals_in_order_max_px"] = (float((op - mp).abs().max()) if len(op) == len(mp) else None)
    m = match_detections({"boxes": ob, "scores": os_, "labels": ol}, {"boxes": mb, "scores": ms, "labels": ml},
                         nms_iou, TIE, BOX_TOL)
    credited = m.credited(MOST_TIES)
    row.update(box_max_px=m.box_gap, score_max=m.score_gap, near_ties=credited,
               unmatched=m.count - m.close - credited + abs(m.ref_count - m.count))
    return row


def passes(row: dict) -> bool:
    return (row["detections"][0] == row["detections"][1] and row["unmatched"] == 0 and row["box_max_px"] <= BOX_TOL
            and row["score_max"] <= SCORE_TOL and row["proposals"][0] == row["proposals"][1])


def markdown(rows: list[dict], versions: str) -> str:
    lines = [f"Measured by `tools/mmdet_parity.py` ({versions}; random weights, one image per batch, CPU, fp32). "
             f"Target: the same counts, every detection within {BOX_TOL} px and {SCORE_TOL:g} in score, but for "
             f"near-ties in NMS (scores within {TIE:g}: at most {MOST_TIES:.0%} of an image's detections).", "",
             "| model | photograph | proposals (mmdet / ours) | max proposal distance (px) | detections (mmdet / "
             "ours) | near-ties | max box difference (px) | max score difference | within target |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        verdict = "yes" if passes(r) else "**no**"
        lines.append(f"| {r['model']} | {r['image']} | {r['proposals'][0]} / {r['proposals'][1]} | "
                     f"{r.get('proposal_max_px', float('nan')):.2g} | {r['detections'][0]} / {r['detections'][1]} | "
                     f"{r['near_ties']} | "
                     f"{r['box_max_px']:.2g} | {r['score_max']:.2g} | {verdict} |")
    return "\n".join(lines + ["", summary(rows)])


def summary(rows: list[dict]) -> str:
    """The table in words, from its rows."""
    ok = [r for r in rows if passes(r)]
    ties = [r for r in rows if r["near_ties"]]
    apart = [r for r in rows if r.get("proposals_apart")]
    text = [f"{len(ok)} of {len(rows)} rows within target; largest box difference "
            f"{max(r['box_max_px'] for r in rows):.2g} px, largest score difference "
            f"{max(r['score_max'] for r in rows):.2g}."]
    text.append("Near-ties in NMS: " + ("; ".join(f"{r['model']} on {r['image']} ({r['near_ties']} of "
                                                    f"{r['detections'][1]})" for r in ties) if ties else "none") + ".")
    text.append(f"Proposals with no counterpart within {BOX_TOL} px: " + (
        "; ".join(f"{r['model']} on {r['image']} ({r['proposals_apart']} of {r['proposals'][1]}, up to "
                  f"{r['proposal_max_px']:.2g} px)" for r in apart) if apart else "none") + ".")
    return " ".join(text)


def write_docs(path: Path, text: str) -> None:
    doc = path.read_text()
    if PARITY_BEGIN not in doc or PARITY_END not in doc:
        sys.exit(f"{path} has no {PARITY_BEGIN} … {PARITY_END} markers to write the table between")
    head, rest = doc.split(PARITY_BEGIN, 1)
    path.write_text(f"{head}{PARITY_BEGIN}\n{text}\n{PARITY_END}{rest.split(PARITY_END, 1)[1]}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, help="write the per-image numbers as JSON here")
    parser.add_argument("--write-docs", type=Path, metavar="MD", help="replace the table between the parity markers")
    args = parser.parse_args()
    if importlib.util.find_spec("mmdet") is None or importlib.util.find_spec("mmcv") is None:
        print("mmdet parity: skipped: mmdetection is not installed here (build it with "
              "/work/shared/tools/build-mmdet.sh VENV and run this with VENV/bin/python)")
        return 0
    import mmcv
    import mmdet
    import torch
    from mmcv.transforms import Compose
    from mmdet.utils import register_all_modules
    from mmengine.logging import MMLogger

    from dhanalysis.model.checkpoint import load_checkpoint
    from dhanalysis.model.convert import convert_file

    register_all_modules()
    MMLogger.get_current_instance().setLevel(logging.WARNING)  # its registry's INFO lines would bury the table
    torch.set_grad_enabled(False)
    pipeline = Compose([dict(type="LoadImageFromFile"), dict(type="Resize", scale=(1333, 800), keep_ratio=True),
                        dict(type="PackDetInputs", meta_keys=("img_id", "img_path", "ori_shape", "img_shape",
                                                              "scale_factor"))])
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        images = photographs(tmp)
        for name, double_head in (("faster-rcnn_r50_fpn_1x", False), ("dh-faster-rcnn_r50_fpn_1x", True)):
            mm = random_mmdet_model(double_head)
            src = tmp / f"{name}.pth"
            torch.save({"meta": {"mmdet_version": mmdet.__version__}, "state_dict": mm.state_dict()}, src)
            convert_file("mmdet", src, tmp / f"{name}-converted.pth")
            ours = load_checkpoint(tmp / f"{name}-converted.pth")
            for label, path, at_800 in images:
                row = {"model": name, "image": label, "resized": not at_800,
                       **compare(mmdet_outputs(mm, pipeline, path), our_outputs(ours, path),
                                 mm.roi_head.test_cfg.nms.iou_threshold)}
                rows.append(row)
                print(f"{name:26s} {label:34s} proposals {row['proposals']} ({row.get('proposal_max_px', 0):.2g} px, "
                      f"{row.get('proposals_apart', 0)} apart)"
                      f"  detections {row['detections']} ({row['near_ties']} near-ties)  box {row['box_max_px']:.2g} px"
                      f"  score {row['score_max']:.2g}  {'ok' if passes(row) else 'DIFFERS'}", flush=True)
    versions = (f"mmcv {mmcv.__version__}, mmdet {mmdet.__version__}, torch {torch.__version__}, ATen CPU capability "
                f"{torch.backends.cpu.get_cpu_capability()}")
    if args.out:
        args.out.write_text(json.dumps({"versions": versions, "rows": rows}, indent=1))
    text = markdown(rows, versions)
    print(text)
    if args.write_docs:
        write_docs(args.write_docs, text)
    failed = [r for r in rows if not passes(r)]
    print(f"mmdet parity: {len(rows) - len(failed)} of {len(rows)} rows within target"
          + (f"; differ: {', '.join(r['model'] + ' on ' + r['image'] for r in failed)}" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
