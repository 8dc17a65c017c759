"""A synthetic COCO-format dataset of shapes, small enough to train a detector on a CPU in minutes.

Six classes of shapes (ellipse, rectangle, triangle, cross, ring, star) are drawn with anti-aliased edges on cluttered
backgrounds (gradients, smooth colour noise, distractor lines and blobs that are not objects). Colours are random, so
the shape alone identifies the class. Objects overlap (later ones occlude earlier ones; the box stays the whole
object's box), are cut by the image border (the box is then tight around the part inside), and span COCO's small,
medium and large size groups. An object is never drawn if it, or an object under it, would end up hidden more than
``max_occlusion``, so every drawn object is annotated. Category ids are deliberately non-contiguous (1, 3, 5, ...) so
the dataset's id mapping is exercised as on COCO.

Layout (COCO's, `dhanalysis.vocab.split_paths`)::

    out/train/000001.jpg ...   out/val/000001.jpg ...   out/test/000001.jpg ... (when ``num_test`` > 0)
    out/annotations/instances_train.json   out/annotations/instances_val.json   out/annotations/instances_test.json

The ``test`` split is for measuring what was tuned elsewhere: choose schedules, learning rates and thresholds on
``val``, report on ``test``. Its images are drawn from their own seeds (each image's seed includes its split's name)
and its image ids start at `TEST_ID_OFFSET`, so none can be mistaken for a training or validation image.

Everything follows from the parameters: the same parameters give byte-identical files, and a folder that already holds
a complete dataset with the same parameters (stored in ``synth.json`` and in each json's ``info``) is reused instead of
regenerated.

The folder is owned like a results folder (`dhanalysis.folders`): ``synth.json`` is written before any image, so a
killed run is recognised and finished by the same call. A folder holding anything this generator did not write (another
COCO dataset, a stray file) or a split of other parameters is refused with `FolderTaken` unless ``overwrite``, which
deletes only the generator's own files: ``synth.json``, ``annotations/instances_<split>.json`` and the
``<split>/NNNNNN.<ext>`` images of the train, val and test splits. A split's identity leaves out the other splits'
sizes, so a test split can be added to a folder (or left out of a request) without touching train and val.
"""

from __future__ import annotations

import dataclasses
import io
import json
import logging
import math
import os
import re
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, NamedTuple, Sequence

import numpy as np
from PIL import Image, ImageDraw

from dhanalysis.errors import DHError
from dhanalysis.folders import (TEMP_FILE, FolderTaken, atomic_write_bytes, differences, remove_paths,
                                remove_temp_files)
from dhanalysis.vocab import LARGE_MIN_AREA, SIZE_GROUPS, SMALL_MAX_AREA, size_group, split_paths

log = logging.getLogger(__name__)

SYNTH_VERSION = 1  # bump when the drawing changes, so an old folder is not taken for the new drawing
SPLITS = ("train", "val", "test")
TEST_ID_OFFSET = 1_000_000  # test image ids are TEST_ID_OFFSET + 1, + 2, ...: disjoint from train's and val's 1..N
SMALL_MAX_SIDE, LARGE_MIN_SIDE = math.sqrt(SMALL_MAX_AREA), math.sqrt(LARGE_MIN_AREA)  # COCO size groups by side
_FILE_RE = re.compile(r"^\d{6}\.(png|jpg)$")
_JSON_RE = re.compile(r"^instances_(?P<split>train|val|test)\.json$")
MARKER = "synth.json"  # the folder's identity record, written before any image
CONTRIBUTOR = "dhanalysis.data.synth"  # the jsons' ``info.contributor``: which annotation files are this generator's

Polygons = list[tuple[np.ndarray, bool]]  # (K, 2) vertices in a unit frame, True = fill, False = cut a hole
Region = tuple[slice, slice]  # (rows, cols) of a patch in the image


def _regular(n: int, radius: float = 1.0, phase: float = 0.0) -> np.ndarray:
    angles = phase + 2 * np.pi * np.arange(n) / n
    return radius * np.stack([np.cos(angles), np.sin(angles)], axis=1)


def _ellipse(rng: np.random.Generator) -> Polygons:
    return [(_regular(96), True)]


def _rectangle(rng: np.random.Generator) -> Polygons:
    return [(np.array([[-1.0, -1.0], [1.0, -1.0], [1.0, 1.0], [-1.0, 1.0]]), True)]


def _triangle(rng: np.random.Generator) -> Polygons:
    return [(_regular(3, phase=-np.pi / 2), True)]


def _cross(rng: np.random.Generator) -> Polygons:
    t = rng.uniform(0.28, 0.42)  # half-width of an arm
    pts = [(-t, -1), (t, -1), (t, -t), (1, -t), (1, t), (t, t), (t, 1), (-t, 1), (-t, t), (-1, t), (-1, -t), (-t, -t)]
    return [(np.array(pts, dtype=np.float64), True)]


