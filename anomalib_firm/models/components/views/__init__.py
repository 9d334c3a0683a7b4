"""Batched image augmentations on the device and the rotations that make synthetic outliers."""
