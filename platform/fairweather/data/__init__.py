"""Training data: driver-side table views, per-rank sampling, and seeded decode/crop/flip batches."""