def _ring(rng: np.random.Generator) -> Polygons:
    return [(_regular(96), True), (_regular(96, radius=rng.uniform(0.45, 0.62)), False)]


def _star(rng: np.random.Generator) -> Polygons:
    radii = np.where(np.arange(10) % 2 == 0, 1.0, rng.uniform(0.38, 0.5))
    return [(_regular(10, phase=-np.pi / 2) * radii[:, None], True)]


@dataclass(frozen=True)
class ShapeClass:
    """One category: its COCO id, name, unit-frame geometry and how far it may be stretched."""

    cat_id: int
    name: str
    geometry: Callable[[np.random.Generator], Polygons]
    max_aspect: float


CLASSES: tuple[ShapeClass, ...] = (
    ShapeClass(1, "ellipse", _ellipse, 2.0),
    ShapeClass(3, "rectangle", _rectangle, 2.0),
    ShapeClass(5, "triangle", _triangle, 1.5),
    ShapeClass(7, "cross", _cross, 1.5),
    ShapeClass(9, "ring", _ring, 1.7),
    ShapeClass(11, "star", _star, 1.4),
)


@dataclass(frozen=True)
class SynthParams:
    """Everything that determines the dataset; stored in each json's ``info`` to decide whether a folder is reusable."""

    num_train: int = 600
    num_val: int = 100
    num_test: int = 0  # a held-out split, written only when > 0
    image_size: int = 320
    seed: int = 0
    min_objects: int = 1
    max_objects: int = 6
    min_object_size: float = 12.0  # sqrt of the box area, pixels; sampled log-uniformly
    max_object_size: float = 200.0
    max_occlusion: float = 0.5  # hidden fraction (other objects + image border) beyond which an object is not kept
    max_rotation: float = 30.0  # degrees either way
    noise: float = 4.0  # std of per-pixel sensor noise, grey levels
    clutter: float = 1.0  # background texture, blobs and lines: 0 = a plain gradient, 1 = the default mess
    image_format: str = "jpg"  # jpg (small, fast) | png (lossless)
    version: int = SYNTH_VERSION

    def validate(self) -> None:
        """Raise `DHError` for parameters that cannot make a dataset."""
        if min(self.num_train, self.num_val, self.num_test) < 0 or self.num_train + self.num_val + self.num_test == 0:
            raise DHError(f"need at least one image and no negative counts, got num_train={self.num_train}, "
                          f"num_val={self.num_val} and num_test={self.num_test}")
        if self.image_size < 32:
            raise DHError(f"the image size must be at least 32 pixels, got {self.image_size}")
        if not 1 <= self.min_objects <= self.max_objects:
            raise DHError(f"need 1 <= min_objects <= max_objects, got {self.min_objects} and {self.max_objects}")
        if not 2 <= self.min_object_size <= self.max_object_size:
            raise DHError(f"need 2 <= min_object_size <= max_object_size, got {self.min_object_size}, "
                          f"{self.max_object_size}")
        if not 0 <= self.max_occlusion < 1:
            raise DHError(f"max_occlusion must be in [0, 1), got {self.max_occlusion}")
        if not 0 <= self.clutter <= 2 or self.noise < 0:
            raise DHError(f"need 0 <= clutter <= 2 and noise >= 0, got clutter={self.clutter}, noise={self.noise}")
        if self.image_format not in ("jpg", "png"):
            raise DHError(f"image format must be jpg or png, got {self.image_format!r}")

    def num_images(self, split: str) -> int:
        return {"train": self.num_train, "val": self.num_val, "test": self.num_test}[split]

    @property
    def splits(self) -> tuple[str, ...]:
        """The splits this dataset writes: train and val always, test when it has images."""
        return tuple(s for s in SPLITS if s != "test" or self.num_test > 0)

    @staticmethod
    def image_id(split: str, index: int) -> int:
        """The COCO id of image ``index`` (1-based) of ``split``."""
        return index + (TEST_ID_OFFSET if split == "test" else 0)


class SynthObject(NamedTuple):
    """One drawn object: its coverage ``alpha`` (h, w) float32 in [0, 1] over ``region``, as drawn (before later
    objects covered it)."""

    category_id: int
    box: tuple[float, float, float, float]  # xyxy, tight around the part of the shape inside the image
    full_box: tuple[float, float, float, float]  # xyxy of the whole shape, may extend past the image
    region: Region
    alpha: np.ndarray
    occlusion: float  # fraction of the whole shape hidden by later objects or the image border

    def mask(self, size: int) -> np.ndarray:
        """Coverage over the whole (size, size) image."""
        full = np.zeros((size, size), dtype=np.float32)
        full[self.region] = self.alpha
        return full


