"""gsdf-model: the gSDF network, its two-stage trainer and mesh reconstruction.

`from gsdf_model import Predictor; Predictor.load("RUN/last.pt")(image, bbox=..., K=...)`
gives meshes and joints for one's own image (gsdf_model.predict).
"""

__version__ = "0.1.0"

__all__ = ["Prediction", "Predictor", "__version__"]


def __getattr__(name: str):
    # Lazy: the CLIs import this package for __version__ and must not pay for torch.
    if name in ("Predictor", "Prediction"):
        from gsdf_model import predict

        return getattr(predict, name)
    raise AttributeError(f"module 'gsdf_model' has no attribute {name!r}")
