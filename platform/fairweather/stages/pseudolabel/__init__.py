"""`fairweather pseudolabel`: restore, score and select pseudo-labels for the real pool (Ray Data)."""
