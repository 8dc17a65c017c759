"""The synthetic shapes dataset: deterministic, COCO-valid, tight boxes, all size groups, reused when complete."""

from __future__ import annotations

import argparse
import contextlib
import importlib
import io
import json
from pathlib import Path

import numpy as np
import pytest

from dhanalysis.data.coco import CocoDataset, size_group
from dhanalysis.data.synth import CLASSES, SynthParams, make_synth_dataset, render_synth_image
from dhanalysis.errors import DHError
from dhanalysis.folders import FolderTaken

TINY = dict(num_train=10, num_val=5, image_size=128, seed=0)


@pytest.fixture(scope="module")
def synth_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("synth")
    make_synth_dataset(root, **TINY)
    return root


def load(root: Path, split: str) -> dict:
    return json.loads((root / "annotations" / f"instances_{split}.json").read_text())


def files_of(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_same_seed_gives_identical_files_and_another_seed_differs(synth_root, tmp_path):
    again = tmp_path / "again"
    make_synth_dataset(again, **TINY)
    assert files_of(again) == files_of(synth_root)
    other = tmp_path / "other"
    make_synth_dataset(other, **{**TINY, "seed": 1})
    assert load(other, "train")["annotations"] != load(synth_root, "train")["annotations"]
    assert (other / "train" / "000001.jpg").read_bytes() != (synth_root / "train" / "000001.jpg").read_bytes()


def test_layout_and_json_fields(synth_root):
    for split, n in (("train", 10), ("val", 5)):
        data = load(synth_root, split)
        assert set(data) == {"info", "licenses", "images", "annotations", "categories"}
        assert len(data["images"]) == n
        assert all((synth_root / split / img["file_name"]).is_file() for img in data["images"])
        assert all(a["iscrowd"] == 0 and a["area"] > 0 for a in data["annotations"])
        assert data["info"]["params"] == {**SynthParams(**TINY).__dict__}


def test_six_classes_with_non_contiguous_ids(synth_root):
    cats = load(synth_root, "train")["categories"]
    ids = [c["id"] for c in cats]
    assert len(cats) >= 6 and len(set(c["name"] for c in cats)) == len(cats)
    assert ids != list(range(1, len(ids) + 1))
    used = {a["category_id"] for a in load(synth_root, "train")["annotations"]}
    assert used <= set(ids)


def test_every_split_has_all_three_size_groups(synth_root):
    for split in ("train", "val"):
        groups = {size_group(a["area"]) for a in load(synth_root, split)["annotations"]}
        assert groups == {"small", "medium", "large"}, split


def test_boxes_inside_image_and_tight_to_the_drawn_shapes(synth_root):
    params = SynthParams(**TINY)
    size = params.image_size
    data = load(synth_root, "train")
    pending = ["small", "medium", "large"]
    for image in data["images"]:
        drawn = render_synth_image(params, "train", image["id"], pending)
        anns = [a for a in data["annotations"] if a["image_id"] == image["id"]]
        assert len(anns) == len(drawn.objects) >= 1
        for ann, obj in zip(anns, drawn.objects):
            x, y, w, h = ann["bbox"]
            assert 0 <= x and 0 <= y and x + w <= size + 1e-6 and y + h <= size + 1e-6 and w > 0 and h > 0
            assert ann["category_id"] == obj.category_id
            # The box is the bounding box of the shape's coverage mask (to a pixel: edges are anti-aliased).
            mask = obj.mask(size)
            rows, cols = np.nonzero(mask > 0.02)
            assert abs(cols.min() - x) <= 1 and abs(cols.max() + 1 - (x + w)) <= 1
            assert abs(rows.min() - y) <= 1 and abs(rows.max() + 1 - (y + h)) <= 1
            assert ann["occlusion"] <= params.max_occlusion + 1e-3
    # the pixels of the file are the pixels drawn (JPEG adds only small errors)
    from PIL import Image

    first = np.asarray(Image.open(synth_root / "train" / "000001.jpg"), dtype=np.float32)
    redrawn = render_synth_image(params, "train", 1, ["small", "medium", "large"]).pixels.astype(np.float32)
    assert np.abs(first - redrawn).mean() < 6


def test_objects_occlude_and_touch_the_border():
    root_params = SynthParams(num_train=30, num_val=1, image_size=160)
    objects = [o for i in range(1, 31) for o in render_synth_image(root_params, "train", i).objects]
    assert any(o.occlusion > 0.1 for o in objects)
    assert any(min(o.full_box) < 0 or max(o.full_box) > 160 for o in objects)
    assert all(0 <= min(o.box) and max(o.box) <= 160 for o in objects)
    assert {o.category_id for o in objects} == {c.cat_id for c in CLASSES}


def test_loads_with_pycocotools_and_the_dataset(synth_root):
    from pycocotools.coco import COCO

    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO(str(synth_root / "annotations" / "instances_val.json"))
    assert sorted(coco.getCatIds()) == [c.cat_id for c in CLASSES]
    ds = CocoDataset(synth_root, "val")
    assert ds.num_classes == len(CLASSES) and ds.dropped_boxes == 0
    image, target = ds[0]
    assert image.shape == (3, 128, 128) and target["boxes"].shape[0] >= 1
    assert int(target["labels"].max()) <= len(CLASSES)


def test_existing_dataset_is_reused_unless_params_change_or_overwrite(tmp_path):
    root = tmp_path / "reuse"
    small = dict(num_train=3, num_val=2, image_size=64, min_object_size=8, max_object_size=60)
    assert make_synth_dataset(root, **small).reused is False
    stamp = (root / "annotations" / "instances_train.json").stat().st_mtime_ns
    assert make_synth_dataset(root, **small).reused is True
    assert (root / "annotations" / "instances_train.json").stat().st_mtime_ns == stamp
    assert make_synth_dataset(root, **small, overwrite=True).reused is False
    with pytest.raises(FolderTaken, match=r"of other parameters \(the train split's num_train: 3 vs 2\)"):
        make_synth_dataset(root, **{**small, "num_train": 2})  # other parameters: only with overwrite
    fewer = make_synth_dataset(root, **{**small, "num_train": 2}, overwrite=True)
    assert fewer.reused is False and sorted(p.name for p in (root / "train").iterdir()) == ["000001.jpg", "000002.jpg"]
    (root / "val" / "000001.jpg").unlink()  # an incomplete folder is regenerated
    assert make_synth_dataset(root, **{**small, "num_train": 2}).reused is False
    assert not list(root.rglob("*.tmp"))


def test_png_format_and_bad_params(tmp_path):
    make_synth_dataset(tmp_path / "png", num_train=1, num_val=1, image_size=48, image_format="png",
                       min_object_size=6, max_object_size=40)
    assert (tmp_path / "png" / "val" / "000001.png").is_file()
    with pytest.raises(DHError, match="at least one image"):
        make_synth_dataset(tmp_path / "x", num_train=0, num_val=0)
    with pytest.raises(DHError, match="unknown synthetic-dataset option"):
        make_synth_dataset(tmp_path / "x", colour="red")


def _cli_main():
    """The real entry point when every registered subcommand imports, else a parser over this module alone."""
    from dhanalysis.cli import COMMANDS, main

    try:
        for module_name, _ in COMMANDS.values():
            importlib.import_module(module_name)
        return main
    except ImportError:
        from dhanalysis.cli import data as data_cli

        def run(argv: list[str]) -> int:
            parser = argparse.ArgumentParser()
            data_cli.add_arguments(parser)
            return data_cli.run(parser.parse_args(argv[1:]))

        return run


def test_cli_data_synth(tmp_path, capsys):
    out = tmp_path / "cli"
    assert _cli_main()(["data", "synth", "--out", str(out), "--num-train", "4", "--num-val", "2"]) == 0
    text = capsys.readouterr().out
    assert f"wrote the synthetic dataset in {out}" in text
    assert "train: 4 images" in text and "val: 2 images" in text and "6 classes" in text
    assert len(load(out, "train")["images"]) == 4


def test_the_test_split_is_held_out_disjoint_ids_and_pixels(tmp_path):
    root = tmp_path / "with-test"
    make_synth_dataset(root, **{**TINY, "num_test": 4})
    train, val, test = (load(root, s) for s in ("train", "val", "test"))
    assert len(test["images"]) == 4
    test_ids = {img["id"] for img in test["images"]}
    assert not test_ids & ({img["id"] for img in train["images"]} | {img["id"] for img in val["images"]})
    assert {a["image_id"] for a in test["annotations"]} <= test_ids
    # drawn from its own seeds: no test image repeats a training or validation image
    seen = {(root / s / img["file_name"]).read_bytes() for s, d in (("train", train), ("val", val))
            for img in d["images"]}
    assert not any((root / "test" / img["file_name"]).read_bytes() in seen for img in test["images"])
    # adding the test split leaves train and val as they were, pixels and boxes
    plain = tmp_path / "plain"
    make_synth_dataset(plain, **TINY)
    assert not (plain / "test").exists() and not (plain / "annotations" / "instances_test.json").exists()
    for split in ("train", "val"):
        assert load(plain, split)["annotations"] == load(root, split)["annotations"]
        assert (plain / split / "000001.jpg").read_bytes() == (root / split / "000001.jpg").read_bytes()
    ds = CocoDataset(root, "test")
    assert len(ds) == 4 and ds.num_classes == CocoDataset(root, "val").num_classes
