"""`fairweather pipeline` and `fairweather demo`: every stage in order, each skipped once done."""
