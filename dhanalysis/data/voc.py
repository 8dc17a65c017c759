"""Convert a Pascal VOC folder to the COCO layout, so one dataset class and COCOeval serve both (paper Table 4).

Input: ``JPEGImages/``, ``Annotations/*.xml`` and ``ImageSets/Main/<split>.txt`` (without ``ImageSets`` every xml file
goes into one split named ``all``). Output: ``out/<split>/`` with the images hard-linked (copied across file systems)
and ``out/annotations/instances_<split>.json``.

The output folder is owned like every output folder (`dhanalysis.folders`): converting the same VOC folder again
replaces its own files, but a folder holding anything else (another dataset, a conversion of another VOC folder, a
stray file) is refused with `FolderTaken` unless ``overwrite``, which replaces only the files the conversion writes.
A converted image is recognised as the conversion's own by being the VOC file itself (a hard link) or a copy of it.

VOC boxes are 1-based and inclusive, so ``x = xmin - 1`` and ``w = xmax - xmin + 1``. ``difficult`` objects are kept
as ``iscrowd=1``: COCOeval then ignores detections on them instead of counting misses or false positives, close to
VOC's own rule, and the training dataset skips them like COCO's crowd boxes.
"""

from __future__ import annotations

import json
import os
import re
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any, Sequence

from dhanalysis.errors import DHError
from dhanalysis.folders import TEMP_FILE, FolderTaken, atomic_write_bytes, atomic_write_text, remove_temp_files
from dhanalysis.vocab import split_paths

VOC_CLASSES = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor",
)  # fmt: skip
CONTRIBUTOR = "dhanalysis.data.voc"  # the jsons' ``info.contributor``, with ``info.source`` the VOC folder converted
_DESCRIPTION = "Pascal VOC converted from "
_JSON_RE = re.compile(r"^instances_(?P<split>.+)\.json$")


def _text(node: ET.Element | None, tag: str, xml_file: Path, default: str | None = None) -> str:
    child = node.find(tag) if node is not None else None
    if child is None or child.text is None or not child.text.strip():
        if default is not None:
            return default
        raise DHError(f"VOC annotation {xml_file} lacks <{tag}>; fix or remove the file")
    return child.text.strip()


def _number(node: ET.Element | None, tag: str, xml_file: Path) -> float:
    value = _text(node, tag, xml_file)
    try:
        return float(value)
    except ValueError:
        raise DHError(f"VOC annotation {xml_file}: <{tag}> is {value!r}, not a number; fix the file") from None


def parse_voc_xml(xml_file: Path) -> dict[str, Any]:
    """One VOC annotation file as ``{"filename", "width", "height", "objects": [{"name", "box", "difficult"}]}``.

    ``box`` is VOC's own (xmin, ymin, xmax, ymax), 1-based inclusive; width/height are 0 when the file omits them.
    """
    try:
        root = ET.parse(xml_file).getroot()
    except ET.ParseError as exc:
        raise DHError(f"VOC annotation {xml_file} is not valid XML ({exc}); fix or remove the file") from None
    size = root.find("size")
    width = int(_number(size, "width", xml_file)) if size is not None and size.find("width") is not None else 0
    height = int(_number(size, "height", xml_file)) if size is not None and size.find("height") is not None else 0
    objects = []
    for obj in root.findall("object"):
        box = obj.find("bndbox")
        if box is None:
            raise DHError(f"VOC annotation {xml_file} has an <object> without <bndbox>; fix the file")
        objects.append({
            "name": _text(obj, "name", xml_file),
            "box": tuple(_number(box, tag, xml_file) for tag in ("xmin", "ymin", "xmax", "ymax")),
            "difficult": _text(obj, "difficult", xml_file, default="0") not in ("0", "false", "False"),
        })
    return {
        "filename": _text(root, "filename", xml_file, default=f"{xml_file.stem}.jpg"),
        "width": width,
        "height": height,
        "objects": objects,
    }


def voc_box_to_coco(box: Sequence[float]) -> list[float]:
    """VOC (xmin, ymin, xmax, ymax), 1-based inclusive -> COCO [x, y, w, h], 0-based with exclusive right edge."""
    xmin, ymin, xmax, ymax = box
    return [xmin - 1, ymin - 1, xmax - xmin + 1, ymax - ymin + 1]


