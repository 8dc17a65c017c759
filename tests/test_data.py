"""The COCO-format dataset, the transforms and the VOC converter, on tiny hand-made folders."""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from dhanalysis.config import DataConfig
from dhanalysis.data.coco import CocoDataset, build_dataset, collate_fn, split_paths, summarize_coco_json
from dhanalysis.data.transforms import RandomHorizontalFlip, Resize, build_transforms, hflip_boxes, resized_shape
from dhanalysis.data.voc import VOC_CLASSES, voc_box_to_coco, voc_to_coco
from dhanalysis.errors import BadImages, DHError

# Non-contiguous category ids, listed out of order: labels must follow the sorted ids.
CATEGORIES = [{"id": 7, "name": "dog"}, {"id": 2, "name": "cat"}, {"id": 15, "name": "bird"}]
IMAGES = [  # (id, file name, width, height)
    (11, "a.png", 40, 30),
    (12, "b.png", 20, 20),
    (13, "c.png", 30, 30),  # no annotations at all
]
ANNOTATIONS = [  # (image id, category id, bbox, iscrowd)
    (11, 7, [5, 5, 10, 10], 0),  # normal
    (11, 2, [0, 0, 20, 20], 1),  # crowd
    (11, 2, [math.nan, 1, 2, 2], 0),  # NaN
    (11, 2, [1, 1, 0, 5], 0),  # zero width
    (11, 2, [1, 1, 5, -3], 0),  # negative height
    (11, 15, [50, 5, 10, 10], 0),  # wholly outside (image is 40 wide)
    (11, 15, [35, 25, 10, 10], 0),  # partly outside: clipped to [35, 25, 40, 30]
    (12, 15, [2, 2, 4, 4], 0),
]


def write_coco(root: Path, split: str = "val", images=IMAGES, annotations=ANNOTATIONS, categories=CATEGORIES) -> Path:
    image_dir, ann_file = split_paths(root, split)
    image_dir.mkdir(parents=True, exist_ok=True)
    ann_file.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for _, name, w, h in images:
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(image_dir / name)
    data = {
        "images": [{"id": i, "file_name": n, "width": w, "height": h} for i, n, w, h in images],
        "annotations": [
            {"id": k, "image_id": img, "category_id": cat, "bbox": bbox, "area": 1.0, "iscrowd": crowd}
            for k, (img, cat, bbox, crowd) in enumerate(annotations, start=1)
        ],
        "categories": categories,
    }
    ann_file.write_text(json.dumps(data))  # json writes NaN as a bare NaN, which json.load reads back
    return root


@pytest.fixture
def coco_root(tmp_path: Path) -> Path:
    return write_coco(tmp_path / "coco")


def index_of(ds: CocoDataset, image_id: int) -> int:
    return ds.ids.index(image_id)


# ---------------------------------------------------------------------------------------------------------- coco
def test_split_paths_layout(tmp_path):
    image_dir, ann_file = split_paths(tmp_path, "train2017")
    assert (image_dir, ann_file) == (tmp_path / "train2017", tmp_path / "annotations" / "instances_train2017.json")


def test_category_ids_map_to_contiguous_labels_and_back(coco_root):
    ds = CocoDataset(coco_root, "val")
    assert ds.num_classes == 3
    assert ds.label_to_cat_id == {1: 2, 2: 7, 3: 15}
    assert ds.category_names == ["cat", "dog", "bird"]
    assert all(ds.label_to_cat_id[ds.cat_id_to_label[c]] == c for c in (2, 7, 15))
    target = ds.get_target(index_of(ds, 11))
    assert [ds.label_to_cat_id[int(lab)] for lab in target["labels"]] == [7, 2, 15]


def test_crowd_boxes_skipped_in_train_kept_in_eval(coco_root):
    eval_t = CocoDataset(coco_root, "val").get_target(0)
    train_t = CocoDataset(coco_root, "val", train=True).get_target(0)
    assert eval_t["iscrowd"].tolist() == [0, 1, 0]
    assert train_t["iscrowd"].tolist() == [0, 0]
    assert train_t["labels"].tolist() == [2, 3]


def test_degenerate_boxes_dropped_counted_and_partial_boxes_clipped(coco_root, caplog):
    with caplog.at_level(logging.WARNING):
        ds = CocoDataset(coco_root, "val")
    assert ds.dropped_boxes == 4
    assert ds.dropped_by_reason == {"non-finite or malformed": 1, "zero or negative size": 2, "outside the image": 1}
    assert ds.clipped_boxes == 1
    assert "dropped 4 of 8 boxes" in caplog.text
    boxes = ds.get_target(0)["boxes"]
    assert boxes.dtype == torch.float32
    assert boxes.tolist() == [[5, 5, 15, 15], [0, 0, 20, 20], [35, 25, 40, 30]]


