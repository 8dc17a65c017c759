"""Small but internally consistent fake result folders, for the figure and notebook tests.

`write_fake_results(root)` writes what the analysis and evaluation commands would write for six synthetic models
(six shape classes) and the four ablation sweeps. The sliding-window sums come from random raw (IoU, score,
regressed IoU) values, so means, standard deviations and PCCs computed from them are real statistics; ``pcc.csv``
and ``results.csv`` are written by the project's own writers (`pcc_table`, `write_index`). AP values of the sweeps
are the paper's (Tables 1-3) so the tests can look for them. With ``detections``, ``root/detections/`` holds what a
study writes there, made by the real `compute_detections` and `compute_compare` on a small generated case.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

CATEGORIES = ("ellipse", "rectangle", "triangle", "cross", "ring", "star")
SIZES = ("small", "medium", "large")
NUM_BINS = 20

# folder -> (variant, heads with their tasks (has cls, has reg), write config.json)
MODELS = {
    "synth-single-fc": ("single-fc", {"fc": (True, True)}, True),
    "synth-single-conv": ("single-conv", {"conv": (True, True)}, True),
    "synth-double-fc": ("double-fc", {"fc": (True, True)}, True),
    "double-conv": ("double-conv", {"conv": (True, True)}, False),  # variant read from the folder name
    "synth-double-head": ("double-head", {"fc": (True, False), "conv": (False, True)}, True),
    "synth-double-head-ext": ("double-head-ext", {"fc": (True, True), "conv": (True, True)}, True),
}
# (variant, head) -> (score steepness, score centre, score amplitude, score noise, regression gain)
BEHAVIOUR = {
    "fc": (10.0, 0.55, 0.90, 0.12, 0.35),
    "conv": (6.0, 0.50, 0.75, 0.22, 0.55),
    ("double-fc", "fc"): (10.5, 0.55, 0.93, 0.12, 0.40),
    ("double-conv", "conv"): (6.0, 0.55, 0.60, 0.22, 0.55),
    ("double-head-ext", "conv"): (8.0, 0.50, 0.85, 0.16, 0.60),
}
MODES = {
    "single-fc": ("fc",), "single-conv": ("conv",), "double-fc": ("fc",), "double-conv": ("conv",),
    "double-head": ("fc-cls+conv-reg",),
    "double-head-ext": ("conv", "fc", "fc-cls+conv-reg", "max", "average", "complementary"),
}
# the paper's numbers (fractions): Table 1 AP by run, Table 2 (AP, AP50, AP75) by run, Table 3 by mode
TABLE1_AP = {"single-fc-w1": 36.8, "single-conv-w1": 35.9, "double-fc-w1": 37.3, "double-conv-w1": 33.8,
             "double-head-reverse-w1": 32.6, "double-head-w1": 38.8, "double-fc-w2": 38.1, "double-conv-w2": 34.3,
             "double-head-reverse-w2": 32.0, "double-head-w2": 39.5}
TABLE2_AP = {"K0": (36.8, 58.7, 40.4), "K1": (36.7, 59.3, 39.6), "K2": (38.7, 59.2, 41.9), "K3": (39.2, 59.4, 42.5),
             "K4": (39.3, 59.2, 42.9), "K5": (39.5, 59.6, 43.2), "K6": (39.5, 59.4, 43.3), "K7": (39.7, 59.8, 43.2),
             "K3-nl": (38.8, 59.2, 42.4), "K5-nl": (39.8, 59.6, 43.6), "K7-nl": (40.0, 59.9, 43.7)}
TABLE3_AP = {"fc-cls+conv-reg": (39.7, 59.5, 43.4), "max": (39.9, 59.7, 43.7), "average": (40.1, 59.8, 44.1),
             "complementary": (40.3, 60.3, 44.2)}


def _behaviour(variant: str, head: str) -> tuple[float, float, float, float, float]:
    return BEHAVIOUR.get((variant, head), BEHAVIOUR[head])


def fake_stats(model: str, variant: str, heads: dict[str, tuple[bool, bool]], rng: np.random.Generator,
               windows: tuple[int, int] = (12, 30)) -> pd.DataFrame:
    """The statistics table (stats.STATS_COLUMNS) of random windows: sums of real draws, per cell."""
    rows = []
    for head, (has_cls, has_reg) in heads.items():
        k, c, amp, noise, gain = _behaviour(variant, head)
        for ci, category in enumerate(CATEGORIES):
            quality = 1.0 - 0.08 * ci  # later classes are harder
            for si, size in enumerate(SIZES):
                scale = (0.75 + 0.12 * si) * quality
                for b in range(NUM_BINS):
                    n = int(rng.integers(*windows))
                    x = rng.uniform(b / NUM_BINS, (b + 1) / NUM_BINS, n)
                    s = np.clip(amp * scale / (1 + np.exp(-k * (x - c))) + rng.normal(0, noise, n), 0, 1)
                    lift = gain * scale * (1 - x) / (1 + np.exp(-10 * (x - 0.3)))
                    r = np.clip(x + lift + rng.normal(0, 0.05 + 0.05 * (1 - x), n), 0, 1)
                    s_, r_ = (s if has_cls else 0 * s), (r if has_reg else 0 * r)
                    rows.append({
                        "model": model, "head": head, "category_id": ci + 1, "category": category, "size": size,
                        "bin": b, "n": n, "n_s": n if has_cls else 0, "n_r": n if has_reg else 0,
                        "sum_x": x.sum(), "sum_x2": (x * x).sum(),
                        "sum_s": s_.sum(), "sum_s2": (s_ * s_).sum(), "sum_xs": (x * s_).sum(),
                        "sum_r": r_.sum(), "sum_r2": (r_ * r_).sum(), "sum_xr": (x * r_).sum(),
                    })
    return pd.DataFrame(rows)


def fake_pcc_stats(model: str, variant: str, heads: dict[str, tuple[bool, bool]],
                   rng: np.random.Generator) -> pd.DataFrame:
    """Streaming PCC sums (analysis.pcc.PCC_STATS_COLUMNS) of random RPN proposals and detections."""
    rows = []
    for head, (has_cls, _) in heads.items():
        if not has_cls:
            continue
        k, c, amp, noise, _ = _behaviour(variant, head)
        for which, spread in (("rpn", 2 * noise), ("detections", noise)):
            for size in SIZES:
                n = 400
                x = rng.beta(2, 2, n) if which == "rpn" else rng.beta(5, 2, n)
                s = np.clip(amp / (1 + np.exp(-k * (x - c))) + rng.normal(0, spread, n), 0, 1)
                b = np.minimum((x * 20).astype(int), 19)
                for k in np.unique(b):
                    xb, sb = x[b == k], s[b == k]
                    rows.append({"model": model, "head": head, "proposal_set": which,
                                 "mode": head if which == "detections" else "", "category_id": 1,
                                 "category": CATEGORIES[0], "size": size, "bin": int(k), "n": len(xb),
                                 "sum_x": xb.sum(), "sum_x2": (xb * xb).sum(), "sum_s": sb.sum(),
                                 "sum_s2": (sb * sb).sum(), "sum_xs": (xb * sb).sum()})
    return pd.DataFrame(rows)


def fake_spatial(heads: Sequence[str], rng: np.random.Generator, size: int = 7) -> dict[str, np.ndarray]:
    """Cell-by-cell cosine matrices (S², S²): broad correlation for the conv-head, narrow for the fc-head."""
    yy, xx = np.divmod(np.arange(size * size), size)
    d2 = (yy[:, None] - yy[None, :]) ** 2 + (xx[:, None] - xx[None, :]) ** 2

    def kernel(width: float, floor: float) -> np.ndarray:
        noise = rng.normal(0, 0.02, d2.shape)
        m = floor + (1 - floor) * np.exp(-d2 / (2 * width**2)) + (noise + noise.T) / 2
        np.fill_diagonal(m, 1.0)
        return np.clip(m, -1, 1)

    maps = {}
    if "conv" in heads:
        maps["conv_output"] = kernel(2.5, 0.45)
    if "fc" in heads:
        maps["fc_output"] = kernel(0.7, 0.05)
        maps["fc_weight"] = kernel(0.6, 0.0)
    return maps


def _eval_rows(model: str, modes: Sequence[str], base: float, rng: np.random.Generator) -> list[dict]:
    rows = []
    for i, mode in enumerate(modes):
        ap = base + 0.004 * i + rng.normal(0, 0.002)
        rows.append({"model": model, "mode": mode, "AP": ap, "AP50": ap + 0.2, "AP75": ap + 0.03,
                     "APs": ap - 0.15, "APm": ap + 0.03, "APl": ap + 0.13})
    return rows


def write_model(folder: Path, variant: str, heads: dict[str, tuple[bool, bool]], rng: np.random.Generator,
                config: bool = True, parts: Sequence[str] = ("stats", "pcc", "spatial", "eval")) -> None:
    """One model's result folder: the files of sliding-window, pcc, spatial-corr and eval."""
    from dhanalysis.probes.pcc import pcc_table

    folder.mkdir(parents=True, exist_ok=True)
    model = folder.name
    if config:
        (folder / "config.json").write_text(json.dumps({"name": model, "model": {"variant": variant, "mode": ""}}))
    stats = fake_stats(model, variant, heads, rng)
    if "stats" in parts:
        stats.to_csv(folder / "sliding_window_stats.csv", index=False)
        (folder / "summary.json").write_text(json.dumps({"model": model, "heads": list(heads),
                                                         "proposals": int(stats["n"].sum())}))
    per_class = pd.DataFrame([{"model": model, "mode": mode, "category_id": ci + 1, "category": name,
                               "AP": 0.55 - 0.06 * ci + rng.normal(0, 0.01)}
                              for mode in MODES[variant] for ci, name in enumerate(CATEGORIES)])
    if "eval" in parts:
        pd.DataFrame(_eval_rows(model, MODES[variant], 0.30 + 0.01 * len(variant) / 10, rng)).to_csv(
            folder / "eval.csv", index=False)
        per_class.to_csv(folder / "per_class_ap.csv", index=False)
    if "pcc" in parts:
        pcc_table(stats, fake_pcc_stats(model, variant, heads, rng), replicates=0).to_csv(folder / "pcc.csv",
                                                                                          index=False)
    if "spatial" in parts:
        np.savez(folder / "spatial_corr.npz", **fake_spatial(list(heads), rng))


