"""gsdf-eval: alignment and hand-object reconstruction metrics (no torch needed)."""

__version__ = "0.1.0"
