"""Training in the science layer: one step, the EMA teacher, optimiser/schedule and checkpoint state (no Ray)."""
