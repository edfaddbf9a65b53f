"""Shared stage infrastructure: the Ray session, MLflow tracking, the pool listing, weight preflight and prefetch."""
