"""MCL: Masked Contrastive Learning with Self-Ensemble Inference."""