class SynthImage(NamedTuple):
    pixels: np.ndarray  # (H, W, 3) uint8
    objects: list[SynthObject]


@dataclass
class _Placed:
    category_id: int
    box: tuple[float, float, float, float]  # tight around the part inside the image
    full_box: tuple[float, float, float, float]
    region: Region
    alpha: np.ndarray  # (h, w) coverage as drawn
    visible: np.ndarray  # (h, w) coverage still visible after later objects
    full_area: float  # area of the whole shape, including parts outside the image
    visible_area: float

    def hidden_by(self, region: Region, alpha: np.ndarray) -> tuple[Region, Region, float] | None:
        """Where a new object over ``region`` overlaps this one: (local slices here, local slices there, area it
        would hide), or None when the patches do not meet."""
        rows = slice(max(self.region[0].start, region[0].start), min(self.region[0].stop, region[0].stop))
        cols = slice(max(self.region[1].start, region[1].start), min(self.region[1].stop, region[1].stop))
        if rows.stop <= rows.start or cols.stop <= cols.start:
            return None
        mine, theirs = _local((rows, cols), self.region), _local((rows, cols), region)
        return mine, theirs, float((self.visible[mine] * alpha[theirs]).sum())


def _local(inner: Region, outer: Region) -> Region:
    """``inner`` (image coordinates) relative to the patch at ``outer``."""
    r, c = outer[0].start, outer[1].start
    return slice(inner[0].start - r, inner[0].stop - r), slice(inner[1].start - c, inner[1].stop - c)


# ------------------------------------------------------------------------------------------------------ background
def _upsample(small: np.ndarray, height: int, width: int) -> np.ndarray:
    """(C, h, w) float32 -> (C, H, W) float32, bicubic: smooth variation from a few random values."""
    return np.stack([np.asarray(Image.fromarray(np.ascontiguousarray(c)).resize((width, height), Image.BICUBIC))
                     for c in small])


def _background(rng: np.random.Generator, size: int, clutter: float = 1.0) -> Image.Image:
    """RGB clutter: a colour gradient, smooth colour noise, distractor blobs and open lines that are not objects.

    Drawn at half resolution and upsampled: the clutter is smooth anyway, the lines come out anti-aliased, and it is
    four times cheaper. Arrays are channel-first because numpy broadcasts a colour over (3, H, W) much faster than over
    a trailing axis of length 3.
    """
    half = max(16, size // 2)
    ramp = np.linspace(-1.0, 1.0, half, dtype=np.float32)
    angle = rng.uniform(0, 2 * np.pi)
    t = (np.cos(angle) * ramp[None, :] + np.sin(angle) * ramp[:, None] + 1.5) / 3.0
    c0 = rng.uniform(30, 225, (3, 1, 1)).astype(np.float32)
    c1 = rng.uniform(30, 225, (3, 1, 1)).astype(np.float32)
    canvas = c0 + (c1 - c0) * t

    # Colour noise at two scales, mixed on a small grid so only one resize per channel is needed.
    grid = max(4, size // 10)
    cells = int(rng.integers(3, 7))
    coarse = _upsample(rng.standard_normal((3, cells, cells)).astype(np.float32), grid, grid)
    fine = rng.standard_normal((3, grid, grid)).astype(np.float32)
    canvas += _upsample(clutter * (rng.uniform(10, 30) * coarse + rng.uniform(4, 12) * fine), half, half)

    # Blobs: smooth noise cut near its median gives meandering regions that no shape class resembles (a high cut
    # would give round spots, too much like ellipses).
    for _ in range(int(rng.integers(0, 3))):
        cells = int(rng.integers(5, 11))
        noise_field = _upsample(rng.standard_normal((1, cells, cells)).astype(np.float32), half, half)[0]
        strength = min(rng.uniform(0.3, 0.8) * clutter, 1.0)
        alpha = np.clip((noise_field - rng.uniform(-0.3, 0.3)) * 2.0, 0.0, 1.0) * strength
        canvas += (rng.uniform(0, 255, (3, 1, 1)).astype(np.float32) - canvas) * alpha

    image = Image.fromarray(np.ascontiguousarray(np.clip(canvas, 0, 255).astype(np.uint8).transpose(1, 2, 0)))
    draw = ImageDraw.Draw(image)
    for _ in range(int(round(rng.integers(2, 8) * clutter))):  # open polylines: edges, never a closed shape
        n = int(rng.integers(2, 5))
        start = rng.uniform(-0.1, 1.1, 2) * half
        steps = rng.normal(0, half * 0.25, (n - 1, 2))
        pts = np.vstack([start, start + np.cumsum(steps, axis=0)])
        colour = tuple(int(v) for v in rng.integers(0, 256, 3))
        draw.line([tuple(p) for p in pts.tolist()], fill=colour, width=int(rng.integers(1, 3)), joint="curve")
    return image.resize((size, size), Image.BICUBIC)


# --------------------------------------------------------------------------------------------------------- objects
def _polygon_area(verts: np.ndarray) -> float:
    x, y = verts[:, 0], verts[:, 1]
    return 0.5 * abs(float(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))))


