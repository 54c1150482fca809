"""The paper's detector, part by part: Faster R-CNN on the ResNet C4 split (``faster_rcnn``: image transform →
trunk conv1…conv4_x → ``rpn`` with its ``anchors`` → RoI pooling (``pooling``) → conv5_x per RoI (``box_head``) →
classifier and box regressor (``roi_heads``) → decoding, NMS, refinement and voting (``postprocess``); ``boxes``
and ``sampling`` hold the box arithmetic and minibatch sampling they share.

These modules are the reference: plain PyTorch and torchvision ops, any device, training and inference. They
import nothing from ``detection.fast``, ``detection.testtime``, ``detection.deploy``, ``detection.weights`` or
``detection.engine`` (tests/test_layout.py).
"""
