"""Evaluation that matches the official programs; one module per protocol (see docs/evaluation.md).

- :mod:`~detection.evaluation.voc` — PASCAL VOC AP (py-faster-rcnn ``voc_eval``), devkit result files.
- :mod:`~detection.evaluation.coco` — COCO bbox via pycocotools ``COCOeval``, per-class AP / AP50.
- :mod:`~detection.evaluation.imagenet_det` — ILSVRC DET mAP (``eval_detection.m``).
- :mod:`~detection.evaluation.imagenet_loc` — ILSVRC CLS-LOC top-1/top-5 error (``eval_clsloc.m``).
- :mod:`~detection.evaluation.tables` — the paper's tables in markdown.

Each has an in-memory function (used by training and testing) and file readers (used by ``tools/eval_*.py``)
that share one implementation. The devkits' annotation, split and class-map files are read by
:mod:`detection.devkit`, as the datasets read them. VOC and ILSVRC boxes are the devkit's 1-based inclusive pixels
(:func:`detection.devkit.to_devkit_boxes` converts internal xyxy); COCO boxes are ``[x, y, w, h]``.
Import from the modules (``from detection.evaluation.voc import voc_eval``).
"""