def _rasterize(polys: Polygons, size: int) -> tuple[Region, np.ndarray] | None:
    """Anti-aliased coverage of image-frame polygons: ``(rows, cols)`` slices and the (h, w) float32 patch in [0, 1].

    Drawn at 2-4x resolution and box-filtered down, so edge pixels get fractional coverage. Pixel (i, j) covers the
    square [j, j+1) x [i, i+1); None when the shape misses the image.
    """
    filled = np.vstack([v for v, fill in polys if fill])
    x0, y0 = np.floor(filled.min(axis=0)).astype(int)
    x1, y1 = np.ceil(filled.max(axis=0)).astype(int)
    x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, size), min(y1, size)
    if x1 <= x0 or y1 <= y0:
        return None
    ss = 4 if max(x1 - x0, y1 - y0) < 64 else 2
    w, h = x1 - x0, y1 - y0
    mask = Image.new("L", (w * ss, h * ss), 0)
    draw = ImageDraw.Draw(mask)
    for verts, fill in polys:
        # PIL puts integer coordinates on pixel centres: shift by half a (supersampled) pixel.
        pts = (verts - [x0, y0]) * ss - 0.5
        draw.polygon([tuple(p) for p in pts.tolist()], fill=255 if fill else 0)
    cover = np.asarray(mask, dtype=np.uint16).reshape(h, ss, w, ss).sum(axis=(1, 3), dtype=np.uint32)
    return (slice(y0, y1), slice(x0, x1)), (cover / (255.0 * ss * ss)).astype(np.float32)


def _group_ranges(params: SynthParams) -> dict[str, tuple[float, float]]:
    """The size groups reachable with these sizes, as ranges of sqrt(box area)."""
    lo, hi = params.min_object_size, min(params.max_object_size, 0.95 * params.image_size)
    bounds = ((lo, min(hi, SMALL_MAX_SIDE)), (max(lo, SMALL_MAX_SIDE), min(hi, LARGE_MIN_SIDE)),
              (max(lo, LARGE_MIN_SIDE), hi))
    ranges = dict(zip(SIZE_GROUPS, bounds))
    return {g: r for g, r in ranges.items() if r[0] < r[1]}


def _group_of(box: tuple[float, float, float, float]) -> str:
    """COCO size group of an xyxy box (its area is what goes into the json)."""
    return size_group(max(box[2] - box[0], 0.0) * max(box[3] - box[1], 0.0))


def _clip_polygon(verts: np.ndarray, size: int) -> np.ndarray:
    """The part of a polygon inside the square [0, size]² (Sutherland-Hodgman, one image side at a time)."""
    pts = verts
    for axis in (0, 1):
        for bound, below in ((0.0, False), (float(size), True)):
            if len(pts) == 0:
                return pts
            inside = pts[:, axis] <= bound if below else pts[:, axis] >= bound
            kept = []
            for i in range(len(pts)):
                cur, prev = pts[i], pts[i - 1]
                if inside[i] != inside[i - 1]:  # the edge crosses the side: keep the crossing point
                    kept.append(prev + (bound - prev[axis]) / (cur[axis] - prev[axis]) * (cur - prev))
                if inside[i]:
                    kept.append(cur)
            pts = np.array(kept, dtype=np.float64).reshape(-1, 2)
    return pts


def _visible_box(polys: Polygons, full_box: tuple[float, float, float, float], size: int) -> tuple[float, ...]:
    """The box of the shape's part inside the image: exact, so truncated boxes stay tight (clipping the whole
    shape's box would not be: a star's side points may lie outside while the box edge stays)."""
    if min(full_box) >= 0 and max(full_box) <= size:
        return full_box
    parts = [_clip_polygon(v, size) for v, fill in polys if fill]
    pts = np.vstack([p for p in parts if len(p)])
    (x0, y0), (x1, y1) = pts.min(axis=0), pts.max(axis=0)
    return float(x0), float(y0), float(x1), float(y1)


