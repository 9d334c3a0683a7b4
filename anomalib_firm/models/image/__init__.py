"""Image anomaly detection models."""
