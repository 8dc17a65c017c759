"""The conventions of the source frameworks, one model option each (docs/published-models.md), against independent
references: float64 computations of each library's documented rule and hand-worked cases. Tiny sizes throughout."""

from __future__ import annotations

import math

import pytest
import torch
from torchvision.models.detection.image_list import ImageList

from dhanalysis.model.build import build_model

from helpers import tiny_config

NO_WEIGHTS = "model.backbone.weights=null"


def grid_anchors_reference(cell: torch.Tensor, grid: tuple[int, int], stride: int) -> torch.Tensor:
    """detectron2's / mmdetection's grid, float64: every cell anchor about (x·stride, y·stride), row-major positions
    (y, then x), the cell anchors of a position together."""
    ys, xs = torch.meshgrid(torch.arange(grid[0], dtype=torch.float64) * stride,
                            torch.arange(grid[1], dtype=torch.float64) * stride, indexing="ij")
    shifts = torch.stack([xs, ys, xs, ys], dim=-1).reshape(-1, 1, 4)
    return (shifts + cell.double()[None]).reshape(-1, 4)


@pytest.mark.parametrize("strides", [(), (4, 8, 16, 32, 64)])
def test_anchor_strides_fixed_per_level_or_torchvision_rule(strides):
    """A 640×480 photo resized to 800×1066 pads to 800×1088: P6 is a 13×17 grid, whose stride is 64 in detectron2,
    mmdetection and maskrcnn-benchmark but 800 // 13 = 61 down the rows under torchvision's rule."""
    setting = f"model.rpn.anchor_strides=[{','.join(map(str, strides))}]"
    model = build_model(tiny_config("single-fc", NO_WEIGHTS, setting)).eval()
    generator = model.rpn.anchor_generator
    padded = (800, 1088)
    grids = [(200, 272), (100, 136), (50, 68), (25, 34), (13, 17)]
    feats = [torch.zeros(1, 1, *g) for g in grids]
    anchors = generator(ImageList(torch.zeros(1, 3, *padded), [(800, 1066)]), feats)[0]
    expected = []
    for level, (grid, cell) in enumerate(zip(grids, generator.cell_anchors)):
        stride = (4, 8, 16, 32, 64)[level]
        if strides:
            expected.append(grid_anchors_reference(cell, grid, stride))
        else:  # torchvision's rule, written out: stride per axis = padded size // grid size
            sy, sx = padded[0] // grid[0], padded[1] // grid[1]
            ys, xs = torch.meshgrid(torch.arange(grid[0]) * sy, torch.arange(grid[1]) * sx, indexing="ij")
            shifts = torch.stack([xs, ys, xs, ys], dim=-1).reshape(-1, 1, 4).double()
            expected.append((shifts + cell.double()[None]).reshape(-1, 4))
    torch.testing.assert_close(anchors.double(), torch.cat(expected), rtol=0, atol=1e-4)
    last_row_y = anchors[-3:, 1] + anchors[-3:, 3]  # centres ×2 of the bottom-right P6 cell's anchors
    assert torch.allclose(last_row_y / 2, torch.tensor(12.0 * (64 if strides else 61)))


# ------------------------------------------------------------------------------------------------ box conventions
def plus_one_iou(a: list[float], b: list[float]) -> float:
    """Detectron's pixel-index IoU, float64: a box [x1, x2] covers x2 − x1 + 1 pixels."""
    iw = min(a[2], b[2]) - max(a[0], b[0]) + 1
    ih = min(a[3], b[3]) - max(a[1], b[1]) + 1
    inter = max(iw, 0) * max(ih, 0)
    area = lambda r: (r[2] - r[0] + 1) * (r[3] - r[1] + 1)  # noqa: E731
    return inter / (area(a) + area(b) - inter)


