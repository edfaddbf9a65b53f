"""`fairweather train`: Ray Train DDP training, one run or the pseudo-label rounds."""
