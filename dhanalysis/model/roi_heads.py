"""RoI heads with one or two branches, built on torchvision's `RoIHeads`.

torchvision's `RoIHeads` runs one ``box_head → box_predictor`` and post-processes logits. We keep its proposal
sampling (`select_training_samples`), its box coder and its matcher, and override only what a second branch needs:
pooling per branch, per-branch/per-task losses (Eq. 1-3), inference modes that mix branches (Table 3, Fig. 8), and a
*probe* path that scores boxes we choose, without thresholds or NMS (the analyses of §3).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models.detection.roi_heads import RoIHeads
from torchvision.ops import roi_align

from dhanalysis.errors import DHError
from dhanalysis.model.conventions import (BOX_FILTERS, batched_nms, clip_to_image, from_convention, keep_sized,
                                          scale_boxes_about_centre, to_convention)
from dhanalysis.model.gather_roi import FeatureTable, map_levels, pool_table
from dhanalysis.model.variants import parse_mode


def complementary_fusion(s_fc: torch.Tensor, s_conv: torch.Tensor) -> torch.Tensor:
    """Eq. 4: s = s_fc + s_conv·(1 − s_fc), which equals s_conv + s_fc·(1 − s_conv)."""
    return s_fc + s_conv * (1.0 - s_fc)


def max_fusion(s_fc: torch.Tensor, s_conv: torch.Tensor) -> torch.Tensor:
    """Table 3's "Max": the element-wise maximum."""
    return torch.maximum(s_fc, s_conv)


def average_fusion(s_fc: torch.Tensor, s_conv: torch.Tensor) -> torch.Tensor:
    """Table 3's "Average": the element-wise mean."""
    return 0.5 * (s_fc + s_conv)


# The fusion rules an `InferenceMode` names (``fusion``): two classifiers' probabilities, same shape, -> one.
FUSION_RULES = {"max": max_fusion, "average": average_fusion, "complementary": complementary_fusion}


def fuse_scores(s_fc: torch.Tensor, s_conv: torch.Tensor, rule: str) -> torch.Tensor:
    """Fuse two classifiers' probabilities ``(N, C+1)`` by the rule named ``rule`` (§4.2, Table 3)."""
    try:
        return FUSION_RULES[rule](s_fc, s_conv)
    except KeyError:
        raise ValueError(f"unknown fusion rule {rule!r}; known: {', '.join(FUSION_RULES)}") from None


POOLING_BACKENDS = ("auto", "gather", "torchvision")