def test_getitem_returns_float_image_and_target(coco_root):
    ds = CocoDataset(coco_root, "val")
    assert len(ds) == 3
    image, target = ds[0]
    assert image.shape == (3, 30, 40) and image.dtype == torch.float32
    assert 0.0 <= float(image.min()) and float(image.max()) <= 1.0
    assert target["image_id"] == 11 and isinstance(target["image_id"], int)
    assert target["orig_size"].tolist() == [30, 40]
    assert target["labels"].dtype == torch.int64
    assert target["area"].shape == (3,) and target["iscrowd"].shape == (3,)
    # the pixels are the file's, scaled to [0, 1]
    raw = np.array(Image.open(coco_root / "val" / "a.png"))
    assert torch.allclose(image, torch.from_numpy(raw).permute(2, 0, 1).float() / 255)


def test_image_without_boxes_has_empty_target(coco_root):
    ds = CocoDataset(coco_root, "val", train=True)
    _, target = ds[index_of(ds, 13)]
    assert target["boxes"].shape == (0, 4) and target["labels"].shape == (0,)


def test_collate_keeps_tuples(coco_root):
    ds = CocoDataset(coco_root, "val")
    images, targets = collate_fn([ds[0], ds[1]])
    assert isinstance(images, tuple) and len(images) == 2 and images[1].shape == (3, 20, 20)
    assert [t["image_id"] for t in targets] == [11, 12]


def test_missing_image_named_up_front_and_lazily(coco_root):
    (coco_root / "val" / "b.png").unlink()
    with pytest.raises(BadImages, match=r"1 of 3 images .* \(first: .*b\.png\); re-download them or remove them "
                                        r"from the annotation file, or open the split with skip_bad_images=True"):
        CocoDataset(coco_root, "val")
    ds = CocoDataset(coco_root, "val", skip_bad_images=True)
    assert [b.path.name for b in ds.skipped_images] == ["b.png"] and len(ds) == 2

    write_coco(coco_root)
    ds = CocoDataset(coco_root, "val")
    (coco_root / "val" / "b.png").unlink()
    with pytest.raises(DHError, match=r"b\.png"):
        ds[index_of(ds, 12)]


def test_malformed_json_is_one_line_error(coco_root):
    ann = coco_root / "annotations" / "instances_val.json"
    ann.write_text('{"images": [')
    with pytest.raises(DHError, match="instances_val.json is not valid JSON") as err:
        CocoDataset(coco_root, "val")
    assert "\n" not in str(err.value)
    ann.write_text(json.dumps({"images": [], "annotations": []}))
    with pytest.raises(DHError, match="lacks the list.*'categories'"):
        CocoDataset(coco_root, "val")


def test_missing_split_lists_available_splits(coco_root, tmp_path):
    write_coco(coco_root, "train")
    with pytest.raises(DHError, match="instances_train2017.json .* not found; splits with annotations under .*: "
                                      "train, val"):
        CocoDataset(coco_root, "train2017")
    (coco_root / "annotations" / "instances_test.json").write_text("{}")
    with pytest.raises(DHError, match="image folder .*test for split 'test' not found"):
        CocoDataset(coco_root, "test")
    with pytest.raises(DHError, match="data root .*nowhere does not exist"):
        CocoDataset(tmp_path / "nowhere", "val")


def test_empty_dataset_is_an_error(tmp_path):
    root = write_coco(tmp_path / "empty", images=[], annotations=[])
    with pytest.raises(DHError, match="has no images"):
        CocoDataset(root, "val")


def test_annotations_of_unknown_images_are_an_error(tmp_path):
    root = write_coco(tmp_path / "bad", annotations=ANNOTATIONS + [(99, 7, [1, 1, 2, 2], 0)])
    with pytest.raises(DHError, match=r"1 annotations refer to image ids not in 'images' .*image 99"):
        CocoDataset(root, "val")


def test_undecodable_image_listed_skipped_or_raised(coco_root):
    bad = coco_root / "val" / "b.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n this is not an image" * 3)
    ds = CocoDataset(coco_root, "val")  # the cheap checks pass: the file exists
    assert [(b.image_id, b.path) for b in ds.check_images()] == [(12, bad)]
    with pytest.raises(BadImages, match=r"b\.png cannot be decoded .*, or open the split with skip_bad_images=True"):
        ds[index_of(ds, 12)]  # never silently replaced by another image

    skipping = CocoDataset(coco_root, "val", skip_bad_images=True)
    assert skipping.ids == [11, 13] and [b.image_id for b in skipping.skipped_images] == [12]
    assert CocoDataset(coco_root, "val", skip_ids=[12]).ids == [11, 13]

    with pytest.raises(BadImages, match=r"1 of 3 images .* cannot be decoded \(first: .*b\.png"):
        CocoDataset(coco_root, "val", strict=True)