def test_plus_one_box_coder_decodes_like_maskrcnn_benchmark():
    """Hand-worked: (10, 20, 29, 59) is 20 × 40 pixels about (20, 40); zero deltas give it back (x2 = 20 + 10 − 1),
    dx = 0.1 (code 1 at weight 10) moves it by 2 px, dw = log 2 (code 5·log 2) doubles it to 40 px: x1 = 0, x2 = 39."""
    from dhanalysis.model.conventions import ConventionBoxCoder

    coder = ConventionBoxCoder((10.0, 10.0, 5.0, 5.0), "plus_one")
    box = torch.tensor([[10.0, 20.0, 29.0, 59.0]])
    codes = torch.tensor([[0.0, 0.0, 0.0, 0.0], [1.0, 0.0, 0.0, 0.0], [0.0, 0.0, 5 * math.log(2), 0.0]])
    out = coder.decode_single(codes, box.expand(3, 4))
    expected = torch.tensor([[10.0, 20.0, 29.0, 59.0], [12.0, 20.0, 31.0, 59.0], [0.0, 20.0, 39.0, 59.0]])
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-5)
    torch.testing.assert_close(coder.encode_single(expected, box.expand(3, 4)), codes, rtol=0, atol=1e-5)
    continuous = ConventionBoxCoder((10.0, 10.0, 5.0, 5.0)).decode_single(codes[:1], box)
    assert torch.equal(continuous, box)  # continuous: the same box too, but it is 19 × 39 px there


def test_two_sided_clamp_bounds_shrinking_like_mmdetection():
    """mmdetection clamps dw to [−log(1000/16), log(1000/16)]: a 20-px box decoded with dw = −10 is 20·16/1000 px
    wide, not 20·e^−10; growing is capped alike by both rules."""
    from dhanalysis.model.conventions import ConventionBoxCoder

    box = torch.tensor([[0.0, 0.0, 20.0, 20.0]])
    codes = torch.tensor([[0.0, 0.0, -10.0, 10.0]])
    both = ConventionBoxCoder((1.0, 1.0, 1.0, 1.0), clamp="both").decode_single(codes, box)[0]
    top = ConventionBoxCoder((1.0, 1.0, 1.0, 1.0), clamp="max").decode_single(codes, box)[0]
    assert float(both[2] - both[0]) == pytest.approx(20 * 16 / 1000, rel=1e-5)
    assert float(top[2] - top[0]) == pytest.approx(20 * math.exp(-10), abs=1e-6)  # float32 corners near 10
    assert float(both[3] - both[1]) == pytest.approx(20 * 1000 / 16, rel=1e-5) == float(top[3] - top[1])


def test_plus_one_clipping_nms_expansion_levels_and_export():
    """Each place of the +1 convention against hand-worked cases from maskrcnn-benchmark's formulas."""
    from dhanalysis.model.conventions import batched_nms, clip_to_image, scale_boxes_about_centre
    from dhanalysis.model.gather_roi import map_levels

    boxes = torch.tensor([[-5.0, -3.0, 70.0, 55.0]])
    assert clip_to_image(boxes, (50, 60), "plus_one").tolist() == [[0.0, 0.0, 59.0, 49.0]]
    assert clip_to_image(boxes, (50, 60)).tolist() == [[0.0, 0.0, 60.0, 50.0]]
    # two 2×2-pixel boxes sharing a column: +1 IoU 1/3, continuous IoU 0
    a, b = [0.0, 0.0, 1.0, 1.0], [1.0, 0.0, 2.0, 1.0]
    assert plus_one_iou(a, b) == pytest.approx(1 / 3)
    pair, scores, same = torch.tensor([a, b]), torch.tensor([0.9, 0.8]), torch.zeros(2, dtype=torch.int64)
    assert batched_nms(pair, scores, same, 0.3, "plus_one").tolist() == [0]
    assert batched_nms(pair, scores, same, 0.34, "plus_one").tolist() == [0, 1]
    assert batched_nms(pair, scores, same, 0.3).tolist() == [0, 1]
    # the authors' 1.3× enlargement: (10, 10, 29, 29) is 20 px about 20; 26 px about 20 is (7, 32)
    big = scale_boxes_about_centre(torch.tensor([[10.0, 10.0, 29.0, 29.0]]), 1.3, "plus_one")
    torch.testing.assert_close(big, torch.tensor([[7.0, 7.0, 32.0, 32.0]]))
    torch.testing.assert_close(scale_boxes_about_centre(torch.tensor([[10.0, 10.0, 30.0, 30.0]]), 1.3),
                               torch.tensor([[7.0, 7.0, 33.0, 33.0]]))
    # FPN level: a 111-px box is √(111²) = 111 < 112 → P2 continuous, but 112 px with +1 → ⌊4 + log2(0.5)⌋ = P3
    box = torch.tensor([[0.0, 0.0, 111.0, 111.0]])
    scales = [1 / 4, 1 / 8, 1 / 16, 1 / 32]
    assert map_levels(box, scales).tolist() == [0] and map_levels(box, scales, "plus_one").tolist() == [1]