class LevelPooler(nn.Module):
    """Multi-level RoIAlign whose FPN level can come from other boxes than the ones pooled.

    Same rule and results as torchvision's `MultiScaleRoIAlign` (FPN Eq. 1, k0 = 4, canonical size 224), but an
    enlarged RoI is pooled on the level of its original box, as the public Double-Head implementations do.

    ``backend`` (an argument of every call, one of `POOLING_BACKENDS`): ``"gather"`` pools with the weighted gather of
    `pool_batch` (same numbers to float32 rounding; on CPU 3.5× faster than torchvision's kernel with its backward),
    ``"torchvision"`` with torchvision's ``roi_align`` per level (the straightforward path the analyses' reference
    scoring and the benchmarks' baseline stand for), ``"auto"`` with the gather on CPU and torchvision's kernel
    elsewhere. ``sampling_ratio`` ≤ 0 is adaptive and ``aligned`` the half-pixel RoIAlign, in both backends;
    ``box_convention`` the size rule of the level mapping (`dhanalysis.model.conventions`).
    """

    def __init__(self, featmap_names: list[str], output_size: int, sampling_ratio: int, aligned: bool = False,
                 box_convention: str = "continuous"):
        super().__init__()
        self.featmap_names = list(featmap_names)
        self.output_size = (output_size, output_size)
        self.sampling_ratio = sampling_ratio
        self.aligned = aligned
        self.box_convention = box_convention

    def scales(self, features: list[torch.Tensor], image_shapes: list[tuple[int, int]]) -> list[float]:
        """The spatial scale of each level (feature size over the largest image height)."""
        max_h = max(s[0] for s in image_shapes)
        # every FPN level halves the resolution, so each scale is a power of two
        return [2.0 ** round(torch.log2(torch.tensor(f.shape[-2] / max_h)).item()) for f in features]

    def resolve_backend(self, backend: str, device: torch.device) -> str:
        """``"gather"`` or ``"torchvision"``: what ``backend`` means for features on ``device``."""
        if backend not in POOLING_BACKENDS:
            raise ValueError(f"pooling backend must be one of {', '.join(POOLING_BACKENDS)}, got {backend!r}")
        if backend != "auto":
            return backend
        return "gather" if device.type == "cpu" else "torchvision"

    def forward(
        self,
        x: dict[str, torch.Tensor],
        boxes: list[torch.Tensor],
        image_shapes: list[tuple[int, int]],
        level_boxes: list[torch.Tensor] | None = None,
        backend: str = "auto",
    ) -> torch.Tensor:
        """Pool ``boxes`` (per image, ``(Ni, 4)`` xyxy in input pixels) into ``(sum Ni, C, S, S)``, each on the level
        of the matching box of ``level_boxes`` (default: itself)."""
        return self.pool_sets(x, [boxes], image_shapes, [level_boxes], backend)[0]

    def pool_sets(
        self,
        x: dict[str, torch.Tensor],
        box_sets: list[list[torch.Tensor]],
        image_shapes: list[tuple[int, int]],
        level_sets: list[list[torch.Tensor] | None] | None = None,
        backend: str = "auto",
    ) -> list[torch.Tensor]:
        """`forward` of several sets of boxes at once (the plain and the enlarged RoIs of a Double-Head): the gather
        builds the levels' feature table once for all of them. Each set's result is what `forward` gives it alone."""
        features = [x[k] for k in self.featmap_names]
        scales = self.scales(features, image_shapes)
        gather = self.resolve_backend(backend, features[0].device) == "gather"
        table = FeatureTable.from_features(features, scales) if gather else None
        pooled = []
        for boxes, level_boxes in zip(box_sets, level_sets or [None] * len(box_sets)):
            levels = map_levels(torch.cat(level_boxes if level_boxes is not None else boxes), scales,
                                self.box_convention)
            flat = torch.cat(boxes)
            batch_idx = torch.cat([torch.full((len(b), 1), i, dtype=flat.dtype, device=flat.device) for i, b in
                                   enumerate(boxes)])
            rois = torch.cat([batch_idx, flat], dim=1)
            if gather:
                pooled.append(pool_table(table, rois, levels, self.output_size[0], self.sampling_ratio, self.aligned))
            else:
                pooled.append(self.roi_align_levels(features, scales, rois, levels))
        return pooled

    def roi_align_levels(self, features: list[torch.Tensor], scales: list[float], rois: torch.Tensor,
                         levels: torch.Tensor) -> torch.Tensor:
        """torchvision's ``roi_align``, level by level."""
        first = features[0]
        if len(features) == 1:
            return roi_align(first, rois, self.output_size, scales[0], self.sampling_ratio, self.aligned)
        out = first.new_zeros((len(rois), first.shape[1], *self.output_size))
        for level, (feat, scale) in enumerate(zip(features, scales)):
            idx = torch.where(levels == level)[0]
            if len(idx):
                out[idx] = roi_align(feat, rois[idx], self.output_size, scale, self.sampling_ratio,
                                     self.aligned).to(out.dtype)
        return out


