"""Contracts layer: typed configs, table schemas, atomic Parquet I/O, the metric-logger protocol (no torch, no Ray)."""
