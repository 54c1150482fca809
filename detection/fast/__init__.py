"""Exact speed-ups as module swaps: ``optimize_for_inference`` / ``optimize_for_training`` replace parts of a built
``FasterRCNN`` with modules that compute the same outputs (up to float rounding) faster on the CPU, and every
kernel they bring (the gather RoIPool, the factored and commuted conv5 heads with their shared first block, the
separable RoIAlign, the blocked NMS). A built model never runs any of them until swapped; ``repr(model)`` shows
each swap.
"""
