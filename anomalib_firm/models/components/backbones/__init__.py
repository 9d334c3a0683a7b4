"""Encoders, projection heads and pretrained weights: names, builders, weight files, BatchNorm handling."""
