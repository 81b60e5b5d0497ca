"""Pictures of runs and evaluations (matplotlib, an optional extra)."""
