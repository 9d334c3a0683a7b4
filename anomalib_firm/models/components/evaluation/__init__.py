"""anomalib's post-processor and metrics, made exact for our scores and tolerant of empty distributed batches."""
