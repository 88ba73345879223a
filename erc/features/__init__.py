"""The feature cache: a root HDF5 file linking one file per group (schema in :mod:`erc.features.schema`)."""