class DoubleHeadRoIHeads(RoIHeads):
    """`RoIHeads` with named branches (``self.branches[name]``: head + predictor) and per-branch loss weights.

    Args:
        branches: name -> `Branch`; ``branch_weights``: name -> {"cls": w, "reg": w} (Eq. 1-3, already multiplied).
        pooler: a `LevelPooler`; ``conv_roi_scale``: enlargement of the RoI every conv-head branch pools, whatever
            its task (the authors' code enlarges the conv-head's input; the paper pools the RoI itself, 1.0).
        mode: the inference mode used by ``forward`` in eval (see `dhanalysis.model.variants.parse_mode`).
        smooth_l1_beta: β of the regression loss (torchvision uses 1/9; the authors' code 1.0).
        box_convention, box_filter: the source's box size convention and small-box rule, which clipping, NMS, the
            enlarged RoI and the detections' filter read (`dhanalysis.model.conventions`).
    """

    def __init__(
        self,
        branches: dict[str, nn.Module],
        branch_weights: dict[str, dict[str, float]],
        pooler: LevelPooler,
        mode: str,
        conv_roi_scale: float = 1.0,
        smooth_l1_beta: float = 1.0,
        fg_iou_thresh: float = 0.5,
        bg_iou_thresh: float = 0.5,
        batch_size_per_image: int = 512,
        positive_fraction: float = 0.25,
        score_thresh: float = 0.05,
        nms_thresh: float = 0.5,
        detections_per_img: int = 100,
        box_convention: str = "continuous",
        box_filter: str = "torchvision",
    ):
        super().__init__(
            box_roi_pool=pooler,
            box_head=nn.Identity(),
            box_predictor=nn.Identity(),
            fg_iou_thresh=fg_iou_thresh,
            bg_iou_thresh=bg_iou_thresh,
            batch_size_per_image=batch_size_per_image,
            positive_fraction=positive_fraction,
            bbox_reg_weights=None,
            score_thresh=score_thresh,
            nms_thresh=nms_thresh,
            detections_per_img=detections_per_img,
        )
        # the stock single-branch slots stay empty; our branches replace them
        del self.box_head, self.box_predictor
        self.branches = nn.ModuleDict(branches)
        self.branch_weights = branch_weights
        self.conv_roi_scale = conv_roi_scale
        self.smooth_l1_beta = smooth_l1_beta
        self.mode = mode
        self.box_convention = box_convention
        self.detection_size_rule = BOX_FILTERS[box_filter].detections
        self.final_size_rule = BOX_FILTERS[box_filter].final

    # --- shared forward pieces ----------------------------------------------------------------------------
    @property
    def enlarged_branches(self) -> set[str]:
        """Names of the branches that pool the enlarged RoI: the conv-head branches when ``conv_roi_scale`` ≠ 1."""
        if self.conv_roi_scale == 1.0:
            return set()
        return {name for name, branch in self.branches.items() if branch.head_type == "conv"}

    def branch_input(self, pooled: dict[str, torch.Tensor], name: str) -> torch.Tensor:
        """The pooled features branch ``name`` reads from `pool`'s result."""
        return pooled["enlarged"] if name in self.enlarged_branches else pooled["plain"]

    def pool(
        self,
        features: dict[str, torch.Tensor],
        boxes: list[torch.Tensor],
        image_shapes: list[tuple[int, int]],
        backend: str = "auto",
    ) -> dict[str, torch.Tensor]:
        """RoI features ``{"plain": (N, C, S, S)}`` and, when a branch pools an enlarged RoI, ``"enlarged"``.

        Only what some branch reads is pooled: a Single-Conv with an enlarged RoI pools the enlarged boxes alone.
        ``backend``: the RoIAlign implementation, see `LevelPooler`.
        """
        enlarged_names = self.enlarged_branches
        sets: dict[str, tuple[list[torch.Tensor], list[torch.Tensor] | None]] = {}
        if set(self.branches) - enlarged_names:
            sets["plain"] = (boxes, None)
        if enlarged_names:
            sets["enlarged"] = ([scale_boxes_about_centre(b, self.conv_roi_scale, self.box_convention) for b in boxes],
                                boxes)
        pooled = self.box_roi_pool.pool_sets(features, [b for b, _ in sets.values()], image_shapes,
                                             [lv for _, lv in sets.values()], backend=backend)
        return dict(zip(sets, pooled))

    def branch_outputs(
        self,
        features: dict[str, torch.Tensor],
        boxes: list[torch.Tensor],
        image_shapes: list[tuple[int, int]],
        backend: str = "auto",
    ) -> dict[str, tuple[torch.Tensor | None, torch.Tensor | None]]:
        """name -> (class logits ``(N, C+1)`` or None, box deltas ``(N, 4(C+1))`` or None)."""
        pooled = self.pool(features, boxes, image_shapes, backend)
        out = {}
        for name, branch in self.branches.items():
            out[name] = branch(self.branch_input(pooled, name))
        return out

    def head_outputs(
        self, outputs: dict[str, tuple[torch.Tensor | None, torch.Tensor | None]]
    ) -> dict[str, dict[str, torch.Tensor]]:
        """Regroup branch outputs by head type: {"fc": {"cls": logits, "reg": deltas}, "conv": {...}}."""
        heads: dict[str, dict[str, torch.Tensor]] = {}
        for name, (logits, deltas) in outputs.items():
            head = self.branches[name].head_type
            if logits is not None:
                heads.setdefault(head, {})["cls"] = logits
            if deltas is not None:
                heads.setdefault(head, {})["reg"] = deltas
        return heads

    # --- training -----------------------------------------------------------------------------------------
    def branch_losses(
        self,
        outputs: dict[str, tuple[torch.Tensor | None, torch.Tensor | None]],
        labels: list[torch.Tensor],
        regression_targets: list[torch.Tensor],
    ) -> dict[str, torch.Tensor]:
        """Weighted losses, one key per branch and task (``loss_fc_cls``, ``loss_conv_reg``, ...)."""
        labels_all = torch.cat(labels)
        targets_all = torch.cat(regression_targets)
        pos = torch.where(labels_all > 0)[0]
        losses = {}
        for name, (logits, deltas) in outputs.items():
            weights = self.branch_weights[name]
            if logits is not None:
                losses[f"loss_{name}_cls"] = weights["cls"] * F.cross_entropy(logits, labels_all)
            if deltas is not None:
                per_class = deltas.reshape(len(deltas), -1, 4)
                reg = F.smooth_l1_loss(
                    per_class[pos, labels_all[pos]], targets_all[pos], beta=self.smooth_l1_beta, reduction="sum"
                )
                losses[f"loss_{name}_reg"] = weights["reg"] * reg / max(labels_all.numel(), 1)
        return losses

    # --- inference ----------------------------------------------------------------------------------------
    def mode_scores_and_deltas(
        self, heads: dict[str, dict[str, torch.Tensor]], mode: str
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Class probabilities ``(N, C+1)`` and deltas ``(N, 4(C+1))`` of one inference mode."""
        row = parse_mode(mode)

        def probs(head: str) -> torch.Tensor:
            if head not in heads or "cls" not in heads[head]:
                raise DHError(f"mode '{mode}' needs a {head}-head classifier, which this model does not have")
            return heads[head]["cls"].float().softmax(-1)

        if row.reg not in heads or "reg" not in heads[row.reg]:
            raise DHError(f"mode '{mode}' needs a {row.reg}-head box regressor, which this model does not have")
        scores = fuse_scores(*map(probs, row.cls), row.fusion) if row.fusion else probs(row.cls[0])
        return scores, heads[row.reg]["reg"].float()

    def postprocess_probabilities(
        self,
        scores: torch.Tensor,
        deltas: torch.Tensor,
        proposals: list[torch.Tensor],
        image_shapes: list[tuple[int, int]],
        head_scores: dict[str, torch.Tensor] | None = None,
        suppress: bool = True,
    ) -> list[dict[str, torch.Tensor]]:
        """Score threshold, small-box rule, then per-class NMS and top-k on *probabilities*, then the final size rule
        (detectron2 drops empty boxes last, so an empty box that made the top k leaves its slot empty).

        torchvision's `postprocess_detections` applies a softmax to logits, which would renormalise fused scores
        that no longer come from one softmax; here the given scores reach the detections unchanged.
        ``head_scores``: {head type: (N, C+1) probabilities}; each detection then also carries ``<head>_score``, that
        head's probability of the detected class for the same proposal (so heads compare on the same detections).
        ``suppress=False`` skips the per-class NMS and the ``detections_per_img`` cut and keeps every (proposal, class)
        pair above the threshold, highest score first: the several boxes per object that within-object ranking
        measures need (after NMS an object rarely keeps two).
        """
        num_classes = scores.shape[-1]
        counts = [len(p) for p in proposals]
        pred_boxes = self.box_coder.decode(deltas, proposals)
        results = []
        per_head = {h: p.split(counts) for h, p in (head_scores or {}).items()}
        for i, (boxes, probs, shape) in enumerate(zip(pred_boxes.split(counts), scores.split(counts), image_shapes)):
            boxes = clip_to_image(boxes, shape, self.box_convention)
            labels = torch.arange(num_classes, device=probs.device).view(1, -1).expand_as(probs)
            rows = torch.arange(len(probs), device=probs.device).view(-1, 1).expand_as(probs)
            boxes, probs, labels = boxes[:, 1:].reshape(-1, 4), probs[:, 1:].reshape(-1), labels[:, 1:].reshape(-1)
            rows = rows[:, 1:].reshape(-1)
            keep = torch.where(probs > self.score_thresh)[0]
            boxes, probs, labels, rows = boxes[keep], probs[keep], labels[keep], rows[keep]
            keep = keep_sized(boxes, self.detection_size_rule, self.box_convention)
            boxes, probs, labels, rows = boxes[keep], probs[keep], labels[keep], rows[keep]
            if suppress:
                keep = batched_nms(boxes, probs, labels, self.nms_thresh, self.box_convention)
                keep = keep[: self.detections_per_img]
            else:
                keep = torch.sort(probs, descending=True, stable=True).indices
            keep = keep[keep_sized(boxes[keep], self.final_size_rule, self.box_convention)]
            result = {"boxes": boxes[keep], "scores": probs[keep], "labels": labels[keep]}
            for head, parts in per_head.items():
                result[f"{head}_score"] = parts[i][rows[keep], labels[keep]]
            results.append(result)
        return results

    def detect(
        self,
        features: dict[str, torch.Tensor],
        proposals: list[torch.Tensor],
        image_shapes: list[tuple[int, int]],
        modes: list[str],
        with_head_scores: bool = False,
        suppress: bool = True,
    ) -> dict[str, list[dict[str, torch.Tensor]]]:
        """Detections for several inference modes from one pass of the branches: mode -> per-image dicts
        (``boxes``, ``scores``, ``labels``: torchvision's format; with ``with_head_scores`` also each classifying
        head's ``<head>_score`` of the detected class, what evaluation writes into its results files).
        ``suppress=False``: the detections before NMS (`postprocess_probabilities`)."""
        heads = self.head_outputs(self.branch_outputs(features, proposals, image_shapes))
        head_scores = ({h: tasks["cls"].float().softmax(-1) for h, tasks in heads.items() if "cls" in tasks}
                       if with_head_scores else None)
        return {
            mode: self.postprocess_probabilities(*self.mode_scores_and_deltas(heads, mode), proposals, image_shapes,
                                                 head_scores, suppress)
            for mode in modes
        }

    def probe(
        self,
        features: dict[str, torch.Tensor],
        boxes: list[torch.Tensor],
        image_shapes: list[tuple[int, int]],
        backend: str = "auto",
    ) -> dict[str, dict[str, torch.Tensor]]:
        """Raw per-head outputs for boxes we choose (no threshold, no NMS): what the analyses of §3 need.

        Returns {head type: {"scores": (N, C+1) probabilities, "boxes": (N, C+1, 4) decoded xyxy}}, each key present
        only when that head has the task. ``backend``: the RoIAlign implementation, see `LevelPooler`. ``boxes`` and
        the decoded boxes are in the continuous frame whatever the model's box convention (`to_convention`).
        """
        boxes = [to_convention(b, self.box_convention) for b in boxes]
        heads = self.head_outputs(self.branch_outputs(features, boxes, image_shapes, backend))
        out: dict[str, dict[str, torch.Tensor]] = {}
        for head, tasks in heads.items():
            if "cls" in tasks:
                out.setdefault(head, {})["scores"] = tasks["cls"].float().softmax(-1)
            if "reg" in tasks:
                decoded = from_convention(self.box_coder.decode(tasks["reg"].float(), boxes), self.box_convention)
                out.setdefault(head, {})["boxes"] = decoded
        return out

    def forward(self, features, proposals, image_shapes, targets=None):  # noqa: D401 - torchvision's signature
        if self.training:
            if targets is None:
                raise ValueError("targets are required in training mode")
            proposals, _, labels, regression_targets = self.select_training_samples(proposals, targets)
            outputs = self.branch_outputs(features, proposals, image_shapes)
            return [], self.branch_losses(outputs, labels, regression_targets)
        return self.detect(features, proposals, image_shapes, [self.mode])[self.mode], {}
