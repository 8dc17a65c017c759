"""Benchmarks of the toolkit's expensive paths, measured side by side in one process: ``python -m bench``.

Sections (each a module with a ``run(...) -> dict``): `peak` (the machine's matmul ceiling), `sliding` (the
sliding-window analysis, fast path vs the straightforward one), `conv_head` (the conv-head's inference form),
`train` (seconds per iteration vs torchvision's stock Faster R-CNN), `evaluate` (all inference modes in one pass)
and `detections` (COCO evaluation engines and `dhanalysis detections` against their peers, each in its own process).
Results are printed as a table and, with ``--json PATH``, written as nested JSON (BENCHMARKS.md lists the keys).
"""
