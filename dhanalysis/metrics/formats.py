"""The inputs people have, read in memory as the COCO structures `dhanalysis.metrics.detections` analyses: YOLO txt
and Pascal VOC xml ground truth, YOLO txt and VOC devkit detection files, and results whose image or category ids
are numbered otherwise than the ground truth's (``dhanalysis detections --gt-format / --results-format``).

Formats (``auto`` tells them apart by what the path is; docs/detections.md has the whole table):

- **COCO**: a ``.json`` file (an instances json, a results list), read as before.
- **VOC ground truth**: a folder of ``<stem>.xml`` (``<filename>``, ``<size>``, ``<object>`` with ``<name>``,
  ``<difficult>``, ``<bndbox>``), or an image-set file ``VOC2007/ImageSets/Main/test.txt`` whose lines name the
  stems of ``VOC2007/Annotations/<stem>.xml``. Boxes and ``difficult`` are mapped as ``dhanalysis data voc2coco``
  maps them (`dhanalysis.data.voc`): the devkit's boxes are 1-based and inclusive, so ``x = xmin - 1``, ``w = xmax -
  xmin + 1`` (COCOeval's IoU then equals the devkit's, whose areas add the 1); ``difficult=1`` is ``iscrowd=1``.
- **VOC detections**: the devkit's per-class files ``<comp>_det_<set>_<class>.txt`` (``comp4_det_test_car.txt``),
  lines ``image_id score xmin ymin xmax ymax``, boxes in the same 1-based inclusive pixels.
- **YOLO ground truth**: a folder of ``<image_stem>.txt``, lines ``class cx cy w h`` (fractions of the image's size),
  ``class`` a 0-based index into the class list; the images, their sizes (PIL reads each header) and the images
  without objects (no file, or an empty one) come from ``--images DIR``.
- **YOLO detections**: the same with a confidence last, ``class cx cy w h conf`` (ultralytics' ``save_txt`` with
  ``save_conf``); sizes from ``--images DIR``, else from the ground truth's images (``width`` / ``height``, a VOC
  xml's ``<size>``).

Images of a VOC or YOLO ground truth are numbered by their file stems when every stem is a decimal number
(``000000397133`` is image 397133, COCO's numbering and ultralytics'), else 1, 2, ... in the stems' sorted order;
their annotations 1, 2, ... in the order read; their categories 1, 2, ... in the class list's order.

Ids that differ: ``match_images="by-name"`` matches a results entry's ``image_id`` (a file stem such as
``"000000397133"``, a file name, or a number equal to a numeric stem) to the ground-truth image of that file stem,
``image_map`` first turns another numbering into file names; ``category_offset`` adds N to every category id,
``category_map`` maps ids (or class names) to the ground truth's ids or names, ``category_map="index"`` takes id i as
the ground truth's i-th category in id order (YOLO's and ultralytics' COCO-80 numbering). Results whose image or
category ids the ground truth lacks are refused in one line that counts them and names the option that fixes the
commonest causes. Messages name options as the command line spells them (``--category-offset``); each is the field
of `InputOptions` of the same name.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from dhanalysis.errors import DHError

GT_FILE = "ground-truth file"  # how errors name the inputs (the CLI turns these into --gt and --results)
RESULTS_FILE = "results file"

AUTO, COCO, VOC, YOLO = "auto", "coco", "voc", "yolo"
FORMATS = (AUTO, COCO, VOC, YOLO)
BY_ID, BY_NAME = "by-id", "by-name"
MATCHINGS = (BY_ID, BY_NAME)
BY_INDEX = "index"  # category_map's keyword: id i is the ground truth's i-th category in id order
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")  # --images lists them; stems drop them
YOLO_CLASS_FILE = "classes.txt"  # LabelImg writes the class list into the labels folder: not a label file
VOC_DET_RE = re.compile(r"^(?P<comp>.+?)_det_(?P<set>[^_]+)_(?P<cls>.+)\.txt$")  # the devkit's detection file names


@dataclass(frozen=True)
class InputOptions:
    """How to read ``--gt`` and ``--results`` (the defaults: COCO json files, matched by image id).

    ``classes``: the class list, a file (one name a line; or a YOLO ``data.yaml`` with ``names``), a comma list or a
    sequence of names; ``images``: a folder of the images YOLO coordinates are fractions of; ``image_map``: a json
    ``{"their image id": "file name"}`` or a COCO json whose ``images`` give their ids' file names; ``category_map``:
    a json ``{"their id or class name": our id or category name}`` or ``"index"``."""

    gt_format: str = AUTO
    results_format: str = AUTO
    classes: str | Sequence[str] | None = None
    images: str | Path | None = None
    match_images: str | None = None  # None: by-id, or by-name where the results name images by file (YOLO, VOC)
    image_map: str | Path | None = None
    category_offset: int = 0
    category_map: str | Path | None = None


@dataclass
class Resolved:
    """The options checked and read: formats known, the class list and the maps loaded."""

    gt_format: str
    results_format: str
    classes: tuple[str, ...] | None
    images: Path | None
    by_name: bool
    image_map: dict[str, str] | None
    category_offset: int
    category_map: dict[str, int | str] | None
    by_index: bool
    options: InputOptions
    image_paths: dict[str, Path] | None = field(default=None, repr=False)  # --images by stem, listed once
    sizes: dict[str, tuple[int, int]] | None = field(default=None, repr=False)  # and their sizes, read once

    @property
    def is_default(self) -> bool:
        """Two COCO json files matched by id: a reading whose results folder's identity is the files' alone."""
        return (self.gt_format == COCO and self.results_format == COCO and self.classes is None
                and self.images is None and not self.by_name and not self.category_offset
                and self.category_map is None and not self.by_index)

    def key(self) -> dict:
        """The reading's settings, for a results folder's identity (the content digest covers the files)."""
        return {"gt_format": self.gt_format, "results_format": self.results_format,
                "classes": list(self.classes) if self.classes is not None else None,
                "images": self.images is not None, "match_images": BY_NAME if self.by_name else BY_ID,
                "image_map": self.image_map is not None, "category_offset": self.category_offset,
                "category_map": BY_INDEX if self.by_index else self.category_map}


# ---------------------------------------------------------------------------------------------------- small readers
def read_json(path: Path, what: str):
    if not path.is_file():
        raise DHError(f"{what} {path} does not exist")
    try:
        return json.loads(path.read_bytes())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DHError(f"{what} {path} is not valid JSON ({exc})") from None


def name_stem(name) -> str:
    """The image a name stands for: directories dropped, an image suffix dropped (``val/000000397133.jpg`` ->
    ``000000397133``); other dots stay (``a.b`` is ``a.b``)."""
    text = str(name).replace("\\", "/").rsplit("/", 1)[-1]
    stem, dot, suffix = text.rpartition(".")
    return stem if dot and f".{suffix.lower()}" in IMAGE_SUFFIXES else text


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def _is_number(value) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)


def _as_label(value):
    """A hashable label: integral numbers as ints (3.0 is id 3), strings as they are, anything else its repr."""
    if _is_number(value) and float(value).is_integer():
        return int(value)
    return value if isinstance(value, str) else repr(value)


def read_classes(value: str | Sequence[str]) -> tuple[str, ...]:
    """The class list: a sequence of names; a file (one name a line, blank lines at the end left out; ``.yaml`` /
    ``.yml``: its ``names``, a list or an {index: name} mapping as ultralytics' data.yaml has it); else a comma
    list."""
    where = "--classes"
    if not isinstance(value, str):
        names = [str(v) for v in value]
    else:
        path = Path(value)
        looks_like_file = path.suffix.lower() in (".txt", ".names", ".yaml", ".yml") or "/" in value
        if path.is_file():
            where = f"--classes {path}"
            names = _class_file(path)
        elif looks_like_file:
            raise DHError(f"--classes {value} does not exist; give the class list file, or the names separated by "
                          "commas")
        else:
            names = value.split(",")
    names = [n.strip() for n in names]
    if not names or not any(names):
        raise DHError(f"{where} names no class")
    empty = [i for i, n in enumerate(names) if not n]
    if empty:
        raise DHError(f"{where}: class {empty[0]} has an empty name (class i is the i-th name, counted from 0)")
    seen: dict[str, int] = {}
    for i, n in enumerate(names):
        if seen.setdefault(n, i) != i:
            raise DHError(f"{where}: class {i} is named '{n}', as class {seen[n]} is; names must be unique")
    return tuple(names)


def _class_file(path: Path) -> list[str]:
    if path.suffix.lower() in (".yaml", ".yml"):
        import yaml

        try:
            data = yaml.safe_load(path.read_text())
        except (yaml.YAMLError, UnicodeDecodeError) as exc:
            raise DHError(f"--classes {path} is not valid YAML ({str(exc).splitlines()[0]})") from None
        names = data.get("names") if isinstance(data, dict) else None
        if isinstance(names, dict) and all(isinstance(k, int) for k in names):
            if sorted(names) != list(range(len(names))):
                raise DHError(f"--classes {path}: 'names' numbers its classes {sorted(names)[:5]}..., not 0, 1, ...")
            return [str(names[k]) for k in range(len(names))]
        if isinstance(names, list):
            return [str(n) for n in names]
        raise DHError(f"--classes {path} has no 'names' list (a YOLO data.yaml's); give a file of one name a line")
    try:
        lines = path.read_text().splitlines()
    except UnicodeDecodeError:
        raise DHError(f"--classes {path} is not a text file of one class name a line") from None
    while lines and not lines[-1].strip():
        lines.pop()
    return lines


def _read_map(value: str | Path, flag: str) -> dict:
    path = Path(value)
    data = read_json(path, flag)
    if not isinstance(data, dict) or not data:
        raise DHError(f"{flag} {path} is not a non-empty JSON object")
    return data


def _category_map(value: str | Path) -> dict[str, int | str]:
    """``{"their id or name": our id or category name}``, every value checked."""
    data = _read_map(value, "--category-map")
    for key, ours in data.items():
        if not ((_is_number(ours) and float(ours).is_integer()) or (isinstance(ours, str) and ours.strip())):
            raise DHError(f"--category-map {value}: '{key}' maps to {ours!r}, not a category id or name")
    return {str(_as_label(k) if not isinstance(k, str) else k): _as_label(v) for k, v in data.items()}


def _image_map(value: str | Path) -> dict[str, str]:
    """{their image id as text: file name}, from a plain mapping or a COCO json's ``images`` list."""
    data = _read_map(value, "--image-map")
    if isinstance(data.get("images"), list):
        images = data["images"]
        bad = [i for i, im in enumerate(images) if not (isinstance(im, dict) and "id" in im and "file_name" in im)]
        if bad:
            raise DHError(f"--image-map {value}: 'images' entry {bad[0]} has no 'id' and 'file_name'")
        return {str(_as_label(im["id"])): str(im["file_name"]) for im in images}
    bad = [k for k, v in data.items() if not (isinstance(v, (str, int)) and not isinstance(v, bool))]
    if bad:
        raise DHError(f"--image-map {value}: '{bad[0]}' maps to {data[bad[0]]!r}, not a file name")
    return {k: str(v) for k, v in data.items()}


# ---------------------------------------------------------------------------------------------------- the options
def detect_format(path: Path, stated: str, what: str) -> str:
    """The format of an input: as stated, else from the path: a .json file is COCO, a .txt file an image set (ground
    truth) or one devkit class file (results), a folder of .xml VOC, a folder of devkit class files VOC, a folder of
    .txt YOLO."""
    if stated not in FORMATS:
        raise DHError(f"format {stated!r} of {what} {path} is not one of {', '.join(FORMATS)}")
    if stated != AUTO:
        return stated
    if path.is_file():
        if path.suffix.lower() == ".txt":
            return VOC
        return COCO
    if not path.is_dir():
        raise DHError(f"{what} {path} does not exist")
    names = [p.name for p in path.iterdir() if p.is_file()]
    xml = any(n.lower().endswith(".xml") for n in names)
    txt = [n for n in names if n.lower().endswith(".txt") and n != YOLO_CLASS_FILE]
    devkit = [n for n in txt if VOC_DET_RE.match(n)]
    flag = f"--{'gt' if what == GT_FILE else 'results'}-format"
    if not xml and not txt:
        raise DHError(f"{what} {path} is a folder without .xml or .txt files; give a COCO json, a folder of VOC xml "
                      "or of YOLO txt files")
    if what == GT_FILE:
        if xml != bool(txt):
            return VOC if xml else YOLO
        raise DHError(f"{what} {path} holds xml and txt files; say which format it is with {flag}")
    if xml and not txt:
        raise DHError(f"{what} {path} holds VOC xml files, which are ground truth; VOC detections are the devkit's "
                      "<comp>_det_<set>_<class>.txt files")
    if devkit and len(devkit) != len(txt):
        raise DHError(f"{what} {path} holds devkit detection files and other txt files; say which format it is with "
                      f"{flag}")
    return VOC if devkit else YOLO


def resolve_options(options: InputOptions | None, gt_path: Path, results_path: Path,
                    score_fields: Sequence[str] = ()) -> Resolved:
    """Every option checked and every small file it names read, before the inputs are: a refusal names the option
    and the way out."""
    o = options or InputOptions()
    gt_format = detect_format(gt_path, o.gt_format, GT_FILE)
    results_format = detect_format(results_path, o.results_format, RESULTS_FILE)
    yolo_gt, yolo_res = gt_format == YOLO, results_format == YOLO
    if o.match_images not in (None, *MATCHINGS):
        raise DHError(f"--match-images {o.match_images!r} is not one of {', '.join(MATCHINGS)}")
    if isinstance(o.category_offset, bool) or not isinstance(o.category_offset, (int, np.integer)):
        raise DHError(f"--category-offset must be an integer, got {o.category_offset!r}")
    classes = read_classes(o.classes) if o.classes is not None else None
    if classes is not None and not (yolo_gt or yolo_res or gt_format == VOC):
        raise DHError("--classes names YOLO class indices and orders a VOC ground truth's classes; neither --gt nor "
                      "--results is YOLO or VOC ground truth (COCO files name their categories)")
    if yolo_gt and classes is None:
        raise DHError(f"{GT_FILE} {gt_path} is YOLO ground truth, whose class indices need their names: --classes "
                      "names.txt (one a line, class 0 first), a data.yaml, or --classes a,b,c")
    images = Path(o.images) if o.images is not None else None
    if images is not None and not (yolo_gt or yolo_res):
        raise DHError("--images gives the sizes of the images YOLO coordinates are fractions of; neither --gt nor "
                      "--results is YOLO")
    if images is not None and not images.is_dir():
        raise DHError(f"--images {images} is not a folder")
    if yolo_gt and images is None:
        raise DHError(f"{GT_FILE} {gt_path} is YOLO ground truth: give the folder of its images with --images DIR "
                      "(their sizes turn the fractions into pixels, and images without a label file have no objects)")
    if results_format != COCO and score_fields:
        raise DHError(f"--score-field {score_fields[0]}: {results_format.upper()} detection files have one score; "
                      "extra score fields are read from a COCO results json")
    if results_format != COCO and o.match_images == BY_ID:
        raise DHError(f"--match-images by-id: {results_format.upper()} detection files name their images by file "
                      "name, so they are matched by name; leave --match-images out")
    if o.image_map is not None and results_format != COCO:
        raise DHError("--image-map maps a COCO results json's image ids to file names; "
                      f"{results_format.upper()} detection files name their images already")
    if o.image_map is not None and o.match_images == BY_ID:
        raise DHError("--image-map maps image ids to file names for --match-images by-name; leave out --match-images "
                      "by-id")
    by_index = isinstance(o.category_map, str) and o.category_map == BY_INDEX
    if o.category_offset and o.category_map is not None:
        raise DHError("give --category-offset or --category-map, not both")
    names_read = results_format == VOC or (yolo_res and classes is not None)
    if o.category_offset and names_read:
        raise DHError("--category-offset shifts numeric category ids, but these detections name their classes "
                      f"({'the devkit files name them' if results_format == VOC else '--classes names them'}); map "
                      "names with --category-map")
    if by_index and names_read:
        raise DHError("--category-map index numbers categories, but these detections name their classes; map names "
                      "with a --category-map file")
    category_map = _category_map(o.category_map) if o.category_map is not None and not by_index else None
    image_map = _image_map(o.image_map) if o.image_map is not None else None
    by_name = o.match_images == BY_NAME or image_map is not None or results_format != COCO
    return Resolved(gt_format, results_format, classes, images, by_name, image_map, int(o.category_offset),
                    category_map, by_index, o)


def coco_json() -> Resolved:
    """The default reading: two COCO json files, matched by id."""
    return Resolved(COCO, COCO, None, None, False, None, 0, None, False, InputOptions(COCO, COCO))


def _gt_named(gt_path: Path | None) -> str:
    return f"{GT_FILE} {gt_path}" if gt_path is not None else "the ground truth"


# ---------------------------------------------------------------------------------------------------- identities
def path_identity(path: Path) -> dict:
    """A file's name and sha256 (a folder's or an image set's contents are covered by `content_digest`)."""
    if path.is_dir():
        return {"name": path.name, "folder": True}
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return {"name": path.name, "sha256": digest.hexdigest()}


def content_digest(gt: dict, results: pd.DataFrame) -> str:
    """sha256 of what was read: the ground truth as built and the results table (its ids already mapped)."""
    digest = hashlib.sha256(json.dumps(gt, sort_keys=True, default=str).encode())
    digest.update(",".join(map(str, results.columns)).encode())
    digest.update(pd.util.hash_pandas_object(results, index=False).to_numpy().tobytes())
    return digest.hexdigest()


# ---------------------------------------------------------------------------------------------------- images
def image_ids(stems: Sequence[str]) -> list[int]:
    """Image ids from file stems: the numbers themselves when every stem is a decimal number and no two are the same
    number, else 1, 2, ... in the stems' sorted order."""
    if stems and all(s.isdigit() for s in stems) and len({int(s) for s in stems}) == len(stems):
        return [int(s) for s in stems]
    order = {s: k for k, s in enumerate(sorted(stems), start=1)}
    return [order[s] for s in stems]


def image_files(folder: Path) -> dict[str, Path]:
    """{stem: path} of the images directly in ``folder``; two images of one stem are refused."""
    found: dict[str, Path] = {}
    for p in sorted(folder.iterdir()):
        if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES:
            if p.stem in found:
                raise DHError(f"--images {folder} holds {found[p.stem].name} and {p.name}; one image per file stem, "
                              "since label files are named by stem")
            found[p.stem] = p
    if not found:
        raise DHError(f"--images {folder} holds no images ({', '.join(IMAGE_SUFFIXES)})")
    return found


EXIF_ORIENTATION = 0x0112
EXIF_TRANSPOSED = (5, 6, 7, 8)  # orientations that turn the image a quarter: width and height swap


def image_sizes(files: dict[str, Path]) -> dict[str, tuple[int, int]]:
    """{stem: (width, height)} read from each image's header, as the image is shown: a JPEG whose EXIF orientation
    turns it a quarter has its stored width and height swapped (OpenCV's imread, which YOLO trainers read images
    with, applies the orientation, so their fractions are of the turned image)."""
    from PIL import Image

    sizes = {}
    for stem, p in files.items():
        try:
            with Image.open(p) as im:
                width, height = im.size
                turned = im.getexif().get(EXIF_ORIENTATION) in EXIF_TRANSPOSED
                sizes[stem] = (height, width) if turned else (width, height)
        except OSError as exc:
            raise DHError(f"--images: image {p} cannot be read ({exc}); replace or remove it") from None
    return sizes


def _images(resolved: Resolved) -> tuple[dict[str, Path], dict[str, tuple[int, int]]]:
    """``--images``: {stem: path} and {stem: (width, height)}, read once."""
    if resolved.sizes is None:
        resolved.image_paths = image_files(resolved.images)
        resolved.sizes = image_sizes(resolved.image_paths)
    return resolved.image_paths, resolved.sizes


class NameIndex:
    """The ground truth's images by file stem (and by number, for numeric stems), for matching by name."""

    def __init__(self, gt: dict, gt_path: Path | None):
        images = gt["images"]
        lacking = [i for i, im in enumerate(images) if not isinstance(im.get("file_name"), str)]
        if lacking:
            raise DHError(f"{_gt_named(gt_path)}: 'images' entry {lacking[0]} has no file_name, which matching "
                          "images by name needs")
        self.by_stem: dict[str, int] = {}
        for im in images:
            stem = name_stem(im["file_name"])
            if stem in self.by_stem:
                raise DHError(f"{_gt_named(gt_path)}: images {self.by_stem[stem]} and {im['id']} are both named "
                              f"'{stem}'; matching by name needs distinct file names")
            self.by_stem[stem] = im["id"]
        numbers: dict[int, list[int]] = {}
        for stem, image in self.by_stem.items():
            if stem.isdigit():
                numbers.setdefault(int(stem), []).append(image)
        self.by_number = {n: ids[0] for n, ids in numbers.items() if len(ids) == 1}
        self.example = images[0]["file_name"]

    def find(self, label) -> int | None:
        """The image a results entry names: its file stem, or the number of a numeric stem (ultralytics writes
        ``int(stem)``)."""
        if isinstance(label, int):
            return self.by_stem.get(str(label), self.by_number.get(label))
        stem = name_stem(label)
        found = self.by_stem.get(stem)
        if found is None and stem.isdigit():
            found = self.by_number.get(int(stem))
        return found


# ---------------------------------------------------------------------------------------------------- mapping ids
def _entry(i: int) -> str:
    return f"entry {i}"


def _mapped(values: np.ndarray, convert: Callable) -> tuple[np.ndarray, np.ndarray, list]:
    """``convert`` applied once per distinct value: (the converted values as objects, the codes of each row, the
    distinct values as labels)."""
    series = pd.Series(values, dtype=object)
    if pd.api.types.infer_dtype(series, skipna=False) == "integer":  # the usual ids: no per-entry Python
        codes, uniques = pd.factorize(series.astype(np.int64))
        uniques = [int(u) for u in uniques]
    else:
        codes, uniques = pd.factorize(pd.Series([_as_label(v) for v in values], dtype=object))
        uniques = list(uniques)
    return np.asarray([convert(u) for u in uniques], dtype=object), codes, uniques


def _refuse_unknown(path: Path, key: str, noun: str, values: np.ndarray, unknown_rows: np.ndarray, n_unknown: int,
                    n_distinct: int, against: str, hint: str, where: Callable[[int], str]) -> None:
    """One line: how many distinct ids miss, what they miss, the option that fixes it (else "fix or remove them"),
    the first entry that has one and how many entries do."""
    first = int(np.flatnonzero(unknown_rows)[0])
    rows = int(unknown_rows.sum())
    verb = "is" if n_unknown == 1 else "are"
    more = f", {rows} entries like it" if rows > 1 else ""
    remedy = f" ({hint})" if hint else ""
    tail = "" if hint else "; fix or remove them"
    raise DHError(f"{RESULTS_FILE} {path}: {n_unknown} of {_plural(n_distinct, noun)} {verb} not in {against}{remedy}"
                  f"; {where(first)} has {key} {_shown(values[first])}{more}{tail}")


def _shown(value, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _category_hint(labels: list, gt_ids: list[int], resolved: Resolved) -> str:
    """Why numeric category ids miss the ground truth's, when one of the commonest causes explains every id of the
    file (``labels``: the distinct ids, those the ground truth has included: 0-based ids overlap 1-based ones)."""
    if resolved.category_offset:
        return f"after --category-offset {resolved.category_offset}"
    if resolved.by_index:
        return f"--category-map index: ids are 0-based positions among the {len(gt_ids)} categories"
    if resolved.category_map is not None:
        return "after --category-map; ids it leaves out pass unchanged"
    known = set(gt_ids)
    ints = [v for v in labels if isinstance(v, int)]
    if len(ints) != len(labels):
        return ""
    if all(v + 1 in known for v in ints):
        return "ids look 0-based: try --category-offset 1"
    if all(v - 1 in known for v in ints):
        return "ids look shifted by one: try --category-offset -1"
    if all(0 <= v < len(gt_ids) for v in ints):
        return (f"ids look like 0-based positions among the ground truth's {len(gt_ids)} categories in id order, "
                "YOLO's numbering: try --category-map index")
    return "map them with --category-map MAP.json"


def resolve_categories(values: np.ndarray, gt: dict, path: Path, resolved: Resolved, gt_path: Path | None,
                       where: Callable[[int], str] = _entry, key: str = "category_id") -> np.ndarray:
    """The ground truth's category id of every results entry (int64): ``--category-map`` (or ``index``) or
    ``--category-offset`` applied to the file's ids, class names turned into their category's id. An id or name the
    ground truth lacks is refused in one line counting them, with the option that fixes the commonest causes."""
    cats = sorted(gt["categories"], key=lambda c: c["id"])
    gt_ids = [c["id"] for c in cats]
    known = set(gt_ids)
    by_name = {c["name"]: c["id"] for c in cats}

    def convert(label):
        if resolved.category_map is not None:
            label = resolved.category_map.get(str(label), label)
        elif resolved.by_index:
            label = gt_ids[label] if isinstance(label, int) and 0 <= label < len(gt_ids) else None
        elif resolved.category_offset and isinstance(label, int):
            label = label + resolved.category_offset
        if isinstance(label, str):
            label = by_name.get(label, label)
        return label if isinstance(label, int) and label in known else None

    mapped, codes, uniques = _mapped(values, convert)
    missing = np.asarray([m is None for m in mapped], dtype=bool)
    if missing.any():
        lost = [u for u, m in zip(uniques, missing) if m]
        names = all(isinstance(u, str) for u in lost)
        noun = "class name" if names else "category id"
        against = f"{_gt_named(gt_path)}'s categories"
        if names:
            shown = ", ".join(repr(u) for u in lost[:3]) + (", ..." if len(lost) > 3 else "")
            hint = (f"{shown}; the ground truth's are {', '.join(repr(n) for n in list(by_name)[:3])}"
                    f"{', ...' if len(by_name) > 3 else ''}: map them with --category-map MAP.json")
        else:
            hint = _category_hint(uniques, gt_ids, resolved)
        _refuse_unknown(path, key, noun, values, missing[codes], len(lost), len(uniques), against, hint, where)
    return mapped[codes].astype(np.int64)


def resolve_images(values: np.ndarray, gt: dict, path: Path, resolved: Resolved, gt_path: Path | None,
                   where: Callable[[int], str] = _entry, key: str = "image_id") -> np.ndarray:
    """The ground truth's image id of every results entry (int64): by id, or by file name (``--image-map`` first
    turning their ids into names). Images the ground truth lacks are refused in one line counting them, with the
    option that fixes the commonest causes."""
    known = {im["id"] for im in gt["images"]}
    names = NameIndex(gt, gt_path) if resolved.by_name else None

    def convert(label):
        if names is None:
            return label if isinstance(label, int) and label in known else None
        if resolved.image_map is not None:
            label = resolved.image_map.get(str(label))
            if label is None:
                return None
        return names.find(label)

    mapped, codes, uniques = _mapped(values, convert)
    missing = np.asarray([m is None for m in mapped], dtype=bool)
    if missing.any():
        lost = [u for u, m in zip(uniques, missing) if m]
        against = f"{_gt_named(gt_path)}'s images"
        if names is not None:
            noun = "image name"
            against += " by file name"
            if resolved.image_map is not None:
                unmapped = sum(str(u) not in resolved.image_map for u in lost)
                hint = f"{unmapped} of them not in --image-map" if unmapped else "--image-map names files it lacks"
            else:
                hint = f"its images are named like {names.example!r}"
        else:
            noun = "image id"
            hint = _image_hint(lost, len(uniques), gt, gt_path)
        _refuse_unknown(path, key, noun, values, missing[codes], len(lost), len(uniques), against, hint, where)
    return mapped[codes].astype(np.int64)


def _image_hint(lost: list, distinct: int, gt: dict, gt_path: Path | None) -> str:
    """Why image ids miss the ground truth's: file names (matching by name would find every one), or another
    numbering (none of the file's ids is the ground truth's); "" when a few ids are simply wrong."""
    try:
        names = NameIndex(gt, gt_path)
    except DHError:
        names = None
    if names is not None and all(names.find(u) is not None for u in lost):
        return "they match its file names: try --match-images by-name"
    if any(isinstance(u, str) for u in lost):
        named = f" (named like {names.example!r})" if names is not None else ""
        return f"they look like file names, but not of its images{named}"
    if len(lost) == distinct:
        return "another numbering? --image-map MAP.json with their ids' file names maps it"
    return ""


# ---------------------------------------------------------------------------------------------------- text files
@dataclass
class Rows:
    """Every line of a set of text files, split: ``fields`` (lines, k) as text, and where each came from."""

    fields: np.ndarray
    file: np.ndarray  # index into ``files``
    line: np.ndarray  # 1-based line numbers
    files: list[Path]

    def where(self, i: int) -> str:
        return f"{self.files[self.file[i]]} line {self.line[i]}"

    def numbers(self, columns: slice, what: str, role: str) -> np.ndarray:
        """The columns as float64; a cell that is not a number refused with its file and line."""
        cells = self.fields[:, columns]
        try:
            return cells.astype(np.float64)
        except ValueError:
            bad = np.asarray([[not _parses(c) for c in row] for row in cells]).any(axis=1)
            i = int(np.flatnonzero(bad)[0])
            raise DHError(f"{role} {self.where(i)} is {' '.join(self.fields[i])!r}: not {what}") from None

    def refuse(self, bad: np.ndarray, role: str, problem: Callable[[int], str]) -> None:
        hits = np.flatnonzero(bad)
        if len(hits):
            i = int(hits[0])
            more = f"; {len(hits)} lines like it" if len(hits) > 1 else ""
            raise DHError(f"{role} {self.where(i)} {problem(i)}{more}")


def _parses(text: str) -> bool:
    try:
        float(text)
        return True
    except ValueError:
        return False


def read_rows(files: list[Path], width: int, layout: str, role: str, folder: Path, hint: str = "") -> Rows:
    """Every non-blank line of ``files``, each of exactly ``width`` whitespace-separated fields."""
    fields, file_of, line_of = [], [], []
    for k, p in enumerate(files):
        try:
            text = p.read_text()
        except (UnicodeDecodeError, OSError) as exc:
            raise DHError(f"{role} {folder}: {p} cannot be read as text ({exc})") from None
        for n, line in enumerate(text.splitlines(), start=1):
            parts = line.split()
            if not parts:
                continue
            if len(parts) != width:
                raise DHError(f"{role} {p} line {n} has {_plural(len(parts), 'field')}; a line is '{layout}'{hint}")
            fields.append(parts)
            file_of.append(k)
            line_of.append(n)
    return Rows(np.asarray(fields, dtype=object).reshape(-1, width), np.asarray(file_of, np.int64),
                np.asarray(line_of, np.int64), files)


def _text_files(folder: Path, role: str) -> list[Path]:
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() == ".txt"
                   and p.name != YOLO_CLASS_FILE)
    if not files:
        raise DHError(f"{role} {folder} holds no .txt files")
    return files


# ---------------------------------------------------------------------------------------------------- YOLO
YOLO_GT_LINE = "class cx cy w h"
YOLO_DET_LINE = "class cx cy w h conf"


def _yolo_boxes(rows: Rows, role: str, num_classes: int | None) -> tuple[np.ndarray, np.ndarray]:
    """(class indices (n,), normalised cx cy w h (n, 4)), each checked: an integral class index (below the class
    list's length when there is one), coordinates finite fractions in [0, 1]."""
    cls = rows.numbers(slice(0, 1), "numbers", role)[:, 0]
    bad_cls = ~np.isfinite(cls) | (cls < 0) | (cls != np.round(cls))
    if num_classes is not None:
        bad_cls |= cls >= num_classes
    names = f"; --classes names {num_classes} (0 to {num_classes - 1})" if num_classes is not None else ""
    rows.refuse(bad_cls, role, lambda i: f"has class {rows.fields[i][0]}, not a class index{names}")
    xywh = rows.numbers(slice(1, 5), "numbers", role)
    with np.errstate(invalid="ignore"):
        bad = ~np.isfinite(xywh).all(axis=1) | (xywh < 0).any(axis=1) | (xywh > 1).any(axis=1)
    rows.refuse(bad, role, lambda i: f"has box {' '.join(rows.fields[i][1:5])}: YOLO's cx cy w h are fractions of the "
                "image's width and height, in [0, 1]")
    return cls.astype(np.int64), xywh


def _pixels(xywh: np.ndarray, size: np.ndarray) -> np.ndarray:
    """Normalised centre boxes (n, 4) and image sizes (n, 2: width, height) -> COCO [x, y, w, h] pixels (n, 4)."""
    w, h = xywh[:, 2] * size[:, 0], xywh[:, 3] * size[:, 1]
    return np.stack([xywh[:, 0] * size[:, 0] - w / 2, xywh[:, 1] * size[:, 1] - h / 2, w, h], axis=1)


def yolo_ground_truth(folder: Path, resolved: Resolved) -> dict:
    """A COCO ground-truth dict of a YOLO labels folder and the images of ``--images``: every image a COCO image
    (those without a label file, or with an empty one, have no objects), every line an annotation."""
    role = GT_FILE
    if not folder.is_dir():
        raise DHError(f"{role} {folder} is not a folder of YOLO label files (<image stem>.txt)")
    files = _text_files(folder, role)
    images, sizes = _images(resolved)
    orphans = [p for p in files if p.stem not in images]
    if orphans:
        raise DHError(f"{role} {folder}: {_plural(len(orphans), 'label file')} without an image in --images "
                      f"{resolved.images}, the first {orphans[0].name}; give the images folder of these labels")
    rows = read_rows(files, 5, YOLO_GT_LINE, role, folder, " (boxes only: polygon labels are not read)")
    classes = resolved.classes
    cls, xywh = _yolo_boxes(rows, role, len(classes))
    rows.refuse((xywh[:, 2] == 0) | (xywh[:, 3] == 0), role,
                lambda i: "has a box of zero width or height, which no detection can match (COCOeval counts it as a "
                          "miss)")
    stems = list(images)
    ids = dict(zip(stems, image_ids(stems)))
    file_stems = np.asarray([p.stem for p in files], dtype=object)[rows.file]
    size = np.asarray([sizes[s] for s in file_stems], dtype=np.float64).reshape(-1, 2)
    boxes = _pixels(xywh, size)
    image_of = [ids[s] for s in file_stems]
    return {
        "images": [{"id": ids[s], "file_name": images[s].name, "width": sizes[s][0], "height": sizes[s][1]}
                   for s in stems],
        "annotations": [{"id": k + 1, "image_id": image_of[k], "category_id": int(cls[k]) + 1,
                         "bbox": boxes[k].tolist(), "area": float(boxes[k, 2] * boxes[k, 3]), "iscrowd": 0}
                        for k in range(len(cls))],
        "categories": [{"id": k + 1, "name": n} for k, n in enumerate(classes)],
    }


def yolo_detections(folder: Path, gt: dict, resolved: Resolved, gt_path: Path | None) -> pd.DataFrame:
    """The results table of a folder of YOLO detection files (``class cx cy w h conf`` per line), in file-name order
    and line order, each file's stem naming its ground-truth image."""
    role = RESULTS_FILE
    if not folder.is_dir():
        raise DHError(f"{role} {folder} is not a folder of YOLO detection files (<image stem>.txt)")
    files = _text_files(folder, role)
    rows = read_rows(files, 6, YOLO_DET_LINE, role, folder,
                     " (ultralytics writes the confidence with save_txt=True, save_conf=True)")
    if not len(rows.fields):
        raise DHError(f"{role} {folder} holds no detections; nothing to analyse")
    classes = resolved.classes
    cls, xywh = _yolo_boxes(rows, role, len(classes) if classes is not None else None)
    conf = rows.numbers(slice(5, 6), "numbers", role)[:, 0]
    rows.refuse(~np.isfinite(conf) | (conf < 0) | (conf > 1), role,
                lambda i: f"has confidence {rows.fields[i][5]}, not a number in [0, 1]")
    stems = np.asarray([p.stem for p in files], dtype=object)[rows.file]
    image = resolve_images(stems, gt, folder, resolved, gt_path, rows.where, key="image")
    if resolved.images is not None:
        _, sizes = _images(resolved)
        lacking = [s for s in pd.unique(stems) if s not in sizes]
        if lacking:
            raise DHError(f"--images {resolved.images} has no image {lacking[0]}.* for {folder / (lacking[0] + '.txt')}"
                          f" ({_plural(len(lacking), 'detection file')} like it)")
        size = np.asarray([sizes[s] for s in stems], dtype=np.float64).reshape(-1, 2)
    else:
        known = {im["id"]: (im.get("width"), im.get("height")) for im in gt["images"]}
        lacking = [i for i in pd.unique(image) if None in known[i]]
        if lacking:
            raise DHError(f"{_gt_named(gt_path)}: image {lacking[0]} has no width and height, which YOLO's fractions "
                          "need; give the images with --images DIR")
        size = np.asarray([known[i] for i in image], dtype=np.float64).reshape(-1, 2)
    labels = np.asarray(classes, dtype=object)[cls] if classes is not None else cls.astype(object)
    category = resolve_categories(labels, gt, folder, resolved, gt_path, rows.where, key="class")
    boxes = _pixels(xywh, size)
    return pd.DataFrame({"image_id": image, "category_id": category, "score": conf,
                         "x": boxes[:, 0], "y": boxes[:, 1], "w": boxes[:, 2], "h": boxes[:, 3]})


# ---------------------------------------------------------------------------------------------------- VOC
def voc_pixels(xyxy: np.ndarray) -> np.ndarray:
    """The devkit's boxes (n, 4: xmin, ymin, xmax, ymax, 1-based inclusive) -> COCO [x, y, w, h] (n, 4), as
    `dhanalysis.data.voc.voc_box_to_coco` converts one."""
    return np.stack([xyxy[:, 0] - 1, xyxy[:, 1] - 1, xyxy[:, 2] - xyxy[:, 0] + 1, xyxy[:, 3] - xyxy[:, 1] + 1], axis=1)


def _voc_xml_files(path: Path) -> list[Path]:
    """The annotation files of a folder of xml, or of an image set (``ImageSets/Main/<set>.txt`` names the stems of
    ``Annotations/<stem>.xml`` two folders up)."""
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() == ".xml")
        if not files:
            raise DHError(f"{GT_FILE} {path} holds no .xml files")
        return files
    if not path.is_file():
        raise DHError(f"{GT_FILE} {path} does not exist")
    annotations = path.resolve().parents[2] / "Annotations" if len(path.resolve().parents) > 2 else None
    stems = [line.split()[0] for line in path.read_text().splitlines() if line.strip()]
    if not stems:
        raise DHError(f"{GT_FILE} {path} names no image")
    if annotations is None or not annotations.is_dir():
        raise DHError(f"{GT_FILE} {path} is an image set, but {annotations} is not a folder; give the folder of xml "
                      "files, or the set file of a VOCdevkit/VOC20xx folder")
    files = [annotations / f"{s}.xml" for s in stems]
    absent = [p for p in files if not p.is_file()]
    if absent:
        raise DHError(f"{GT_FILE} {path} names {_plural(len(absent), 'image')} without an annotation, the first "
                      f"{absent[0]}")
    return files


