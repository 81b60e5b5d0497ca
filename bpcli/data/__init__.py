"""Datasets: the catalog of named sets, verified downloads, IDX/CSV/NPZ files, synthetic sets, preprocessing."""
