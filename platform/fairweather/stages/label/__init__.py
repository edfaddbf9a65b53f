"""`fairweather label`: the VLM rates and describes every image of the real pool (Ray Data -> VLM actors)."""