def write_sweeps(root: Path, rng: np.random.Generator) -> None:
    """``root/<grid>/results.csv`` of the four ablation grids, through the sweep's own index writer."""
    from dhanalysis.config import LossConfig
    from dhanalysis.engine.sweep import grid_runs, write_index
    from dhanalysis.model.variants import applicable_modes

    for grid in ("table1", "table2", "fig8", "table3"):
        runs = grid_runs(grid)
        out = root / grid
        for run in runs:
            folder = out / run.name
            folder.mkdir(parents=True, exist_ok=True)
            if grid == "table1":
                rows = [{"mode": "-", "AP": TABLE1_AP[run.name] / 100}]
            elif grid == "table2":
                ap, ap50, ap75 = TABLE2_AP[run.name]
                rows = [{"mode": "fc" if run.name == "K0" else "fc-cls+conv-reg", "AP": ap / 100,
                         "AP50": ap50 / 100, "AP75": ap75 / 100}]
            elif grid == "table3":
                rows = [{"mode": m, "AP": v[0] / 100, "AP50": v[1] / 100, "AP75": v[2] / 100}
                        for m, v in TABLE3_AP.items()]
            else:
                lf, lc = run.meta["lambda_fc"], run.meta["lambda_conv"]
                loss = LossConfig(lambda_fc=lf, lambda_conv=lc)
                bonus = {"conv": -0.012, "fc": -0.009, "fc-cls+conv-reg": 0.0, "conv-cls+fc-reg": -0.01, "max": 0.002,
                         "average": 0.003, "complementary": 0.005}
                peak = 0.398 - 0.02 * ((lf - 0.7) ** 2 + (lc - 0.8) ** 2)
                rows = [{"mode": m, "AP": peak + bonus[m] + rng.normal(0, 0.0005)}
                        for m in applicable_modes("double-head-ext", loss)]
            table = pd.DataFrame([{"model": run.name, **r} for r in rows])
            for m in ("AP50", "AP75", "APs", "APm", "APl"):
                if m not in table:
                    table[m] = table["AP"] + {"AP50": 0.2, "AP75": 0.04, "APs": -0.16, "APm": 0.03, "APl": 0.14}[m]
            table.to_csv(folder / "eval.csv", index=False)
        write_index(runs, grid, out)
    # Table 1's single mode per run is the variant's own; write the real mode name for readability
    t1 = pd.read_csv(root / "table1" / "results.csv")
    own = {"single-fc": "fc", "single-conv": "conv", "double-fc": "fc", "double-conv": "conv",
           "double-head-reverse": "conv-cls+fc-reg", "double-head": "fc-cls+conv-reg"}
    t1["mode"] = t1["variant"].map(own)
    t1.to_csv(root / "table1" / "results.csv", index=False)


