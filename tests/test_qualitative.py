"""Figs. A.4-A.5: the images where the fc-head alone finds objects the conv-head alone misses, and where the fc-head
alone keeps duplicates the conv-head does not, are picked and drawn (a stub model with known detections)."""

from __future__ import annotations

import pandas as pd
import torch

from dhanalysis.probes.qualitative import disagreements, write_disagreements
from dhanalysis.data.coco import CocoDataset
from dhanalysis.data.synth import make_synth_dataset
from dhanalysis.figures.render import Results, figure


class StubModel:
    """Detections per (image size → image index) and mode, chosen to make each kind of disagreement."""

    def __init__(self, dataset: CocoDataset):
        self.by_shape = {}
        for i in range(len(dataset)):
            image, target = dataset[i]
            self.by_shape[tuple(image.shape)] = (i, target)

    def eval(self):
        return self

    def predict_modes(self, images, modes):
        index, target = self.by_shape[tuple(images[0].shape)]
        gt, labels = target["boxes"], target["labels"]
        first, shifted = gt[:1], gt[:1] + torch.tensor([3.0, 3.0, 3.0, 3.0])

        def dets(boxes, lab, scores):
            return [{"boxes": boxes, "labels": lab, "scores": torch.tensor(scores)}]

        both = dets(first, labels[:1], [0.9])
        if index == 0:  # the fc-head finds every object, the conv-head only the first
            out = {"fc": dets(gt, labels, [0.9] * len(gt)), "conv": both, "complementary": dets(gt, labels,
                                                                                             [0.95] * len(gt))}
        elif index == 1:  # the fc-head keeps a shifted duplicate of the first object
            out = {"fc": dets(torch.cat([first, shifted]), labels[:1].repeat(2), [0.9, 0.8]), "conv": both,
                   "complementary": both}
        else:
            out = {m: both for m in modes}
        return {m: out[m] for m in modes}


def test_disagreements_are_picked_and_drawn(tmp_path):
    make_synth_dataset(tmp_path / "data", num_train=1, num_val=4, image_size=96, seed=7)
    dataset = CocoDataset(tmp_path / "data", "val")
    # the stub tells images apart by their shape; the synthetic set has one size, so each image gets its own padding
    dataset_images = [dataset[i] for i in range(len(dataset))]
    n_gt = len(dataset_images[0][1]["boxes"])
    assert n_gt >= 2  # seed 7 puts several objects in the first image: the fc-head finds more than the conv-head

    class Padded:
        def __init__(self, base):
            self.base, self.ids, self.category_names = base, base.ids, base.category_names

        def __len__(self):
            return len(self.base)

        def __getitem__(self, i):
            image, target = self.base[i]
            return torch.nn.functional.pad(image, (0, i, 0, 0)), target

        def image_path(self, i):
            return self.base.image_path(i)

    data = Padded(dataset)
    dets, images = disagreements(StubModel(data), data, per_case=(3, 2))
    a4 = images[images["case"] == "A.4"]
    a5 = images[images["case"] == "A.5"]
    assert list(a4["image_id"]) == [int(dataset.ids[0])] and a4["fc_only_found"].item() == n_gt - 1
    assert list(a5["image_id"]) == [int(dataset.ids[1])] and a5["fc_extra_duplicates"].item() == 1
    dup = dets[(dets["image_id"] == int(dataset.ids[1])) & (dets["mode"] == "fc")]
    assert sorted(dup["status"]) == ["duplicate", "found"]
    gt_rows = dets[(dets["mode"] == "ground-truth") & (dets["image_id"] == int(dataset.ids[1]))]
    assert len(gt_rows) == len(dataset_images[1][1]["boxes"])

    folder = tmp_path / "results" / "double-head-ext"
    write_disagreements(dets, images, folder)
    (folder / "config.json").write_text('{"model": {"variant": "double-head-ext"}}')
    res = Results(tmp_path / "results")
    fig = figure(res, "figA5")
    assert fig is not None and len(fig.axes) == 4  # one image x (ground truth, conv, fc, Ext)
    assert [ax.get_title() for ax in fig.axes] == ["ground truth", "conv-head alone", "fc-head alone",
                                                   "Double-Head-Ext"]
    assert len(fig.axes[2].patches) == 2 and len(fig.axes[1].patches) == 1  # fc keeps the duplicate
    pd.testing.assert_frame_equal(pd.read_csv(folder / "qualitative_images.csv"), images, check_dtype=False)