def _sample_shape(
    rng: np.random.Generator,
    params: SynthParams,
    placed: list[_Placed],
    side_range: tuple[float, float],
    inside: bool,
) -> tuple[ShapeClass, Polygons, tuple[float, float, float, float]]:
    """A class, its polygons in image coordinates and its (unclipped) box; sqrt(box area) log-uniform in range."""
    cls = CLASSES[int(rng.integers(len(CLASSES)))]
    polys = cls.geometry(rng)
    stretch = math.sqrt(math.exp(rng.uniform(-math.log(cls.max_aspect), math.log(cls.max_aspect))))
    theta = math.radians(rng.uniform(-params.max_rotation, params.max_rotation))
    rot = np.array([[math.cos(theta), -math.sin(theta)], [math.sin(theta), math.cos(theta)]])
    polys = [((v * [stretch, 1.0 / stretch]) @ rot.T, fill) for v, fill in polys]

    filled = np.vstack([v for v, fill in polys if fill])
    lo, hi = filled.min(axis=0), filled.max(axis=0)
    ext_w, ext_h = hi - lo
    side = math.exp(rng.uniform(math.log(side_range[0]), math.log(side_range[1])))
    limit = 0.95 * params.image_size
    scale = min(side / math.sqrt(ext_w * ext_h), limit / ext_w, limit / ext_h)
    bw, bh = ext_w * scale, ext_h * scale

    size = params.image_size
    if inside:
        cx, cy = rng.uniform(bw / 2, size - bw / 2), rng.uniform(bh / 2, size - bh / 2)
    elif placed and rng.uniform() < 0.35:  # next to an earlier object, so overlaps are common
        other = placed[int(rng.integers(len(placed)))].box
        ocx, ocy = (other[0] + other[2]) / 2, (other[1] + other[3]) / 2
        cx = ocx + rng.uniform(-0.8, 0.8) * ((other[2] - other[0]) + bw) / 2
        cy = ocy + rng.uniform(-0.8, 0.8) * ((other[3] - other[1]) + bh) / 2
    else:
        cx, cy = rng.uniform(0, size), rng.uniform(0, size)
    offset = np.array([cx, cy]) - (lo + hi) / 2 * scale
    polys = [(v * scale + offset, fill) for v, fill in polys]
    box = (cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2)
    return cls, polys, box


def _pick_colour(rng: np.random.Generator, under: np.ndarray, min_distance: float = 90.0) -> np.ndarray:
    """A random colour that stands out from ``under`` (the mean colour it covers); the best of a few tries."""
    best, best_d = None, -1.0
    for _ in range(12):
        colour = rng.uniform(0, 255, 3)
        d = float(np.linalg.norm(colour - under))
        if d > best_d:
            best, best_d = colour, d
        if d >= min_distance:
            break
    return best  # type: ignore[return-value]


def _paint(rng: np.random.Generator, canvas: Image.Image, sl: Region, alpha: np.ndarray) -> None:
    """Composite one object onto ``canvas`` in place, with coverage ``alpha`` (h, w) at ``sl``.

    The colour is random but stands out from what it covers, so the shape, not the colour, tells the class.
    """
    rows, cols = sl
    h, w = alpha.shape
    box = (cols.start, rows.start, cols.stop, rows.stop)
    patch = np.asarray(canvas.crop(box), dtype=np.float32)
    under = (alpha.reshape(-1) @ patch.reshape(-1, 3)) / max(float(alpha.sum()), 1e-6)
    colour = _pick_colour(rng, under)
    # A linear shading keeps objects from being flat colour patches (flat patches would be a too-easy cue).
    phi = rng.uniform(0, 2 * np.pi)
    ramp = np.cos(phi) * np.linspace(-1, 1, w)[None, :] + np.sin(phi) * np.linspace(-1, 1, h)[:, None]
    fill = colour[None, None, :] + rng.uniform(0, 25) * ramp[..., None]
    fill_image = Image.fromarray(np.clip(np.rint(fill), 0, 255).astype(np.uint8))
    mask = Image.fromarray(np.clip(np.rint(alpha * 255), 0, 255).astype(np.uint8))
    canvas.paste(fill_image, box, mask)


def render_synth_image(params: SynthParams, split: str, index: int, pending: list[str] | None = None) -> SynthImage:
    """Draw image ``index`` (1-based) of ``split``; the same arguments always give the same pixels and objects.

    ``pending`` lists size groups the split still lacks: the next objects are forced into them (and wholly inside the
    image, so clipping cannot move them to another group). It is updated in place as groups are filled.
    """
    seq = np.random.SeedSequence([params.seed, zlib.crc32(split.encode()), index])
    rng = np.random.default_rng(seq)
    size = params.image_size
    canvas = _background(rng, size, params.clutter)
    ranges = _group_ranges(params)
    full_range = (params.min_object_size, min(params.max_object_size, 0.95 * size))
    placed: list[_Placed] = []

    for _ in range(int(rng.integers(params.min_objects, params.max_objects + 1))):
        forced = pending[0] if pending else None
        shape = _fit_shape(rng, params, placed, ranges[forced] if forced else full_range, forced)
        if shape is None:
            continue
        _paint(rng, canvas, shape.region, shape.alpha)
        _cover(placed, shape.overlaps, shape.alpha)
        tight = _visible_box(shape.polys, shape.box, size)
        placed.append(_Placed(shape.cls.cat_id, tight, shape.box, shape.region, shape.alpha, shape.alpha.copy(),
                              shape.full_area, float(shape.alpha.sum())))
        if pending is not None and _group_of(tight) in pending:
            pending.remove(_group_of(tight))

    pixels = _add_noise(rng, np.asarray(canvas), params.noise)
    objects = [
        SynthObject(p.category_id, p.box, p.full_box, p.region, p.alpha, 1.0 - p.visible_area / p.full_area)
        for p in placed
    ]
    return SynthImage(pixels, objects)


