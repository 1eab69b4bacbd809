"""What a run records (samples, activities, events) and the clock that stamps it."""
