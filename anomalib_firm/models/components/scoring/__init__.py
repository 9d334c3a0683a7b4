"""Scorers fitted on normal images: the k-NN feature bank and the class-conditional Gaussians."""
