"""Using a trained detector outside training: ``predictor`` (files, arrays, PIL images → detections in the
image's pixels), ``export`` (ONNX and ``torch.export``, checked against the eager model) and ``visualize``
(drawing boxes)."""
