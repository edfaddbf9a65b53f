"""`fairweather sweep`: Ray Tune over the loss weights, each trial a training run tracked in MLflow."""