def write_fake_results(root: str | Path, seed: int = 0, models: Sequence[str] | None = None,
                       sweeps: bool = True, architecture: bool = True,
                       parts: Sequence[str] = ("stats", "pcc", "spatial", "eval"), detections: bool = False) -> Path:
    """Fake results under ``root``: one folder per model (``models``: folder names of `MODELS`, default all), the
    sweeps under ``root/sweeps``, with ``architecture`` a small conv-head's ``architecture.csv`` in the
    Double-Head-Ext folder, and with ``detections`` the study's ``detections/`` folder (`write_fake_detections`).
    Returns ``root``."""
    root = Path(root)
    rng = np.random.default_rng(seed)
    for name in models or list(MODELS):
        variant, heads, config = MODELS[name]
        write_model(root / name, variant, heads, rng, config, parts)
    if sweeps:
        write_sweeps(root / "sweeps", rng)
    if architecture:
        from dhanalysis.probes.architecture import write_architecture
        from dhanalysis.model.heads import ConvHead

        head = ConvHead(in_channels=16, dim=32, bottleneck=8, num_blocks=3, non_local=True, non_local_dim=16)
        write_architecture(head, root / "synth-double-head-ext")
    if detections:
        write_fake_detections(root / "detections", seed)
    return root


# (box jitter, score = base + slope · IoU + noise of this spread): the fc-like detector scores by fit, the conv-like
# one places its boxes better but scores them almost regardless of fit
DETECTORS = {"single-fc": (0.16, 0.15, 0.80, 0.06), "single-conv": (0.08, 0.45, 0.30, 0.18)}


