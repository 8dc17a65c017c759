"""Our Double-Head training step and evaluation vs mmdetection's, the same model, interleaved in one process.

mmdetection is not a dependency: ``/work/shared/tools/build-mmdet.sh VENV`` builds mmcv 2.1.0 + mmdet 3.3.0 into a
virtual environment of its own (about twenty CPU-heavy minutes), and ``VENV/bin/pip install --no-deps -e .`` puts
this project beside it; ``VENV/bin/python -m bench`` then runs this section. Where mmdetection is absent it is skipped
with one line.

The model is mmdetection's ``dh-faster-rcnn_r50_fpn_1x``: ResNet-50-FPN, the K = 5 conv-head without non-local
blocks, its RoI enlarged 1.3× (`model_dict`), built from its model dict with random weights; ours is that checkpoint
converted (``dhanalysis convert --from mmdet``), so both hold the same weights and layout. The training step is two
512² images with four boxes each, 512 sampled RoIs per image, SGD, both libraries' training settings (mmdetection's
``train_cfg`` of the config, ours with the RPN keeping 1,000 proposals per image as mmdetection's does); the
evaluation is one 800 × 1088 image. Differences that stay: mmdetection trains its BatchNorm affine parameters (frozen
statistics, ``norm_eval``), ours freezes them (FrozenBatchNorm).
"""

from __future__ import annotations

import importlib.util
import tempfile
from pathlib import Path

import torch

from bench.common import cpu_kind, interleaved, log, paired_interval, paired_ratio

TRAIN_SIZE, EVAL_SHAPE, ROIS = 512, (800, 1088), 512
# ours ÷ mmdetection's, paired, that each CPU kind must reach (issue 39: ahead of the library users would otherwise use)
STEP_TARGET, EVAL_TARGET = 0.85, 0.7


def model_dict(double_head: bool, train: bool = False) -> dict:
    """mmdetection 3.3's ``faster-rcnn_r50_fpn`` model settings (configs/_base_/models/) and its Double-Head variant
    (configs/double_heads/dh-faster-rcnn_r50_fpn_1x_coco.py); no pretrained backbone. ``train`` adds the training
    settings (``train_cfg``) and the Double-Head's loss weights."""
    coder = dict(type="DeltaXYWHBBoxCoder", target_means=[0.0] * 4, target_stds=[0.1, 0.1, 0.2, 0.2])
    common_head = dict(in_channels=256, fc_out_channels=1024, roi_feat_size=7, num_classes=80, bbox_coder=coder,
                       reg_class_agnostic=False)
    if double_head:
        bbox_head = dict(type="DoubleConvFCBBoxHead", num_convs=4, num_fcs=2, conv_out_channels=1024,
                         loss_cls=dict(type="CrossEntropyLoss", use_sigmoid=False, loss_weight=2.0),
                         loss_bbox=dict(type="SmoothL1Loss", beta=1.0, loss_weight=2.0), **common_head)
        roi_head = dict(type="DoubleHeadRoIHead", reg_roi_scale_factor=1.3)
    else:
        bbox_head = dict(type="Shared2FCBBoxHead", loss_cls=dict(type="CrossEntropyLoss", use_sigmoid=False),
                         loss_bbox=dict(type="L1Loss"), **common_head)
        roi_head = dict(type="StandardRoIHead")
    roi_head.update(bbox_roi_extractor=dict(type="SingleRoIExtractor", out_channels=256,
                                            roi_layer=dict(type="RoIAlign", output_size=7, sampling_ratio=0),
                                            featmap_strides=[4, 8, 16, 32]),
                    bbox_head=bbox_head)
    train_cfg = dict(
        rpn=dict(assigner=dict(type="MaxIoUAssigner", pos_iou_thr=0.7, neg_iou_thr=0.3, min_pos_iou=0.3,
                               match_low_quality=True, ignore_iof_thr=-1),
                 sampler=dict(type="RandomSampler", num=256, pos_fraction=0.5, neg_pos_ub=-1,
                              add_gt_as_proposals=False),
                 allowed_border=-1, pos_weight=-1, debug=False),
        rpn_proposal=dict(nms_pre=2000, max_per_img=1000, nms=dict(type="nms", iou_threshold=0.7), min_bbox_size=0),
        rcnn=dict(assigner=dict(type="MaxIoUAssigner", pos_iou_thr=0.5, neg_iou_thr=0.5, min_pos_iou=0.5,
                                match_low_quality=False, ignore_iof_thr=-1),
                  sampler=dict(type="RandomSampler", num=ROIS, pos_fraction=0.25, neg_pos_ub=-1,
                               add_gt_as_proposals=True),
                  pos_weight=-1, debug=False))
    return dict(
        type="FasterRCNN",
        data_preprocessor=dict(type="DetDataPreprocessor", mean=[123.675, 116.28, 103.53], std=[58.395, 57.12, 57.375],
                               bgr_to_rgb=True, pad_size_divisor=32),
        backbone=dict(type="ResNet", depth=50, num_stages=4, out_indices=(0, 1, 2, 3), frozen_stages=1,
                      norm_cfg=dict(type="BN", requires_grad=True), norm_eval=True, style="pytorch", init_cfg=None),
        neck=dict(type="FPN", in_channels=[256, 512, 1024, 2048], out_channels=256, num_outs=5),
        rpn_head=dict(type="RPNHead", in_channels=256, feat_channels=256,
                      anchor_generator=dict(type="AnchorGenerator", scales=[8], ratios=[0.5, 1.0, 2.0],
                                            strides=[4, 8, 16, 32, 64]),
                      bbox_coder=dict(type="DeltaXYWHBBoxCoder", target_means=[0.0] * 4, target_stds=[1.0] * 4),
                      loss_cls=dict(type="CrossEntropyLoss", use_sigmoid=True, loss_weight=1.0),
                      loss_bbox=dict(type="L1Loss", loss_weight=1.0)),
        roi_head=roi_head,
        train_cfg=train_cfg if train else None,
        test_cfg=dict(rpn=dict(nms_pre=1000, max_per_img=1000, nms=dict(type="nms", iou_threshold=0.7),
                               min_bbox_size=0),
                      rcnn=dict(score_thr=0.05, nms=dict(type="nms", iou_threshold=0.5), max_per_img=100)),
    )