def test_truncated_jpeg_is_found(tmp_path):
    images = [(1, "a.jpg", 64, 48), (2, "b.jpg", 64, 48)]
    root = write_coco(tmp_path / "jpg", images=images, annotations=[])
    path = root / "val" / "b.jpg"
    path.write_bytes(path.read_bytes()[:300])
    ds = CocoDataset(root, "val")
    assert [b.image_id for b in ds.check_images()] == [2]


def test_build_dataset_from_config(coco_root):
    write_coco(coco_root, "train")
    cfg = DataConfig(root=str(coco_root), train_split="train", val_split="val", hflip_prob=1.0)
    train = build_dataset(cfg, train=True)
    assert train.split == "train" and train.train
    image, target = train[0]
    assert target["boxes"].tolist() == [[25, 5, 35, 15], [0, 25, 5, 30]]  # flipped in a 40-wide image
    val = build_dataset(cfg, train=False)
    assert val.split == "val" and val[0][1]["boxes"][0].tolist() == [5, 5, 15, 15]


def test_summary_counts_size_groups(coco_root):
    s = summarize_coco_json(coco_root / "annotations" / "instances_val.json")
    assert s["images"] == 3 and s["boxes"] == 8 and s["crowd"] == 1
    assert s["classes"] == ["cat", "dog", "bird"] and sum(s["size_groups"].values()) == 8


# ---------------------------------------------------------------------------------------------------- transforms
def _image_target(h: int = 30, w: int = 40) -> tuple[torch.Tensor, dict]:
    image = torch.rand(3, h, w, generator=torch.Generator().manual_seed(0))
    boxes = torch.tensor([[5.0, 5.0, 15.0, 15.0], [0.0, 10.0, 40.0, 30.0]])
    target = {"boxes": boxes, "area": torch.tensor([100.0, 800.0])}
    return image, target


def test_flip_moves_boxes_and_twice_is_identity():
    image, target = _image_target()
    flip = RandomHorizontalFlip(p=1.0)
    once_image, once = flip(image, target)
    assert once["boxes"].tolist() == [[25, 5, 35, 15], [0, 10, 40, 30]]  # x1' = 40 - x2, x2' = 40 - x1
    assert torch.equal(once_image[..., 0], image[..., -1])
    twice_image, twice = flip(once_image, once)
    assert torch.equal(twice_image, image) and torch.equal(twice["boxes"], target["boxes"])
    assert RandomHorizontalFlip(p=0.0)(image, target)[1]["boxes"] is target["boxes"]
    assert hflip_boxes(torch.zeros(0, 4), 10).shape == (0, 4)


def test_flip_probability_is_respected():
    torch.manual_seed(0)
    image, target = _image_target()
    flips = sum(RandomHorizontalFlip(0.5)(image, target)[1]["boxes"][0, 0].item() == 25 for _ in range(400))
    assert 150 < flips < 250


def test_resize_scales_boxes_by_hand():
    image, target = _image_target()  # 30 x 40
    out_image, out = Resize(min_size=60, max_size=1000)(image, target)
    assert out_image.shape == (3, 60, 80)
    assert out["boxes"].tolist() == [[10, 10, 30, 30], [0, 20, 80, 60]]
    assert out["area"].tolist() == [400, 3200]
    assert out["orig_size"].tolist() == [30, 40]
    # the long side caps the scale: min(60/30, 70/40) = 1.75 -> 52 x 70 (floor)
    capped_image, capped = Resize(min_size=60, max_size=70)(image, target)
    assert capped_image.shape == (3, 52, 70) and resized_shape(30, 40, 60, 70) == (52, 70)
    assert torch.allclose(capped["boxes"][0], torch.tensor([5 * 70 / 40, 5 * 52 / 30, 15 * 70 / 40, 15 * 52 / 30]))


def test_resize_matches_the_detector_transform():
    from torchvision.models.detection.transform import GeneralizedRCNNTransform

    image, target = _image_target(37, 53)
    ours_image, ours = Resize(min_size=100, max_size=130)(image, dict(target))
    ref = GeneralizedRCNNTransform(100, 130, image_mean=[0.0] * 3, image_std=[1.0] * 3)
    ref.training = True  # the reference resizes targets only in training mode
    ref_list, ref_targets = ref([image], [{k: v.clone() for k, v in target.items()}])
    h, w = ref_list.image_sizes[0]
    assert ours_image.shape[-2:] == (h, w)
    assert torch.allclose(ours_image, ref_list.tensors[0, :, :h, :w], atol=1e-6)
    assert torch.allclose(ours["boxes"], ref_targets[0]["boxes"])