def voc_ground_truth(path: Path, resolved: Resolved) -> dict:
    """A COCO ground-truth dict of VOC annotation files: ``difficult`` objects as ``iscrowd=1``, the devkit's boxes
    converted by `voc_pixels`; categories in the order of ``--classes``, else VOC's 20 in their usual order when the
    files name no other, else the names found, sorted (as ``dhanalysis data voc2coco`` orders them)."""
    from dhanalysis.data.voc import VOC_CLASSES, parse_voc_xml

    files = _voc_xml_files(path)
    records = [parse_voc_xml(p) for p in files]
    found = {o["name"] for r in records for o in r["objects"]}
    classes = resolved.classes
    if classes is None:
        classes = VOC_CLASSES if found <= set(VOC_CLASSES) else tuple(sorted(found))
    cat_id = {n: k for k, n in enumerate(classes, start=1)}
    stems = [p.stem for p in files]
    ids = image_ids(stems)
    images, annotations = [], []
    for p, image, r in zip(files, ids, records):
        entry = {"id": image, "file_name": r["filename"]}
        if r["width"] > 0 and r["height"] > 0:
            entry.update(width=r["width"], height=r["height"])
        images.append(entry)
        for k, o in enumerate(r["objects"]):
            if o["name"] not in cat_id:
                raise DHError(f"{GT_FILE} {path}: {p.name} object {k} is a '{o['name']}', which --classes does not "
                              f"name ({', '.join(classes[:4])}{', ...' if len(classes) > 4 else ''})")
            box = voc_pixels(np.asarray([o["box"]], dtype=np.float64))[0]
            if not (np.isfinite(box).all() and box[2] > 0 and box[3] > 0):
                raise DHError(f"{GT_FILE} {path}: {p.name} object {k} has xmin, ymin, xmax, ymax "
                              f"{' '.join(f'{v:g}' for v in o['box'])}: xmax below xmin or ymax below ymin")
            annotations.append({"id": len(annotations) + 1, "image_id": image, "category_id": cat_id[o["name"]],
                                "bbox": box.tolist(), "area": float(box[2] * box[3]), "iscrowd": int(o["difficult"])})
    return {"images": images, "annotations": annotations,
            "categories": [{"id": cat_id[n], "name": n} for n in classes]}


