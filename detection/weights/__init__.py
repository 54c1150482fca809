"""Weights from elsewhere into this toolkit's detector: ``detectron2`` (model-zoo C4 checkpoints → state dicts,
its configs' conventions checked), ``transfer`` (one detector's checkpoint initialising another's, e.g. COCO →
VOC fine-tuning) and ``msra`` (the MSRA ImageNet ResNets as published: detectron2's caffe2-named
``ImageNetPretrained/MSRA/R-50.pkl``, or Caffe names through ``backbones.weights.convert_msra_caffe``)."""