def test_build_transforms_pipelines():
    assert build_transforms(train=False).transforms == []
    train = build_transforms(train=True, hflip_prob=0.5)
    assert [type(t).__name__ for t in train.transforms] == ["RandomHorizontalFlip"]
    resized = build_transforms(train=True, hflip_prob=0.5, min_size=64, max_size=96, resize=True)
    assert [type(t).__name__ for t in resized.transforms] == ["Resize", "RandomHorizontalFlip"]
    assert build_transforms(train=True, hflip_prob=0.0).transforms == []


# ------------------------------------------------------------------------------------------------------------ voc
def _voc_xml(filename: str, objects: list[tuple[str, tuple[int, int, int, int], int]], size=(50, 40)) -> str:
    objs = "".join(
        f"<object><name>{n}</name><difficult>{d}</difficult><bndbox><xmin>{b[0]}</xmin><ymin>{b[1]}</ymin>"
        f"<xmax>{b[2]}</xmax><ymax>{b[3]}</ymax></bndbox></object>"
        for n, b, d in objects
    )
    return (f"<annotation><filename>{filename}</filename><size><width>{size[0]}</width><height>{size[1]}</height>"
            f"<depth>3</depth></size>{objs}</annotation>")


@pytest.fixture
def voc_root(tmp_path: Path) -> Path:
    root = tmp_path / "VOC2007"
    for sub in ("JPEGImages", "Annotations", "ImageSets/Main"):
        (root / sub).mkdir(parents=True)
    for stem in ("000001", "000002"):
        Image.new("RGB", (50, 40), (120, 30, 200)).save(root / "JPEGImages" / f"{stem}.jpg")
    (root / "Annotations" / "000001.xml").write_text(
        _voc_xml("000001.jpg", [("dog", (1, 1, 10, 20), 0), ("person", (5, 6, 30, 40), 1)]))
    (root / "Annotations" / "000002.xml").write_text(_voc_xml("000002.jpg", [("cat", (11, 2, 50, 39), 0)]))
    (root / "ImageSets" / "Main" / "trainval.txt").write_text("000001\n")
    (root / "ImageSets" / "Main" / "test.txt").write_text("000002\n")
    return root


def test_voc_box_conversion():
    assert voc_box_to_coco((1, 1, 10, 20)) == [0, 0, 10, 20]


def test_voc_to_coco_boxes_categories_and_difficult(voc_root, tmp_path):
    out = tmp_path / "voc_coco"
    files = voc_to_coco(voc_root, out)
    assert set(files) == {"trainval", "test"}
    data = json.loads(files["trainval"].read_text())
    assert [c["name"] for c in data["categories"]] == list(VOC_CLASSES)
    cat = {c["name"]: c["id"] for c in data["categories"]}
    anns = [(a["category_id"], a["bbox"], a["iscrowd"]) for a in data["annotations"]]
    assert anns == [(cat["dog"], [0, 0, 10, 20], 0), (cat["person"], [4, 5, 26, 35], 1)]
    assert data["images"] == [{"id": 1, "file_name": "000001.jpg", "width": 50, "height": 40}]
    assert (out / "trainval" / "000001.jpg").is_file() and (out / "test" / "000002.jpg").is_file()

    ds = CocoDataset(out, "test")
    assert ds.num_classes == 20 and ds[0][1]["boxes"].tolist() == [[10, 1, 50, 39]]
    assert CocoDataset(out, "trainval", train=True).get_target(0)["labels"].tolist() == [cat["dog"]]
    voc_to_coco(voc_root, out)  # converting again over existing links is fine


def test_voc_without_imagesets_and_custom_names(voc_root, tmp_path):
    for p in (voc_root / "ImageSets" / "Main").iterdir():
        p.unlink()
    (voc_root / "ImageSets" / "Main").rmdir()
    (voc_root / "Annotations" / "000002.xml").write_text(_voc_xml("000002.jpg", [("zebra", (1, 1, 5, 5), 0)]))
    files = voc_to_coco(voc_root, tmp_path / "out")
    data = json.loads(files["all"].read_text())
    assert [c["name"] for c in data["categories"]] == ["dog", "person", "zebra"]
    assert len(data["images"]) == 2


def test_voc_malformed_xml_names_the_file(voc_root, tmp_path):
    (voc_root / "Annotations" / "000002.xml").write_text("<annotation><object>")
    with pytest.raises(DHError, match=r"000002\.xml is not valid XML"):
        voc_to_coco(voc_root, tmp_path / "out")
    with pytest.raises(DHError, match="VOC split file .*val.txt not found; splits under .*: test, trainval"):
        voc_to_coco(voc_root, tmp_path / "out", splits=("val",))