def _split_ids(voc_root: Path, splits: Sequence[str]) -> dict[str, list[str]]:
    """Image ids per split from ImageSets/Main, or every xml file as the split 'all' when ImageSets is absent."""
    main = voc_root / "ImageSets" / "Main"
    if not main.is_dir():
        return {"all": sorted(p.stem for p in (voc_root / "Annotations").glob("*.xml"))}
    out = {}
    for split in splits:
        listing = main / f"{split}.txt"
        if not listing.is_file():
            found = sorted(p.stem for p in main.glob("*.txt") if "_" not in p.stem)
            raise DHError(f"VOC split file {listing} not found; splits under {main}: {', '.join(found) or 'none'}")
        out[split] = [line.split()[0] for line in listing.read_text().splitlines() if line.strip()]
    return out


def _image_size(path: Path) -> tuple[int, int]:
    from PIL import Image

    try:
        with Image.open(path) as im:
            return im.size
    except OSError as exc:
        raise DHError(f"image {path} cannot be read ({exc}); replace it") from None


def _link_or_copy(src: Path, dst: Path) -> None:
    """Hard-link (no extra disk space) and fall back to a copy across file systems; an up-to-date link is kept."""
    if dst.exists():
        if os.path.samefile(src, dst) or dst.stat().st_size == src.stat().st_size:
            return
        dst.unlink()
    try:
        os.link(src, dst)
    except OSError:
        atomic_write_bytes(dst, src.read_bytes())


def _converted_from(ann_file: Path) -> Path | None:
    """The VOC folder an annotation file was converted from (resolved), None when this converter did not write it."""
    try:
        info = json.loads(ann_file.read_text()).get("info")
    except (OSError, ValueError, AttributeError):
        return None
    if not isinstance(info, dict):
        return None
    if info.get("contributor") == CONTRIBUTOR and isinstance(info.get("source"), str):
        return Path(info["source"])
    description = info.get("description")
    if isinstance(description, str) and description.startswith(_DESCRIPTION):  # written before the source was kept
        return Path(description[len(_DESCRIPTION):]).resolve()
    return None


def _is_converted_image(path: Path, jpeg_dir: Path) -> bool:
    """True when ``path`` is a VOC image itself (a hard link) or a copy of one (same name and size)."""
    src = jpeg_dir / path.name
    if not (path.is_file() and src.is_file()):
        return False
    return os.path.samefile(src, path) or src.stat().st_size == path.stat().st_size


def _claim_out_folder(voc_root: Path, out: Path, splits: Sequence[str], overwrite: bool) -> None:
    """Refuse (unless ``overwrite``) an output folder holding anything but this VOC folder's conversion: its
    annotation files, image folders of its splits holding its images, and temporary files of killed writes, which
    go. Nothing is written before this check, so a refused folder is left as it was."""
    source = voc_root.resolve()
    jpeg_dir = voc_root / "JPEGImages"
    own_splits = set(splits)
    foreign: list[str] = []
    annotations = out / "annotations"
    if annotations.is_dir():
        for name in sorted(os.listdir(annotations)):
            match, file = _JSON_RE.match(name), annotations / name
            if match and file.is_file() and _converted_from(file) == source:
                own_splits.add(match["split"])
            elif not (TEMP_FILE.match(name) and file.is_file()):
                foreign.append(f"annotations/{name}")
    for entry in sorted(os.listdir(out)) if out.is_dir() else []:
        path = out / entry
        if (entry == "annotations" and path.is_dir()) or (TEMP_FILE.match(entry) and path.is_file()):
            continue
        if entry in own_splits and path.is_dir():
            foreign += [f"{entry}/{p.name}" for p in sorted(path.iterdir())
                        if not ((TEMP_FILE.match(p.name) and p.is_file()) or _is_converted_image(p, jpeg_dir))]
        else:
            foreign.append(entry)
    if foreign and not overwrite:
        more = f" and {len(foreign) - 1} more" if len(foreign) > 1 else ""
        raise FolderTaken(out, f"{out} holds files the conversion of {voc_root} did not write ({foreign[0]}{more})")
    for folder in (out, annotations, *(out / s for s in splits)):
        remove_temp_files(folder)


