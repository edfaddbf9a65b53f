"""`fairweather restore`: restore a folder of photos with a trained checkpoint (tiled)."""
