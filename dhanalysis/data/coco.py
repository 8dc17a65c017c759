"""COCO-format detection dataset: an image folder plus an ``instances_<split>.json`` file.

Layout rule (`split_paths`): ``--split S`` reads images from ``root/S/`` and annotations from
``root/annotations/instances_S.json``. COCO 2017 uses ``train2017``/``val2017``; the synthetic set uses
``train``/``val``.

COCO's category ids are not contiguous (1..90 with gaps), while torchvision's detectors want labels ``1..C`` with 0 the
background, so the dataset keeps both directions of the mapping. Boxes are checked once, when the dataset is built:
degenerate ones are dropped and counted, boxes partly outside the image are clipped. Problems the user can fix (missing
files, bad JSON, undecodable images) are `DHError`s naming the file.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, NamedTuple

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from dhanalysis.config import DataConfig
from dhanalysis.errors import BadImages, DHError
from dhanalysis.vocab import SIZE_GROUPS, size_group, split_paths

log = logging.getLogger(__name__)

Target = dict[str, Any]
Transform = Callable[[torch.Tensor, Target], tuple[torch.Tensor, Target]]

REQUIRED_KEYS = ("images", "annotations", "categories")


def available_splits(root: str | Path) -> list[str]:
    """Splits that have an annotation file under ``root/annotations`` (for error messages and the CLI)."""
    ann_dir = Path(root) / "annotations"
    if not ann_dir.is_dir():
        return []
    return sorted(p.name[len("instances_") : -len(".json")] for p in ann_dir.glob("instances_*.json"))


def _splits_hint(root: Path) -> str:
    found = available_splits(root)
    if found:
        return f"splits with annotations under {root}: {', '.join(found)}"
    return f"no annotation files under {root}/annotations (expected instances_<split>.json)"


def load_coco_json(ann_file: str | Path) -> dict:
    """Read an instances file, turning JSON and structure errors into one-line `DHError`s."""
    ann_file = Path(ann_file)
    try:
        with open(ann_file, encoding="utf-8") as f:
            data = json.load(f)
    except json.JSONDecodeError as exc:
        raise DHError(
            f"annotation file {ann_file} is not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno}); "
            "regenerate or re-download it"
        ) from None
    except UnicodeDecodeError:
        raise DHError(f"annotation file {ann_file} is not UTF-8 text; regenerate or re-download it") from None
    if not isinstance(data, dict):
        raise DHError(f"annotation file {ann_file} must hold a JSON object with keys {', '.join(REQUIRED_KEYS)}")
    missing = [k for k in REQUIRED_KEYS if not isinstance(data.get(k), list)]
    if missing:
        raise DHError(
            f"annotation file {ann_file} lacks the list(s) {', '.join(repr(k) for k in missing)}; a COCO instances "
            f"file needs {', '.join(repr(k) for k in REQUIRED_KEYS)}"
        )
    return data


def _as_float(value: Any) -> float:
    """A number, or NaN for anything that is not one (None, strings), so one check catches every malformed box."""
    if isinstance(value, bool):
        return math.nan
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


class BadImage(NamedTuple):
    """An image that is missing or cannot be decoded."""

    image_id: int
    path: Path
    reason: str


def decode_image(path: Path, exif_orientation: bool = False) -> torch.Tensor:
    """Read an image file as a float tensor (3, H, W) in [0, 1]; a file that does not decode is a `DHError`.

    ``exif_orientation``: turn the pixels as the file's EXIF orientation tag says (detectron2 decodes so); without it
    the stored pixel grid is read, as torchvision, mmdetection's default and pycocotools' sizes take it.
    """
    try:
        with Image.open(path) as im:
            rgb = (ImageOps.exif_transpose(im) if exif_orientation else im).convert("RGB")
    except FileNotFoundError:
        raise DHError(f"image file {path} is missing; re-download or regenerate the split") from None
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise BadImages.with_fixes(
            f"image {path} cannot be decoded ({reason}); replace it or remove it from the annotation file") from None
    array = np.array(rgb, dtype=np.uint8)  # a writable copy, so torch shares it without a warning
    return torch.from_numpy(array).permute(2, 0, 1).float().div_(255.0)


def _try_decode(path: Path) -> str | None:
    """None when ``path`` decodes, else the reason. JPEGs decode at 1/8 scale: the whole stream is still read."""
    try:
        with Image.open(path) as im:
            if im.format == "JPEG":
                im.draft("RGB", (max(1, im.width // 8), max(1, im.height // 8)))
            im.load()
    except FileNotFoundError:
        return "missing"
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        return str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return None


_JPEG_END, _PNG_END = b"\xff\xd9", b"IEND\xaeB`\x82"  # the last bytes of a whole JPEG and of a whole PNG


def _quick_check(path: Path) -> str | None:
    """None when ``path`` looks like a whole image, else why not: its header must name a format, and a JPEG must end
    with its end-of-image marker, a PNG with its IEND chunk (what a cut-off download or copy loses). A file that
    fails the ending test, or of another format, is decoded (`_try_decode`) before it is called bad, so a valid file
    with bytes after its end is never refused. Costs one open and two small reads per image."""
    try:
        with open(path, "rb") as f, Image.open(f) as im:
            fmt = im.format
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 64))
            tail = f.read().rstrip(b"\0\r\n\t ")
    except FileNotFoundError:
        return "missing"
    except UnidentifiedImageError:
        return f"cannot identify image file {str(path)!r}"  # as `_try_decode` words it, not the file object's repr
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        return str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    if (fmt == "JPEG" and tail.endswith(_JPEG_END)) or (fmt == "PNG" and tail.endswith(_PNG_END)):
        return None
    return _try_decode(path)


class ClippedBoxes(NamedTuple):
    """Boxes clipped to their image (`clip_to_images`), with what each was before: ``(n,)`` bool masks."""

    xyxy: np.ndarray  # (n, 4) float64, clipped to the image (meaningless where not ``inside``)
    finite: np.ndarray  # four finite numbers
    positive: np.ndarray  # finite, with positive width and height
    inside: np.ndarray  # positive, and something of it is left inside the image: the boxes kept
    clipped: np.ndarray  # kept, but changed by clipping


def clip_to_images(raw: np.ndarray, width: np.ndarray, height: np.ndarray) -> ClippedBoxes:
    """COCO ``raw`` xywh boxes ``(n, 4)`` clipped to their image's ``width`` / ``height`` ``(n,)``, and which of them
    survive: NaN / infinite ones and empty ones are compared without warnings and come out not ``inside``."""
    x, y, w, h = raw.T
    finite = np.isfinite(raw).all(axis=1)
    with np.errstate(invalid="ignore"):
        positive = finite & (w > 0) & (h > 0)
        x1, y1 = np.clip(x, 0, width), np.clip(y, 0, height)
        x2, y2 = np.clip(x + w, 0, width), np.clip(y + h, 0, height)
        inside = positive & (x2 > x1) & (y2 > y1)
        clipped = inside & ((x1 != x) | (y1 != y) | (x2 != x + w) | (y2 != y + h))
    return ClippedBoxes(np.stack([x1, y1, x2, y2], axis=1), finite, positive, inside, clipped)


@dataclass
class _Annotations:
    """All kept boxes of a split in flat arrays sorted by image (cheap to share with DataLoader workers)."""

    boxes: np.ndarray  # (A, 4) float32 xyxy, absolute pixels, clipped to the image
    labels: np.ndarray  # (A,) int64, 1..C
    area: np.ndarray  # (A,) float32, the annotation's area (what COCOeval uses for size groups)
    iscrowd: np.ndarray  # (A,) int64
    starts: np.ndarray  # (I + 1,) offsets into the flat arrays, one slice per image in `images` order


class CocoDataset(torch.utils.data.Dataset):
    """Detection dataset over a COCO-format split.

    Args:
        root: dataset folder holding ``<split>/`` and ``annotations/``.
        split: split name, e.g. ``train2017`` or ``train``.
        transforms: callable ``(image, target) -> (image, target)``, e.g. from `build_transforms`.
        train: training mode skips crowd boxes (they would be wrong positives); evaluation keeps them.
        strict: decode every image up front and raise naming the first bad one (a full pass: minutes on COCO).
            Without it an undecodable image is still an error, but only when it is read; never silently replaced.
        skip_bad_images: decode every image up front and drop the missing or undecodable ones, recording them in
            ``skipped_images`` (takes precedence over ``strict``); without it a missing file is an error here.
        skip_ids: image ids to leave out, e.g. from an earlier ``check_images()``, without checking again.
        exif_orientation: apply each file's EXIF orientation when decoding (``model.exif_orientation``: detectron2).
        verify_images: check every image's header and ending up front (`_quick_check`: a garbage or cut-off file
            is an error naming it, at the cost of one open per image). Default: when ``train``, so that training
            stops before it starts, not at the first bad image with a checkpoint written; evaluation and the analyses
            meet a bad image as they read it, or skip it with ``skip_bad_images``.

    ``dataset[i]`` is ``(image, target)``: image (3, H, W) float in [0, 1]; target ``boxes`` (N, 4) float32 xyxy
    absolute pixels, ``labels`` (N,) int64 in 1..C, ``image_id`` int, ``area`` (N,) float32, ``iscrowd`` (N,) int64,
    ``orig_size`` (2,) int64 (H, W) of the image file.
    """

    def __init__(
        self,
        root: str | Path,
        split: str,
        transforms: Transform | None = None,
        train: bool = False,
        strict: bool = False,
        skip_bad_images: bool = False,
        skip_ids: Iterable[int] | None = None,
        exif_orientation: bool = False,
        verify_images: bool | None = None,
    ) -> None:
        self.root = Path(root)
        self.exif_orientation = exif_orientation
        self.split = split
        self.transforms = transforms
        self.train = train
        self.image_dir, self.ann_file = split_paths(self.root, split)
        self._check_layout()
        data = load_coco_json(self.ann_file)

        self._parse_categories(data["categories"])
        self._parse_images(data["images"])
        self._parse_annotations(data["annotations"])
        self._coco = None

        self.skipped_images: list[BadImage] = []
        skip = {int(i) for i in skip_ids or ()}
        self.ids: list[int] = [i for i in self._all_ids if i not in skip]
        if not self.ids:
            raise DHError(
                f"split '{split}' has no images ({self.ann_file} lists {len(self._all_ids)}, {len(skip)} skipped); "
                "point data.root/split at a dataset with images"
            )
        self._check_images_up_front(strict, skip_bad_images, train if verify_images is None else verify_images)

    # ----------------------------------------------------------------------------------------------- construction
    def _check_images_up_front(self, strict: bool, skip_bad_images: bool, verify: bool = False) -> None:
        """Missing files are always caught here (one directory listing); decoding every image only when asked, and
        checking every header and ending when ``verify`` (and neither asked for a full decode)."""
        missing = self._missing_ids()
        if missing and not skip_bad_images:
            first = self.image_dir / self._images[missing[0]][0]
            raise BadImages.with_fixes(
                f"{len(missing)} of {len(self.ids)} images listed in {self.ann_file} are missing from {self.image_dir} "
                f"(first: {first}); re-download them or remove them from the annotation file")
        if skip_bad_images:
            self.skipped_images = self.check_images()
            bad = {b.image_id for b in self.skipped_images}
            self.ids = [i for i in self.ids if i not in bad]
            if bad:
                first_bad = self.skipped_images[0]
                log.warning("skipped %d missing or undecodable images in %s (first: %s: %s)", len(bad),
                            self.image_dir, first_bad.path, first_bad.reason)
            if not self.ids:
                raise DHError(f"every image of split '{self.split}' under {self.image_dir} is missing or undecodable")
        elif strict:
            bad_images = self.check_images()
            if bad_images:
                b = bad_images[0]
                raise BadImages.with_fixes(
                    f"{len(bad_images)} of {len(self.ids)} images in {self.image_dir} cannot be decoded (first: "
                    f"{b.path}: {b.reason}); replace them or remove them from the annotation file")
        elif verify:
            bad_images = self.check_images(quick=True)
            if bad_images:
                b = bad_images[0]
                more = (f"; {len(bad_images) - 1} more of the {len(self.ids)} images in {self.image_dir} cannot "
                        "either" if len(bad_images) > 1 else "")
                raise BadImages.with_fixes(f"image {b.path} cannot be decoded ({b.reason}{more}); replace it or "
                                           "remove it from the annotation file")

    def _check_layout(self) -> None:
        if not self.root.is_dir():
            raise DHError(
                f"data root {self.root} does not exist; make the synthetic set with 'dhanalysis data synth --out "
                f"{self.root}' or set data.root to a COCO-format folder"
            )
        if not self.ann_file.is_file():
            hint = _splits_hint(self.root)
            raise DHError(f"annotation file {self.ann_file} for split '{self.split}' not found; {hint}")
        if not self.image_dir.is_dir():
            hint = _splits_hint(self.root)
            raise DHError(f"image folder {self.image_dir} for split '{self.split}' not found; {hint}")

    def _parse_categories(self, categories: list) -> None:
        try:
            cats = sorted((int(c["id"]), str(c["name"])) for c in categories)
        except (KeyError, TypeError, ValueError):
            msg = f"annotation file {self.ann_file}: every category needs an integer 'id' and a 'name'"
            raise DHError(msg) from None
        if not cats:
            raise DHError(f"annotation file {self.ann_file} has no categories; a detection dataset needs at least one")
        if len({c for c, _ in cats}) != len(cats):
            raise DHError(f"annotation file {self.ann_file} repeats a category id; each category needs its own id")
        # Sorted by id, the order torchvision's and detectron2's COCO loaders use, so labels match theirs.
        self.label_to_cat_id: dict[int, int] = {label: cat for label, (cat, _) in enumerate(cats, start=1)}
        self.cat_id_to_label: dict[int, int] = {cat: label for label, cat in self.label_to_cat_id.items()}
        self.category_names: list[str] = [name for _, name in cats]  # category_names[label - 1]
        self.num_classes: int = len(cats)

    def _parse_images(self, images: list) -> None:
        self._images: dict[int, tuple[str, int, int]] = {}  # id -> (file_name, width, height)
        for entry in images:
            try:
                image_id, name = int(entry["id"]), str(entry["file_name"])
                width, height = int(entry["width"]), int(entry["height"])
            except (KeyError, TypeError, ValueError):
                raise DHError(
                    f"annotation file {self.ann_file}: image entry {str(entry)[:80]} needs 'id', 'file_name', "
                    "'width' and 'height'"
                ) from None
            if image_id in self._images:
                raise DHError(f"annotation file {self.ann_file} lists image id {image_id} twice; ids must be unique")
            self._images[image_id] = (name, width, height)
        self._all_ids = sorted(self._images)
        self._position = {image_id: k for k, image_id in enumerate(self._all_ids)}

    def _parse_annotations(self, annotations: list) -> None:
        """Read every annotation into flat arrays, drop (and count) the degenerate boxes, clip the rest to their
        image and keep them grouped by image (`_Annotations`), so that reading an image slices instead of searching.
        """
        raw, img_index, labels, area, iscrowd = self._annotation_arrays(annotations)
        sizes = np.array([self._images[i][1:] for i in self._all_ids], dtype=np.float64).reshape(-1, 2)
        boxes = clip_to_images(raw, sizes[img_index, 0], sizes[img_index, 1])
        self._count_dropped(boxes, len(annotations))

        keep = np.flatnonzero(boxes.inside)
        keep = keep[np.argsort(img_index[keep], kind="stable")]
        box_area = (raw[:, 2] * raw[:, 3])[keep]
        ann_area = np.where(np.isfinite(area[keep]) & (area[keep] > 0), area[keep], box_area)
        self._ann = _Annotations(
            boxes=boxes.xyxy[keep].astype(np.float32),
            labels=labels[keep],
            area=ann_area.astype(np.float32),
            iscrowd=iscrowd[keep],
            starts=np.searchsorted(img_index[keep], np.arange(len(self._all_ids) + 1)),
        )
        self.crowd_boxes: int = int(self._ann.iscrowd.sum())

    def _annotation_arrays(self, annotations: list) -> tuple[np.ndarray, ...]:
        """``(raw xywh (n, 4) float64, image position (n,), label (n,), area (n,), iscrowd (n,))`` of the annotations
        in file order; a bbox that is not four numbers is NaN (dropped later, counted as malformed), an annotation of
        an unknown image or category is a `DHError`, as the file is then not the one the images belong to."""
        index_of = self._position
        n = len(annotations)
        raw = np.full((n, 4), np.nan, dtype=np.float64)
        img_index = np.zeros(n, dtype=np.int64)
        labels = np.zeros(n, dtype=np.int64)
        area = np.full(n, np.nan, dtype=np.float64)
        iscrowd = np.zeros(n, dtype=np.int64)
        unknown_images: list[tuple[Any, Any]] = []
        unknown_cats: list[Any] = []
        for k, ann in enumerate(annotations):
            if not isinstance(ann, dict):
                raise DHError(f"annotation file {self.ann_file}: annotation #{k} is not an object")
            image_id = ann.get("image_id")
            if image_id not in index_of:
                unknown_images.append((ann.get("id"), image_id))
                continue
            if ann.get("category_id") not in self.cat_id_to_label:
                unknown_cats.append(ann.get("category_id"))
                continue
            img_index[k] = index_of[image_id]
            labels[k] = self.cat_id_to_label[ann["category_id"]]
            bbox = ann.get("bbox")
            if isinstance(bbox, (list, tuple)) and len(bbox) == 4:
                raw[k] = [_as_float(v) for v in bbox]
            area[k] = _as_float(ann.get("area"))
            iscrowd[k] = 1 if ann.get("iscrowd") else 0
        self._refuse_unknown_references(unknown_images, unknown_cats)
        return raw, img_index, labels, area, iscrowd

    def _refuse_unknown_references(self, unknown_images: list[tuple[Any, Any]], unknown_cats: list[Any]) -> None:
        """One `DHError` counting the annotations whose image or category the file does not list (first one named)."""
        if unknown_images:
            ann_id, image_id = unknown_images[0]
            raise DHError(
                f"annotation file {self.ann_file}: {len(unknown_images)} annotations refer to image ids not in "
                f"'images' (first: annotation {ann_id} -> image {image_id}); fix or regenerate the file"
            )
        if unknown_cats:
            raise DHError(
                f"annotation file {self.ann_file}: {len(unknown_cats)} annotations use category ids not in "
                f"'categories' (first: {unknown_cats[0]}); fix or regenerate the file"
            )

    def _count_dropped(self, boxes: ClippedBoxes, n: int) -> None:
        """Record how many boxes were dropped, by reason, and clipped, and warn once: a user should learn that the
        file holds boxes the model never sees."""
        finite, positive, inside = boxes.finite, boxes.positive, boxes.inside
        self.dropped_by_reason: dict[str, int] = {
            "non-finite or malformed": int((~finite).sum()),
            "zero or negative size": int((finite & ~positive).sum()),
            "outside the image": int((positive & ~inside).sum()),
        }
        self.dropped_boxes: int = int((~inside).sum())
        self.clipped_boxes: int = int(boxes.clipped.sum())
        if self.dropped_boxes:
            detail = ", ".join(f"{v} {k}" for k, v in self.dropped_by_reason.items() if v)
            log.warning("dropped %d of %d boxes in %s as degenerate (%s)", self.dropped_boxes, n, self.ann_file, detail)

    def _missing_ids(self) -> list[int]:
        """Ids whose file is absent: one directory listing instead of a stat per image (COCO has 118k)."""
        present = {p.name for p in self.image_dir.iterdir()}

        def exists(name: str) -> bool:
            return name in present or ("/" in name and (self.image_dir / name).is_file())

        return [i for i in self.ids if not exists(self._images[i][0])]

    # ------------------------------------------------------------------------------------------------ access
    def __len__(self) -> int:
        return len(self.ids)

    def image_path(self, index: int) -> Path:
        """Path of the ``index``-th image file."""
        return self.image_dir / self._images[self.ids[index]][0]

    def image_info(self, index: int) -> dict[str, Any]:
        """The 'images' entry of the ``index``-th image: id, file_name, width, height."""
        image_id = self.ids[index]
        name, width, height = self._images[image_id]
        return {"id": image_id, "file_name": name, "width": width, "height": height}

    def get_target(self, index: int) -> Target:
        """The target of the ``index``-th image without reading its pixels (for analyses that only need boxes)."""
        image_id = self.ids[index]
        _, width, height = self._images[image_id]
        k = self._position[image_id]
        sl = slice(self._ann.starts[k], self._ann.starts[k + 1])
        boxes, labels, area, iscrowd = (self._ann.boxes[sl], self._ann.labels[sl], self._ann.area[sl],
                                        self._ann.iscrowd[sl])
        if self.train:  # crowd regions are not single objects: training on them teaches wrong boxes
            keep = iscrowd == 0
            boxes, labels, area, iscrowd = boxes[keep], labels[keep], area[keep], iscrowd[keep]
        return {
            "boxes": torch.from_numpy(boxes.copy()).reshape(-1, 4),
            "labels": torch.from_numpy(labels.copy()),
            "image_id": image_id,
            "area": torch.from_numpy(area.copy()),
            "iscrowd": torch.from_numpy(iscrowd.copy()),
            "orig_size": torch.tensor([height, width], dtype=torch.int64),
        }

    def __getitem__(self, index: int) -> tuple[torch.Tensor, Target]:
        path = self.image_path(index)
        if not path.is_file():
            raise DHError(f"image file {path} (listed in {self.ann_file}) is missing; re-download or regenerate it")
        image = decode_image(path, self.exif_orientation)
        target = self.get_target(index)
        height, width = image.shape[-2:]
        if (height, width) != tuple(target["orig_size"].tolist()):
            expected = target["orig_size"].tolist()
            raise DHError(
                f"image {path} is {width}x{height} but {self.ann_file} says {expected[1]}x{expected[0]}; fix the "
                "annotation file's width/height"
            )
        if self.transforms is not None:
            image, target = self.transforms(image, target)
        return image, target

    def check_images(self, quick: bool = False) -> list[BadImage]:
        """Decode every image of the split; return the missing or undecodable ones (a full pass: slow on COCO).
        ``quick``: check headers and endings instead (`_quick_check`), a few times cheaper."""
        check = _quick_check if quick else _try_decode
        bad = []
        for image_id in self.ids:
            path = self.image_dir / self._images[image_id][0]
            reason = check(path)
            if reason is not None:
                bad.append(BadImage(image_id, path, reason))
        return bad

    @property
    def coco(self) -> Any:
        """The split as a pycocotools ``COCO`` object for COCOeval, built on first use (it is large on COCO).

        It holds every image of the annotation file: evaluate on ``dataset.ids`` when images were skipped.
        """
        if self._coco is None:
            from pycocotools.coco import COCO

            with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress lines
                self._coco = COCO(str(self.ann_file))
        return self._coco

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_coco"] = None  # rebuilt on demand; not worth pickling into DataLoader workers
        return state

    def __repr__(self) -> str:
        return (
            f"CocoDataset(root={str(self.root)!r}, split={self.split!r}, images={len(self)}, "
            f"classes={self.num_classes}, train={self.train})"
        )


def collate_fn(batch: list[tuple[torch.Tensor, Target]]) -> tuple[tuple[torch.Tensor, ...], tuple[Target, ...]]:
    """Keep images and targets as tuples: detection images differ in size, so they are not stacked."""
    return tuple(zip(*batch))  # type: ignore[return-value]


def summarize_coco_json(ann_file: str | Path) -> dict[str, Any]:
    """Counts of an instances file for reports: images, boxes, boxes per COCO size group, crowd boxes, class names."""
    data = load_coco_json(ann_file)
    groups = dict.fromkeys(SIZE_GROUPS, 0)
    crowd = 0
    for ann in data["annotations"]:
        area = _as_float(ann.get("area"))
        if not math.isfinite(area):
            bbox = ann.get("bbox") or [0, 0, 0, 0]
            area = _as_float(bbox[2]) * _as_float(bbox[3]) if len(bbox) == 4 else 0.0
        groups[size_group(area if math.isfinite(area) else 0.0)] += 1
        crowd += 1 if ann.get("iscrowd") else 0
    names = [str(c.get("name")) for c in sorted(data["categories"], key=lambda c: c.get("id", 0))]
    return {
        "images": len(data["images"]),
        "boxes": len(data["annotations"]),
        "size_groups": groups,
        "crowd": crowd,
        "classes": names,
    }


def build_dataset(
    data_cfg: DataConfig,
    train: bool,
    min_size: int = 800,
    max_size: int = 1333,
    resize: bool = False,
    **kwargs: Any,
) -> CocoDataset:
    """Dataset of a `DataConfig`: the train split with flips when ``train``, else the val split, no augmentation."""
    from dhanalysis.data.transforms import build_transforms

    split = data_cfg.train_split if train else data_cfg.val_split
    transforms = build_transforms(train, data_cfg.hflip_prob, min_size=min_size, max_size=max_size, resize=resize)
    return CocoDataset(data_cfg.root, split, transforms=transforms, train=train, **kwargs)
