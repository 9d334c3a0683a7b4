"""What exported models need: one resize for every path and compression that keeps the scorer exact."""
