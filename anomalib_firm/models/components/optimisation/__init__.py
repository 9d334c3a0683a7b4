"""Learning-rate schedules and batch-size scaling rules."""
