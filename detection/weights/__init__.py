"""Weights from elsewhere into this toolkit's detector: ``detectron2`` (model-zoo C4 checkpoints → state dicts,
its configs' conventions checked) and ``transfer`` (one detector's checkpoint initialising another's, e.g. COCO →
VOC fine-tuning). The paper's MSRA Caffe backbones convert in ``backbones.weights`` (a backbone concern, and
``backbones`` never imports ``detection``)."""