def _inputs(seed: int = 0):
    """Two random ``TRAIN_SIZE``² RGB images in [0, 1] with four boxes each (labels 1..80), one 800 × 1088 image."""
    g = torch.Generator().manual_seed(seed)
    images = [torch.rand(3, TRAIN_SIZE, TRAIN_SIZE, generator=g) for _ in range(2)]
    targets = []
    for _ in images:
        xy = torch.rand(4, 2, generator=g) * (TRAIN_SIZE - 240)
        wh = 40 + torch.rand(4, 2, generator=g) * 200
        targets.append({"boxes": torch.cat([xy, xy + wh], 1), "labels": torch.randint(1, 81, (4,), generator=g)})
    return images, targets, torch.rand(3, *EVAL_SHAPE, generator=g)


def _mmdet_batch(images, targets=None):
    """mmdetection's inputs for the same images: BGR 8-bit levels, one DetDataSample each (0-based labels)."""
    from mmdet.structures import DetDataSample
    from mmengine.structures import InstanceData

    inputs, samples = [], []
    for i, image in enumerate(images):
        inputs.append((image * 255).round().to(torch.uint8).flip(0))
        sample = DetDataSample(metainfo=dict(img_id=i, img_shape=tuple(image.shape[-2:]),
                                             ori_shape=tuple(image.shape[-2:]), scale_factor=(1.0, 1.0)))
        if targets is not None:
            sample.gt_instances = InstanceData(bboxes=targets[i]["boxes"], labels=targets[i]["labels"] - 1)
        samples.append(sample)
    return {"inputs": inputs, "data_samples": samples}


