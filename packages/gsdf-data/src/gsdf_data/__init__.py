"""gsdf-data: hand models, SDF sampling and HDF5 shards for hand-object reconstruction."""

__version__ = "0.1.0"
