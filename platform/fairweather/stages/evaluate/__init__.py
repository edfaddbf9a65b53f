"""`fairweather evaluate`: restore and score test sets, input vs. restored, as a report."""