def _iou_xywh(a: np.ndarray, b: np.ndarray) -> float:
    w = max(0.0, min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1]))
    return float(w * h / (a[2] * a[3] + b[2] * b[3] - w * h))


def fake_detection_case(rng: np.random.Generator, images: int = 24) -> tuple[dict, dict[str, list[dict]]]:
    """A COCO ground truth of the six shape classes on 320-pixel images (small, medium and large objects) and, per
    `DETECTORS` entry, a results file on it: one or two boxes per object (10% missed, 10% of another class) and one
    low-scored background box per image."""
    cats = [{"id": k + 1, "name": name, "supercategory": "shape"} for k, name in enumerate(CATEGORIES)]
    imgs, anns = [], []
    for i in range(images):
        imgs.append({"id": i + 1, "width": 320, "height": 320, "file_name": f"{i + 1:06d}.jpg"})
        for _ in range(int(rng.integers(1, 5))):
            s = float(rng.choice([20, 60, 140]) * rng.uniform(0.8, 1.2))
            x, y = rng.uniform(0, 320 - s, 2)
            anns.append({"id": len(anns) + 1, "image_id": i + 1, "category_id": int(rng.integers(1, 7)),
                         "bbox": [float(x), float(y), s, s], "area": s * s, "iscrowd": 0})
    results = {}
    for name, (shift, base, slope, noise) in DETECTORS.items():
        dets = []
        for a in anns:
            box = np.array(a["bbox"])
            for _ in range(int(rng.integers(1, 3)) if rng.random() >= 0.1 else 0):
                x, y = box[:2] + rng.normal(0, shift, 2) * box[2:]
                w, h = box[2:] * np.exp(rng.normal(0, shift, 2))
                iou = _iou_xywh(box, np.array([x, y, w, h]))
                cat = a["category_id"] if rng.random() >= 0.1 else int(rng.integers(1, 7))
                dets.append({"image_id": a["image_id"], "category_id": cat, "bbox": [float(v) for v in (x, y, w, h)],
                             "score": float(np.clip(base + slope * iou + rng.normal(0, noise), 0.01, 1.0))})
        for im in imgs:
            x, y = rng.uniform(0, 260, 2)
            dets.append({"image_id": im["id"], "category_id": int(rng.integers(1, 7)),
                         "bbox": [float(x), float(y), 40.0, 40.0], "score": float(rng.uniform(0.01, 0.3))})
        results[name] = dets
    return {"images": imgs, "annotations": anns, "categories": cats}, results


def write_fake_detections(folder: Path, seed: int = 0, replicates: int = 40) -> Path:
    """What a study writes into a replicate's ``detections/``: `compute_detections` of each `DETECTORS` entry in
    ``<name>/`` and `compute_compare` of the two in ``<a>-vs-<b>/``, on `fake_detection_case` (its input files are
    temporary, as a study's are not part of what ships). Returns ``folder``."""
    import tempfile

    from dhanalysis.metrics.compare import compute_compare
    from dhanalysis.metrics.detections import compute_detections

    gt, results = fake_detection_case(np.random.default_rng(seed))
    with tempfile.TemporaryDirectory() as tmp:
        gt_path = Path(tmp) / "instances_test.json"
        gt_path.write_text(json.dumps(gt))
        paths = {name: Path(tmp) / f"{name}.json" for name in results}
        for name, dets in results.items():
            paths[name].write_text(json.dumps(dets))
            compute_detections(gt_path, paths[name], folder / name, replicates=replicates, stage="after_nms",
                               progress=lambda _: None)
        a, b = DETECTORS
        compute_compare(gt_path, [paths[a], paths[b]], folder / f"{a}-vs-{b}", names=[a, b],
                        num_replicates=replicates, progress=lambda _: None)
    return folder