def _voc_detection_files(path: Path) -> list[tuple[Path, str]]:
    """(file, class name) of each devkit detection file: ``<comp>_det_<set>_<class>.txt``, or ``<class>.txt`` (the
    name detectron2's VOC evaluator gives them) when the folder holds no devkit names."""
    files = [path] if path.is_file() else _text_files(path, RESULTS_FILE)
    devkit = [(p, m.group("cls")) for p in files if (m := VOC_DET_RE.match(p.name))]
    if devkit and len(devkit) != len(files):
        other = next(p for p in files if not VOC_DET_RE.match(p.name))
        raise DHError(f"{RESULTS_FILE} {path} holds devkit detection files and {other.name}, which is not one "
                      "(<comp>_det_<set>_<class>.txt); keep one kind in the folder")
    pairs = devkit or [(p, p.stem) for p in files]
    seen: dict[str, Path] = {}
    for p, name in pairs:
        if name in seen:
            raise DHError(f"{RESULTS_FILE} {path} holds {seen[name].name} and {p.name}, both of class '{name}'; keep "
                          "one competition's files")
        seen[name] = p
    return pairs


def voc_detections(path: Path, gt: dict, resolved: Resolved, gt_path: Path | None) -> pd.DataFrame:
    """The results table of the devkit's per-class detection files (``image_id score xmin ymin xmax ymax`` per
    line), in file-name order and line order; each line's image_id is the stem of its ground-truth image."""
    role = RESULTS_FILE
    if not path.exists():
        raise DHError(f"{role} {path} does not exist")
    pairs = _voc_detection_files(path)
    rows = read_rows([p for p, _ in pairs], 6, "image_id score xmin ymin xmax ymax", role, path)
    if not len(rows.fields):
        raise DHError(f"{role} {path} holds no detections; nothing to analyse")
    numbers = rows.numbers(slice(1, 6), "numbers", role)
    score, xyxy = numbers[:, 0], numbers[:, 1:]
    rows.refuse(~np.isfinite(score) | (score < 0) | (score > 1), role,
                lambda i: f"has score {rows.fields[i][1]}, not a number in [0, 1]")
    boxes = voc_pixels(xyxy)
    with np.errstate(invalid="ignore"):
        bad = ~np.isfinite(boxes).all(axis=1) | (boxes[:, 2] < 0) | (boxes[:, 3] < 0)
    rows.refuse(bad, role, lambda i: f"has box {' '.join(rows.fields[i][2:])}: not finite, or xmax below xmin - 1 or "
                "ymax below ymin - 1 (a negative size in the devkit's inclusive pixels)")
    image = resolve_images(rows.fields[:, 0], gt, path, resolved, gt_path, rows.where, key="image")
    labels = np.asarray([name for _, name in pairs], dtype=object)[rows.file]
    category = resolve_categories(labels, gt, path, resolved, gt_path, rows.where, key="class")
    return pd.DataFrame({"image_id": image, "category_id": category, "score": score,
                         "x": boxes[:, 0], "y": boxes[:, 1], "w": boxes[:, 2], "h": boxes[:, 3]})


# ---------------------------------------------------------------------------------------------------- entry points
def ground_truth_data(path: Path, resolved: Resolved):
    """The ground truth as a COCO dict (unchecked: `detections.read_ground_truth` checks every format alike)."""
    if resolved.gt_format == VOC:
        return voc_ground_truth(path, resolved)
    if resolved.gt_format == YOLO:
        return yolo_ground_truth(path, resolved)
    return read_json(path, GT_FILE)


def detection_files(path: Path, gt: dict, resolved: Resolved, gt_path: Path | None) -> pd.DataFrame:
    """YOLO or VOC detection files as the results table (image_id, category_id, score, x, y, w, h), checked."""
    reader = yolo_detections if resolved.results_format == YOLO else voc_detections
    return reader(path, gt, resolved, gt_path)