def run(device: str = "cpu", repeats: int = 3) -> dict:
    """``{"step_ours_over_mmdet", "eval_ours_over_mmdet", ...}`` (median paired ratios, with ``step_interval`` and
    ``eval_interval``: `paired_interval`'s (low, high, coverage) over the rounds), or ``{"skipped": reason}``."""
    if importlib.util.find_spec("mmdet") is None or importlib.util.find_spec("mmcv") is None:
        reason = ("mmdetection is not installed (build it with /work/shared/tools/build-mmdet.sh VENV, run with its "
                  "python)")
        log(f"mmdet: skipped: {reason}")
        return {"skipped": reason, "cpu_kind": cpu_kind(),
                "line": f"| ours / mmdetection Double-Head step and evaluation, {cpu_kind()} | skipped: {reason} | | |"}
    import logging

    import mmdet
    from mmdet.registry import MODELS
    from mmdet.utils import register_all_modules
    from mmengine.logging import MMLogger
    from mmengine.config import ConfigDict

    from dhanalysis.model.convert import convert_source
    from dhanalysis.model.heads import detected_training_form

    register_all_modules()
    MMLogger.get_current_instance().setLevel(logging.WARNING)
    torch.manual_seed(0)
    mm = MODELS.build(ConfigDict(model_dict(True, train=True)))
    mm.init_weights()
    mm.to(device)
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "dh-faster-rcnn_r50_fpn_1x.pth"
        torch.save({"meta": {"mmdet_version": mmdet.__version__}, "state_dict": mm.state_dict()}, src)
        ours_eval = convert_source("mmdet", src)[0].to(device).eval()
        ours_train = convert_source("mmdet", src, None, [
            f"model.min_size={TRAIN_SIZE}", f"model.max_size={TRAIN_SIZE}", "model.rpn.post_nms_top_n_train=1000",
            f"model.box_batch_size_per_image={ROIS}"])[0].to(device)
    images, targets, eval_image = _inputs()
    images, eval_image = [i.to(device) for i in images], eval_image.to(device)
    targets = [{k: v.to(device) for k, v in t.items()} for t in targets]
    mm_train, mm_eval = _mmdet_batch(images, targets), _mmdet_batch([eval_image])

    def sgd(model):
        return torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1e-4, momentum=0.9)

    opt_mm, opt_ours = sgd(mm), sgd(ours_train)

    def mm_step() -> None:
        mm.train()
        batch = mm.data_preprocessor(mm_train, True)
        loss, _ = mm.parse_losses(mm.loss(batch["inputs"], batch["data_samples"]))
        opt_mm.zero_grad(set_to_none=True)
        loss.backward()
        opt_mm.step()

    def our_step() -> None:
        ours_train.train()
        losses = ours_train(images, targets)
        opt_ours.zero_grad(set_to_none=True)
        sum(losses.values()).backward()
        opt_ours.step()

    def mm_eval_fn() -> None:
        mm.eval()
        with torch.no_grad():
            batch = mm.data_preprocessor(mm_eval, False)
            mm.predict(batch["inputs"], batch["data_samples"], rescale=True)

    def our_eval_fn() -> None:
        with torch.no_grad():
            ours_eval([eval_image])

    log(f"mmdet: training step, 2 × {TRAIN_SIZE}² images, {ROIS} RoIs each, interleaved ({repeats} rounds)")
    step = interleaved({"ours": our_step, "mmdet": mm_step}, repeats=repeats)
    log(f"mmdet: evaluation of one {EVAL_SHAPE[0]} × {EVAL_SHAPE[1]} image, interleaved")
    ev = interleaved({"ours": our_eval_fn, "mmdet": mm_eval_fn}, repeats=repeats + 1)
    out = {"model": "dh-faster-rcnn_r50_fpn_1x (K = 5 conv-head, no non-local, RoI x 1.3), random weights",
           "mmdet_version": mmdet.__version__, "conv_head_trains_in": detected_training_form(torch.device(device)),
           "step_ours_s": step["ours"]["best"], "step_mmdet_s": step["mmdet"]["best"],
           "step_ours_over_mmdet": paired_ratio(step, "ours", "mmdet"),
           "eval_ours_s": ev["ours"]["best"], "eval_mmdet_s": ev["mmdet"]["best"],
           "eval_ours_over_mmdet": paired_ratio(ev, "ours", "mmdet"), "step_times": step, "eval_times": ev,
           "cpu_kind": cpu_kind()}
    # the rounds' spread, so a ratio near its target reads as met, missed, or undecided at this many rounds
    out["step_interval"] = paired_interval(step, "ours", "mmdet")
    out["eval_interval"] = paired_interval(ev, "ours", "mmdet")

    def ratio_text(key: str) -> str:
        low, high, coverage = out[f"{key}_interval"]
        return f"paired {out[f'{key}_ours_over_mmdet']:.3f}, {coverage:.0%} [{low:.3f}, {high:.3f}]"

    log(f"mmdet: step ours {out['step_ours_s']:.2f} s, mmdetection {out['step_mmdet_s']:.2f} s "
        f"({out['step_ours_over_mmdet']:.3f}); evaluation ours {out['eval_ours_s']:.2f} s, mmdetection "
        f"{out['eval_mmdet_s']:.2f} s ({out['eval_ours_over_mmdet']:.3f})")
    out["line"] = (f"| Double-Head R-50-FPN, ours / mmdetection: training step; evaluation, {out['cpu_kind']} | "
                   f"{out['step_ours_s']:.2f} / {out['step_mmdet_s']:.2f} s "
                   f"({ratio_text('step')}); "
                   f"{out['eval_ours_s']:.2f} / {out['eval_mmdet_s']:.2f} s ({ratio_text('eval')})"
                   f" | <= {STEP_TARGET}; <= {EVAL_TARGET} | "
                   f"{'yes' if out['step_ours_over_mmdet'] <= STEP_TARGET else 'NO'}; "
                   f"{'yes' if out['eval_ours_over_mmdet'] <= EVAL_TARGET else 'NO'} |")
    return out


if __name__ == "__main__":  # this section alone: python -m bench.mmdet [--repeats N], with mmdetection's venv
    import argparse

    from dhanalysis.engine.host import retain_freed_memory

    parser = argparse.ArgumentParser(description="Ours vs mmdetection 3.3, the same Double-Head model, interleaved.")
    parser.add_argument("--repeats", type=int, default=3, help="timed rounds after a warm-up (default 3)")
    retain_freed_memory()  # as every dhanalysis command and `python -m bench` run: the same setting for both
    print(run("cpu", parser.parse_args().repeats)["line"])