def test_plus_one_models_speak_continuous_boxes_at_their_boundary():
    """A plus_one detection (10, 20, 29, 59) covers pixels 10..29: its COCO box is [10, 20, 20, 40], what
    maskrcnn-benchmark exports (w = x2 − x1 + 1); the probe reads a continuous window (10, 20, 30, 60) as that box
    and answers in the continuous frame."""
    from dhanalysis.engine.evaluate import to_coco_results

    dets = [{"boxes": torch.tensor([[10.0, 20.0, 29.0, 59.0]]), "scores": torch.tensor([0.5]),
             "labels": torch.tensor([1])}]
    for convention, bbox in (("plus_one", [10.0, 20.0, 20.0, 40.0]), ("continuous", [10.0, 20.0, 19.0, 39.0])):
        model = build_model(tiny_config("single-fc", NO_WEIGHTS, f"model.box_convention={convention}")).eval()
        out = model.transform.postprocess([dict(d) for d in dets], [(100, 100)], [(100, 100)])
        assert to_coco_results(out[0], 7, {1: 3})[0]["bbox"] == bbox
    model = build_model(tiny_config("single-fc", NO_WEIGHTS, "model.box_convention=plus_one")).eval()
    seen = {}
    decode = model.roi_heads.box_coder.decode
    model.roi_heads.box_coder.decode = lambda codes, boxes: seen.setdefault("boxes", boxes) and decode(codes, boxes)
    feats = {k: torch.randn(1, 16, 32 // 2**i, 32 // 2**i) for i, k in enumerate(["0", "1", "2", "3"])}
    window = torch.tensor([[10.0, 20.0, 30.0, 60.0]])
    out = model.roi_heads.probe(feats, [window], [(128, 128)])
    assert seen["boxes"][0].tolist() == [[10.0, 20.0, 29.0, 59.0]]
    with torch.no_grad():
        model.roi_heads.branches["fc"].predictor.bbox_pred.weight.zero_()
        model.roi_heads.branches["fc"].predictor.bbox_pred.bias.zero_()
    out = model.roi_heads.probe(feats, [window], [(128, 128)])
    torch.testing.assert_close(out["fc"]["boxes"][0, 1], window[0])  # zero deltas: the window itself


def test_box_filters_drop_what_each_library_drops():
    """torchvision drops proposals under 1e-3 px and detections under 1e-2 px; detectron2 and mmdetection drop only
    empty proposals (w > 0 and h > 0); detectron2 drops empty detections after NMS, mmdetection none;
    maskrcnn-benchmark drops nothing."""
    from dhanalysis.model.conventions import BOX_FILTERS, keep_sized

    boxes = torch.tensor([[0, 0, 5, 5], [0, 0, 0, 5], [0, 0, 5e-4, 5], [0, 0, 5e-3, 5], [0, 0, 5, 2e-2],
                          [0, 3, 5, 3]])
    kept = {name: tuple(keep_sized(boxes, r).tolist() for r in (rule.proposals, rule.detections, rule.final))
            for name, rule in BOX_FILTERS.items()}
    everything = [0, 1, 2, 3, 4, 5]
    assert kept["torchvision"] == ([0, 3, 4], [0, 4], everything)
    assert kept["detectron2"] == ([0, 2, 3, 4], everything, [0, 2, 3, 4])
    assert kept["nonempty"] == ([0, 2, 3, 4], everything, everything)
    assert kept["none"] == (everything, everything, everything)


def off_image_regressor(model: torch.nn.Module) -> torch.nn.Module:
    """The box regressor of a tiny Single-FC made extreme: class 1's boxes move 100 widths right and class 2's 100
    heights up, so clipping leaves them empty (a line on the image's border); class 3's stay the proposals."""
    predictor = model.roi_heads.branches["fc"].predictor.bbox_pred
    with torch.no_grad():
        predictor.weight.zero_()
        predictor.bias.zero_()
        predictor.bias[4 * 1 + 0] = 1000.0  # dx = 1000 / 10 widths
        predictor.bias[4 * 2 + 1] = -1000.0  # dy
    return model


def test_detectron2_drops_empty_detections_last():
    """Under a regressor that throws boxes off the image, ``box_filter=nonempty`` (mmdetection) keeps zero-size
    detections and ``detectron2`` keeps none: it returns exactly mmdetection's detections less the empty ones, so an
    empty box that made the top k leaves its slot unfilled (detectron2 filters after NMS and the cut)."""
    from helpers import two_images

    images, _ = two_images()
    settings = ["model.score_thresh=0.0", "model.detections_per_img=40"]
    torch.manual_seed(0)
    keeping = off_image_regressor(build_model(tiny_config("single-fc", NO_WEIGHTS, *settings,
                                                          "model.box_filter=nonempty")).eval())
    dropping = build_model(tiny_config("single-fc", NO_WEIGHTS, *settings, "model.box_filter=detectron2")).eval()
    dropping.load_state_dict(keeping.state_dict())
    torchvision_rule = build_model(tiny_config("single-fc", NO_WEIGHTS, *settings)).eval()
    torchvision_rule.load_state_dict(keeping.state_dict())
    with torch.no_grad():
        kept, dropped, default = keeping(images), dropping(images), torchvision_rule(images)
    for k, d, t in zip(kept, dropped, default):
        wh = k["boxes"][:, 2:] - k["boxes"][:, :2]
        empty = (wh <= 0).any(dim=1)
        assert empty.sum() > 0 and (~empty).sum() > 0 and len(k["boxes"]) == 40
        assert {int(c) for c in k["labels"][empty]} <= {1, 2}
        for key in ("boxes", "scores", "labels"):
            assert torch.equal(d[key], k[key][~empty]), key
        # torchvision drops them before NMS, so its top 40 refills with every non-empty box; detectron2's does not
        assert ((t["boxes"][:, 2:] - t["boxes"][:, :2]) > 0).all() and len(d["boxes"]) < len(t["boxes"]) < 40


def test_the_detectron2_converter_turns_the_empty_detection_rule_on():
    """The settings of a converted detectron2 model drop empty detections (its ``detector_postprocess``)."""
    import numpy as np

    from dhanalysis.config import load_config
    from dhanalysis.model.conventions import BOX_FILTERS, keep_sized
    from dhanalysis.model.convert import from_detectron2

    state = {f"backbone.bottom_up.res4.{i}.conv1.weight": np.zeros((1, 1, 1, 1), np.float32) for i in range(6)}
    state.update({"backbone.fpn_output2.weight": np.zeros((16, 16, 3, 3), np.float32),
                  "roi_heads.box_head.fc1.weight": np.zeros((32, 16), np.float32),
                  "roi_heads.box_predictor.cls_score.weight": np.zeros((4, 32), np.float32),
                  "roi_heads.box_predictor.bbox_pred.weight": np.zeros((12, 32), np.float32)})
    conversion = from_detectron2.convert({"model": state}, "model_final.pkl", (1, 2, 3))
    cfg = load_config(None, values={"model.backbone.weights": None, **conversion.settings})
    rule = BOX_FILTERS[cfg.model.box_filter].final
    boxes = torch.tensor([[0.0, 0.0, 5.0, 5.0], [7.0, 0.0, 7.0, 5.0], [0.0, 4.0, 5.0, 4.0], [1.0, 1.0, 1.5, 1.5]])
    assert keep_sized(boxes, rule).tolist() == [0, 3]
    assert load_config(None, []).model.box_filter == "torchvision"  # our own models keep torchvision's rule


def test_default_rpn_filter_is_torchvisions_and_plus_one_clips_to_the_last_pixel():
    from torchvision.models.detection.rpn import RegionProposalNetwork

    g = torch.Generator().manual_seed(0)
    centre = torch.rand(1, 300, 2, generator=g) * 80 - 10
    size = torch.rand(1, 300, 2, generator=g) * 30
    proposals = torch.cat([centre - size / 2, centre + size / 2], dim=2)
    proposals[0, :20, 2] = proposals[0, :20, 0]  # empty boxes
    objectness = torch.randn(1, 300, generator=g)
    args = (proposals, objectness, [(50, 60)], [200, 100])
    model = build_model(tiny_config("single-fc", NO_WEIGHTS)).eval()
    reference = RegionProposalNetwork(model.rpn.anchor_generator, model.rpn.head, 0.7, 0.3, 256, 0.5,
                                      {"training": 50, "testing": 50}, {"training": 30, "testing": 30}, 0.7).eval()
    for ours, theirs in zip(model.rpn.filter_proposals(*args), reference.filter_proposals(*args)):
        assert torch.equal(ours[0], theirs[0])
    plus = build_model(tiny_config("single-fc", NO_WEIGHTS, "model.box_convention=plus_one",
                                   "model.box_filter=none")).eval()
    boxes = plus.rpn.filter_proposals(proposals, objectness, [(50, 60)], [300])[0][0].tolist()  # one level
    assert max(b[2] for b in boxes) == 59.0 and max(b[3] for b in boxes) == 49.0
    assert any(b[2] == b[0] for b in boxes)  # an empty box is one pixel wide here, and kept
    # no two kept boxes overlap by more than the NMS threshold in the +1 IoU
    assert max(plus_one_iou(boxes[i], boxes[j]) for i in range(len(boxes)) for j in range(i)) <= 0.7


# ------------------------------------------------------------------------------------------------ resizing
@pytest.mark.parametrize("shape, torchvision, rounded, maskrcnn", [
    ((480, 640), (800, 1066), (800, 1067), (800, 1066)),  # 1066.67: floor vs int(x + 0.5)
    ((640, 427), (1199, 800), (1199, 800), (1199, 800)),  # 1199.06 (portrait 3:2)
    ((400, 1000), (533, 1333), (533, 1333), (533, 1332)),  # long side caps: maskrcnn-benchmark rounds 533.2 → 533,
    ((375, 500), (800, 1066), (800, 1067), (800, 1066)),  # then floors 533·1000/400 = 1332.5
])
def test_resize_rules_give_each_librarys_size(shape, torchvision, rounded, maskrcnn):
    """Hand-worked from each library's rule (min 800, max 1333): torchvision floors side·scale, detectron2 and
    mmdetection take int(side·scale + 0.5), maskrcnn-benchmark fixes the short side and floors the long one."""
    from dhanalysis.model.conventions import resized_size

    assert resized_size(*shape, 800, 1333) == torchvision
    assert resized_size(*shape, 800, 1333, "round") == rounded
    assert resized_size(*shape, 800, 1333, "maskrcnn_benchmark") == maskrcnn


def test_round_resize_is_the_8bit_bilinear_resize_of_pil():
    """With ``resize_rule=round`` (detectron2's size) and ``resize_kernel=pil`` the network sees PIL's bilinear
    upscaling of the 8-bit image, normalised, pixel for pixel; the float kernel differs on about a fifth of them (PIL
    rounds to 8 bits between its horizontal and vertical passes)."""
    import numpy as np
    from PIL import Image

    g = torch.Generator().manual_seed(0)
    pixels = (torch.rand(3, 30, 40, generator=g) * 255).round().to(torch.uint8)
    seen = {}
    for kernel in ("pil", "float"):
        model = build_model(tiny_config("single-fc", NO_WEIGHTS, "model.resize_rule=round", "model.min_size=77",
                                        f"model.resize_kernel={kernel}", "model.max_size=200",
                                        "model.pixel_mean=[0,0,0]", "model.pixel_std=[1,1,1]")).eval()
        images, _ = model.transform([pixels.float() / 255])
        h, w = images.image_sizes[0]
        assert (h, w) == (77, int(40 * 77 / 30 + 0.5)) == (77, 103)  # torchvision's floor would give 102
        seen[kernel] = images.tensors[0, :, :h, :w] * 255
    pil = Image.fromarray(pixels.permute(1, 2, 0).numpy()).resize((w, h), Image.BILINEAR)
    ref = torch.from_numpy(np.array(pil)).permute(2, 0, 1).float()
    assert torch.allclose(seen["pil"], ref, atol=1e-3)
    assert torch.equal(seen["float"], seen["float"].round()) and (seen["float"] - ref).abs().max() == 1.0
    assert 0.05 < (seen["float"] != ref).float().mean() < 0.5


@pytest.mark.parametrize("shape, size", [((30, 40), (77, 103)), ((61, 47), (40, 31)), ((64, 96), (32, 48)),
                                         ((1000, 700), (333, 233)), ((30, 40), (30, 77)), ((25, 25), (25, 25))])
def test_pil_kernel_is_pillows_bilinear_exactly(shape, size):
    """``resize_kernel=pil`` equals Pillow's ``BILINEAR`` resize of the 8-bit image on every pixel: upscaling,
    shrinking (where Pillow widens its filter, antialiasing: three times smaller here), one axis only, identity."""
    import numpy as np
    from PIL import Image

    from dhanalysis.model.conventions import resize_8bit

    g = torch.Generator().manual_seed(sum(shape) + sum(size))
    pixels = (torch.rand(3, *shape, generator=g) * 255).round()
    ref = Image.fromarray(pixels.permute(1, 2, 0).to(torch.uint8).numpy()).resize((size[1], size[0]), Image.BILINEAR)
    ref = torch.from_numpy(np.array(ref)).permute(2, 0, 1).float()
    assert torch.equal(resize_8bit(pixels, size, "pil"), ref)
    if size != shape:
        assert not torch.equal(resize_8bit(pixels, size, "float"), ref)


@pytest.mark.parametrize("shape, size", [((30, 40), (77, 103)), ((61, 47), (40, 31)), ((32, 48), (64, 96)),
                                         ((25, 25), (25, 25)), ((48, 64), (80, 107)), ((64, 96), (32, 48))])
def test_opencv_kernel_is_cv2_inter_linear_exactly(shape, size):
    """``resize_kernel=opencv`` gives OpenCV's ``INTER_LINEAR`` 8-bit pixels (mmdetection's ``mmcv.imresize``)
    exactly, up and down and at whole scales; the float kernel lands a level off on some of them, which is why the
    option exists. Through the model's transform too, for the shape a converted mmdetection model sees."""
    cv2 = pytest.importorskip("cv2")
    import numpy as np

    from dhanalysis.model.conventions import resize_8bit

    g = torch.Generator().manual_seed(sum(shape) + sum(size))
    pixels = (torch.rand(3, *shape, generator=g) * 255).round()
    ref = cv2.resize(pixels.permute(1, 2, 0).to(torch.uint8).numpy(), (size[1], size[0]),
                     interpolation=cv2.INTER_LINEAR)
    ref = torch.from_numpy(np.ascontiguousarray(ref)).permute(2, 0, 1).float()
    assert torch.equal(resize_8bit(pixels, size, "opencv"), ref)
    if size != shape:
        assert not torch.equal(resize_8bit(pixels, size, "float"), ref)
    if shape == (30, 40):
        model = build_model(tiny_config("single-fc", NO_WEIGHTS, "model.resize_rule=round",
                                        "model.resize_kernel=opencv", "model.min_size=77", "model.max_size=200",
                                        "model.pixel_mean=[0,0,0]", "model.pixel_std=[1,1,1]")).eval()
        images, _ = model.transform([pixels / 255])
        assert tuple(images.image_sizes[0]) == size
        assert torch.allclose(images.tensors[0, :, :size[0], :size[1]] * 255, ref, atol=1e-3)


def test_exif_orientation_turns_the_image_as_detectron2_reads_it(tmp_path):
    """A file stored 4×6 with orientation 6 (turn 90° clockwise to view) decodes 6×4 with the option, as
    ``PIL.ImageOps.exif_transpose`` shows it, and as stored without it."""
    import numpy as np
    from PIL import Image

    from dhanalysis.data.coco import decode_image

    pixels = np.arange(4 * 6 * 3, dtype=np.uint8).reshape(4, 6, 3) * 3
    image = Image.fromarray(pixels)
    exif = image.getexif()
    exif[0x0112] = 6
    path = tmp_path / "turned.png"
    image.save(path, exif=exif.tobytes())
    stored = decode_image(path)
    turned = decode_image(path, exif_orientation=True)
    assert stored.shape == (3, 4, 6) and torch.equal(stored * 255, torch.from_numpy(pixels).permute(2, 0, 1).float())
    clockwise = np.rot90(pixels, k=-1)  # orientation 6: the viewer turns the stored grid 90° clockwise
    assert turned.shape == (3, 6, 4)
    assert torch.equal((turned * 255).round(), torch.from_numpy(clockwise.copy()).permute(2, 0, 1).float())