class _Shape(NamedTuple):
    """A shape that fits the image (`_fit_shape`), not yet painted."""

    cls: ShapeClass
    polys: Polygons
    box: tuple[float, float, float, float]  # xyxy of the whole shape, unclipped
    region: Region
    alpha: np.ndarray  # (h, w) coverage over ``region``
    full_area: float  # area of the whole shape, including parts outside the image
    overlaps: list[tuple[Region, Region, float] | None]  # `_Placed.hidden_by` of each placed object


def _fit_shape(rng: np.random.Generator, params: SynthParams, placed: list[_Placed],
               side_range: tuple[float, float], forced: str | None, attempts: int = 20) -> _Shape | None:
    """Sample shapes until one may be drawn, at most ``attempts`` times (None: give up on this object).

    A shape may be drawn when it lands in the ``forced`` size group (if any), enough of it shows inside the image,
    and it leaves every ``placed`` object enough visible area: objects hidden more than ``max_occlusion`` are never
    drawn, so every drawn object is annotated.
    """
    size = params.image_size
    min_visible = 1.0 - params.max_occlusion
    for _attempt in range(attempts):
        cls, polys, box = _sample_shape(rng, params, placed, side_range, bool(forced))
        raster = _rasterize(polys, size)
        if raster is None:
            continue
        sl, alpha = raster
        if forced is not None and _group_of(box) != forced:
            continue  # capped by the image size: the box fell out of the group it was drawn for
        full_area = sum(_polygon_area(v) * (1 if fill else -1) for v, fill in polys)
        if float(alpha.sum()) < min_visible * full_area:
            continue  # truncated too much by the image border
        overlaps = [p.hidden_by(sl, alpha) for p in placed]
        if any(o is not None and p.visible_area - o[2] < min_visible * p.full_area
               for o, p in zip(overlaps, placed)):
            continue
        return _Shape(cls, polys, box, sl, alpha, full_area, overlaps)
    return None


def _cover(placed: list[_Placed], overlaps: list[tuple[Region, Region, float] | None], alpha: np.ndarray) -> None:
    """Take what a newly painted object (coverage ``alpha``) hides from the visible coverage and area of each earlier
    object, so their occlusion is known when the image is done."""
    for p, o in zip(placed, overlaps):
        if o is not None:
            mine, theirs, hidden = o
            p.visible[mine] *= 1.0 - alpha[theirs]
            p.visible_area -= hidden


def _add_noise(rng: np.random.Generator, pixels: np.ndarray, noise: float) -> np.ndarray:
    """``pixels`` (H, W, 3) uint8 plus uniform integer noise with standard deviation ``noise`` (a copy either way):
    a fraction of the cost of Gaussian noise at this size."""
    k = int(round(noise * math.sqrt(3)))
    if k > 0:
        noisy = pixels.astype(np.int16) + rng.integers(-k, k + 1, pixels.shape, dtype=np.int16)
        return np.clip(noisy, 0, 255).astype(np.uint8)
    return pixels.copy()


# ---------------------------------------------------------------------------------------------------------- files
def _encode(pixels: np.ndarray, image_format: str) -> bytes:
    buf = io.BytesIO()
    if image_format == "png":
        Image.fromarray(pixels).save(buf, format="PNG", compress_level=6)
    else:
        Image.fromarray(pixels).save(buf, format="JPEG", quality=92, subsampling=0)
    return buf.getvalue()


def _annotation(ann_id: int, image_id: int, obj: SynthObject, size: int) -> dict[str, Any]:
    x0, y0, x1, y1 = (min(max(v, 0.0), float(size)) for v in obj.box)  # clamps rounding noise only
    x, y, w, h = round(x0, 2), round(y0, 2), round(x1 - x0, 2), round(y1 - y0, 2)
    truncated = any(v < 0 or v > size for v in obj.full_box)
    return {
        "id": ann_id,
        "image_id": image_id,
        "category_id": obj.category_id,
        "bbox": [x, y, w, h],
        "area": round(w * h, 2),
        "iscrowd": 0,
        "occlusion": round(obj.occlusion, 3),
        "truncated": int(truncated),
    }


def _params_dict(params: SynthParams) -> dict[str, Any]:
    return dataclasses.asdict(params)


