"""What a run is judged by: probes, tolerances, invariants, measurements and the verdict."""
