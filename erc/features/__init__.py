"""The feature cache: one HDF5 file per extraction (schema in :mod:`erc.features.schema`)."""
