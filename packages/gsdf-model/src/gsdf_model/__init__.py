"""gsdf-model: the gSDF network, its two-stage trainer and mesh reconstruction."""

__version__ = "0.1.0"