def _read_split(ann_file: Path) -> dict | None:
    """A split's annotation json, None when it is absent or unreadable."""
    try:
        data = json.loads(ann_file.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _recorded_params(record: Any, key: str) -> dict | None:
    """The parameters a record of this generator holds under ``key`` (a json's ``info``, the marker itself), None
    when it is not one of this generator's records."""
    if not isinstance(record, dict):
        return None
    holder = record.get(key) if key else record
    if not isinstance(holder, dict) or holder.get("contributor") != CONTRIBUTOR:
        return None
    params = holder.get("params")
    return params if isinstance(params, dict) else None


_COUNTS = {"train": "num_train", "val": "num_val", "test": "num_test"}  # the parameter giving each split's size


def _split_identity(params: dict, split: str) -> dict:
    """What determines one split's files: every parameter but the other splits' sizes (each split is drawn from its
    own seeds, so adding or dropping the test split leaves train and val as they are)."""
    return {k: v for k, v in params.items() if k not in _COUNTS.values() or k == _COUNTS[split]}


class _Survey(NamedTuple):
    """What an output folder holds, as this generator sees it."""

    foreign: list[str]  # entries it did not write (paths relative to the folder), sorted
    marker: dict | None  # the parameters ``synth.json`` holds: the last run's, finished or not
    records: dict[str, dict]  # split -> this generator's json of that split
    images: dict[str, list[Path]]  # split -> the ``NNNNNN.ext`` files in its folder


def _survey(out: Path) -> _Survey:
    """Sort the folder's entries into the generator's own (marker, split jsons, ``NNNNNN.ext`` images, temporary
    files of killed writes) and everything else. Images that neither the marker nor their split's json vouches for
    count as foreign: a folder of another dataset may name its files the same way."""
    foreign: list[str] = []
    records: dict[str, dict] = {}
    images: dict[str, list[Path]] = {}
    marker = None
    try:
        entries = sorted(os.listdir(out))
    except (FileNotFoundError, NotADirectoryError):
        entries = []
    for entry in entries:
        path = out / entry
        if entry == MARKER and path.is_file():
            marker = _recorded_params(_read_split(path), "")
            if marker is None:
                foreign.append(entry)
        elif entry == "annotations" and path.is_dir():
            for name in sorted(os.listdir(path)):
                match, file = _JSON_RE.match(name), path / name
                record = _read_split(file) if match and file.is_file() else None
                if _recorded_params(record, "info") is not None:
                    records[match["split"]] = record  # type: ignore[index,assignment]
                elif not (TEMP_FILE.match(name) and file.is_file()):
                    foreign.append(f"annotations/{name}")
        elif entry in SPLITS and path.is_dir():
            for name in sorted(os.listdir(path)):
                if _FILE_RE.match(name) and (path / name).is_file():
                    images.setdefault(entry, []).append(path / name)
                elif not (TEMP_FILE.match(name) and (path / name).is_file()):
                    foreign.append(f"{entry}/{name}")
        elif not (TEMP_FILE.match(entry) and path.is_file()):
            foreign.append(entry)
    if marker is None:
        foreign += [str(files[0].relative_to(out)) for split, files in images.items() if split not in records]
    return _Survey(sorted(foreign), marker, records, images)


def _owned(out: Path, survey: _Survey, splits: Sequence[str]) -> list[Path]:
    """The generator's files of ``splits``: the jsons first, so a stopped deletion leaves no json that vouches for
    images it lost."""
    jsons = [split_paths(out, s)[1] for s in splits if s in survey.records]
    return jsons + [p for s in splits for p in survey.images.get(s, [])]


def _split_complete(split: str, survey: _Survey, wanted: dict, num_images: int) -> bool:
    """The split's json records these parameters and every image it lists is there."""
    data = survey.records.get(split)
    if data is None or differences(_split_identity(_recorded_params(data, "info") or {}, split), wanted):
        return False
    try:
        present = {p.name for p in survey.images.get(split, [])}
        names = [img["file_name"] for img in data["images"]]
    except (KeyError, TypeError):
        return False
    return len(names) == num_images and all(n in present for n in names)


def _claim_dataset_folder(out: Path, params: SynthParams, overwrite: bool) -> list[str]:
    """Make ``out`` this dataset's folder; returns the splits to write (none: the whole dataset is there).

    Refused with `FolderTaken` unless ``overwrite``: anything this generator did not write, or a split of other
    parameters (its json's, else, for a run killed before the json, the marker's). Splits the request does not
    include (a test split) are left as they are. Otherwise the folder is the generator's: leftovers of killed writes
    go, the marker records the new parameters before anything is deleted or drawn, and the splits to write lose
    their old files, jsons first, so a run killed at any point is finished by the same call. ``overwrite`` deletes
    all of the generator's files first, images named like its own included, and writes every split again.
    """
    survey = _survey(out)
    if survey.foreign and not overwrite:
        more = f" and {len(survey.foreign) - 1} more" if len(survey.foreign) > 1 else ""
        raise FolderTaken(out, f"{out} holds files the synthetic dataset did not write ({survey.foreign[0]}{more})")
    params_dict = _params_dict(params)
    wanted = {split: _split_identity(params_dict, split) for split in params.splits}
    for split in params.splits:
        stored = _recorded_params(survey.records[split], "info") if split in survey.records else (
            survey.marker if survey.images.get(split) else None)
        diff = differences(_split_identity(stored, split), wanted[split]) if stored is not None else []
        if diff and not overwrite:
            more = f" and {len(diff) - 1} more" if len(diff) > 1 else ""
            raise FolderTaken(out, f"{out} holds a synthetic dataset of other parameters (the {split} split's "
                                   f"{diff[0]}{more})")
    for folder in (out, out / "annotations", *(out / s for s in SPLITS)):
        remove_temp_files(folder)
    todo = [s for s in params.splits
            if overwrite or not _split_complete(s, survey, wanted[s], params.num_images(s))]
    if not todo:
        return []
    try:
        atomic_write_bytes(out / MARKER, json.dumps({"contributor": CONTRIBUTOR, "params": params_dict},
                                                    indent=2).encode())
    except OSError as exc:
        raise DHError(f"cannot write {out / MARKER} ({exc.strerror}); choose another output folder") from None
    remove_paths(_owned(out, survey, SPLITS if overwrite else todo))
    return todo


class SynthResult(NamedTuple):
    root: Path
    ann_files: dict[str, Path]  # split -> instances json
    reused: bool  # True when an existing complete dataset with the same parameters was kept


def make_synth_dataset(
    out: str | Path,
    num_train: int = 600,
    num_val: int = 100,
    image_size: int = 320,
    seed: int = 0,
    overwrite: bool = False,
    num_test: int = 0,
    **kwargs: Any,
) -> SynthResult:
    """Write the synthetic dataset to ``out`` (layout in the module docstring), or reuse it if already there.

    Only the splits that are not already there whole are written. A folder holding anything else, or splits of other
    parameters, is refused with `FolderTaken` unless ``overwrite`` (which also regenerates a complete dataset of the
    same parameters); it never deletes a file the generator did not write.

    ``kwargs`` are the other `SynthParams` fields (``min_objects``, ``max_objects``, ``min_object_size``,
    ``max_object_size``, ``max_occlusion``, ``max_rotation``, ``noise``, ``clutter``, ``image_format``). The defaults
    write 700 images (~30 MB) with about 2,100 training boxes in all three COCO size groups, in about 10 ms per image
    on one CPU core.
    """
    try:
        params = SynthParams(num_train=num_train, num_val=num_val, num_test=num_test, image_size=image_size, seed=seed,
                             **kwargs)
    except TypeError as exc:
        raise DHError(f"unknown synthetic-dataset option: {exc}") from None
    params.validate()
    out = Path(out)
    ann_files = {s: split_paths(out, s)[1] for s in params.splits}
    todo = _claim_dataset_folder(out, params, overwrite)
    if not todo:
        log.info("reusing the synthetic dataset in %s (same parameters)", out)
        return SynthResult(out, ann_files, True)
    try:
        (out / "annotations").mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DHError(f"cannot create {out}/annotations ({exc.strerror}); choose another output folder") from None
    for split in todo:
        _write_split(out, split, params)
    return SynthResult(out, ann_files, False)


def _write_split(out: Path, split: str, params: SynthParams) -> None:
    image_dir = out / split
    image_dir.mkdir(parents=True, exist_ok=True)
    size, ext = params.image_size, params.image_format
    images, annotations = [], []
    pending = list(_group_ranges(params))
    for index in range(1, params.num_images(split) + 1):
        synth = render_synth_image(params, split, index, pending)
        name = f"{index:06d}.{ext}"
        atomic_write_bytes(image_dir / name, _encode(synth.pixels, ext))
        image_id = params.image_id(split, index)
        images.append({"id": image_id, "file_name": name, "width": size, "height": size})
        for obj in synth.objects:
            annotations.append(_annotation(len(annotations) + 1, image_id, obj, size))
    if pending and params.num_images(split):
        log.warning("synthetic split '%s' has no %s objects; use more images", split, " or ".join(pending))

    data = {
        "info": {
            "description": "dhanalysis synthetic shapes",
            "version": str(SYNTH_VERSION),
            "year": 2020,
            "contributor": CONTRIBUTOR,
            "date_created": "",
            "params": _params_dict(params),
        },
        "licenses": [],
        "images": images,
        "annotations": annotations,
        "categories": [{"id": c.cat_id, "name": c.name, "supercategory": "shape"} for c in CLASSES],
    }
    atomic_write_bytes(split_paths(out, split)[1], json.dumps(data).encode())
