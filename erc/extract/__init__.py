"""Stage 1: datasets -> encoders -> the HDF5 feature cache."""
