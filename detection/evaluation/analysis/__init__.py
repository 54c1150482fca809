"""Why a detector fails: TIDE error breakdown, COCO analyze and PR curves, confusion matrix, the worst images,
training curves, and one self-contained HTML report (docs/evaluation.md, "Reading the analysis report").

- :mod:`.data` — ground truth and COCO results as flat arrays (the form every analysis reads).
- :mod:`.tide` — TIDE's dAP per error type (held equal to the authors' ``tidecv``).
- :mod:`.matching` — pycocotools ``COCOeval``'s matching and accumulation, vectorised (held equal to it).
- :mod:`.coco_analysis` — the COCO ``analyze`` breakdown (C75, C50, Loc, Sim, Oth, BG, FN) per class and size.
- :mod:`.confusion` — the class confusion matrix (with background) at IoU 0.5 and a score threshold.
- :mod:`.plots` — matplotlib figures; :mod:`.gallery` — the worst images drawn; :mod:`.training` — training curves.
- :mod:`.inputs` — each dataset's own ground truth and result files → the COCO form; :mod:`.report` — all of it.
- :mod:`.synthetic` — generated data with every error type (tests, docs, ``tools/benchmark_analysis.py``).
"""