def voc_to_coco(
    voc_root: str | Path,
    out: str | Path,
    splits: Sequence[str] = ("trainval", "test"),
    overwrite: bool = False,
) -> dict[str, Path]:
    """Convert ``voc_root`` to the COCO layout under ``out``; returns ``{split: instances json}``.

    Categories are the 20 VOC classes in the standard order when every name found is one of them, else the sorted
    names found (the same list for every split, so labels agree between train and test). ``out`` may hold an earlier
    conversion of the same folder; anything else there is refused with `FolderTaken` unless ``overwrite``.
    """
    voc_root, out = Path(voc_root), Path(out)
    for sub in ("Annotations", "JPEGImages"):
        if not (voc_root / sub).is_dir():
            raise DHError(f"{voc_root / sub} not found; {voc_root} must be a VOC folder such as VOCdevkit/VOC2007")
    ids = _split_ids(voc_root, splits)
    _claim_out_folder(voc_root, out, list(ids), overwrite)
    parsed = {split: _parse_split(voc_root, split, names) for split, names in ids.items()}
    class_names = voc_class_names(parsed)
    cat_id = {name: k for k, name in enumerate(class_names, start=1)}
    categories = [{"id": cat_id[n], "name": n, "supercategory": "voc"} for n in class_names]

    (out / "annotations").mkdir(parents=True, exist_ok=True)
    result = {}
    for split, records in parsed.items():
        images, annotations = _convert_split(voc_root, out / split, split, records, cat_id)
        data = {
            "info": {"description": f"{_DESCRIPTION}{voc_root}", "version": "1", "split": split,
                     "contributor": CONTRIBUTOR, "source": str(voc_root.resolve())},
            "licenses": [],
            "images": images,
            "annotations": annotations,
            "categories": categories,
        }
        ann_file = split_paths(out, split)[1]
        atomic_write_text(ann_file, json.dumps(data))
        result[split] = ann_file
    return result


def _parse_split(voc_root: Path, split: str, names: Sequence[str]) -> list[dict[str, Any]]:
    """The parsed XML annotation (`parse_voc_xml`) of each image of ``split``, in the split file's order; every file
    is read before anything is written, so a missing one leaves the output folder untouched."""
    records = []
    for stem in names:
        xml_file = voc_root / "Annotations" / f"{stem}.xml"
        if not xml_file.is_file():
            raise DHError(f"VOC annotation {xml_file} (listed in split '{split}') not found")
        records.append(parse_voc_xml(xml_file))
    return records


def voc_class_names(parsed: dict[str, list[dict[str, Any]]]) -> list[str]:
    """The category names of all splits together: the 20 VOC classes in their standard order when every name found
    is one of them (so labels match other VOC tools), else the sorted names found."""
    names_found = {obj["name"] for records in parsed.values() for r in records for obj in r["objects"]}
    return list(VOC_CLASSES) if names_found <= set(VOC_CLASSES) else sorted(names_found)


def _convert_split(voc_root: Path, image_dir: Path, split: str, records: list[dict[str, Any]],
                   cat_id: dict[str, int]) -> tuple[list[dict], list[dict]]:
    """Link (or copy) the split's images into ``image_dir`` and return its COCO ``images`` and ``annotations``
    entries; ids count from 1 in record order, and VOC's ``difficult`` objects become crowd boxes, which COCO
    evaluation ignores as VOC's does."""
    image_dir.mkdir(parents=True, exist_ok=True)
    images, annotations = [], []
    for image_id, record in enumerate(records, start=1):
        src = voc_root / "JPEGImages" / record["filename"]
        if not src.is_file():
            raise DHError(f"image {src} (named in the VOC annotation of split '{split}') not found")
        width, height = record["width"], record["height"]
        if width <= 0 or height <= 0:
            width, height = _image_size(src)
        _link_or_copy(src, image_dir / record["filename"])
        images.append({"id": image_id, "file_name": record["filename"], "width": width, "height": height})
        for obj in record["objects"]:
            bbox = voc_box_to_coco(obj["box"])
            annotations.append({
                "id": len(annotations) + 1,
                "image_id": image_id,
                "category_id": cat_id[obj["name"]],
                "bbox": bbox,
                "area": bbox[2] * bbox[3],
                "iscrowd": int(obj["difficult"]),
            })
    return images, annotations
