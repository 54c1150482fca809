"""Test-time wrappers around trained detectors: the image pyramid with per-RoI level selection (``pyramid``,
the paper's multi-scale testing) and ensembles / horizontal flips (``ensemble``, Appendix B). They run whatever
modules the wrapped models hold, optimised or not."""
