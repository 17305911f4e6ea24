"""Normalisation of a hand-object pair into the unit cube.

The pair's union bounding box is centred at the origin and scaled so that the farthest
vertex from the centre lies at radius 1/1.03 (DeepSDF/gSDF convention: radius × 1.03).
A unit-cube point ``u`` maps back to the camera frame as ``x = u · scale + offset``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

PAD = 1.03


@dataclass(frozen=True)
class Normalization:
    """camera point = unit-cube point · scale + offset.

    offset: (3,) float64, metres. scale: float, metres per unit-cube unit.
    """

    offset: np.ndarray
    scale: float

    def to_unit(self, x: np.ndarray) -> np.ndarray:
        """Camera-frame points (..., 3) -> unit-cube points (..., 3)."""
        return (np.asarray(x, dtype=np.float64) - self.offset) / self.scale

    def to_camera(self, u: np.ndarray) -> np.ndarray:
        """Unit-cube points (..., 3) -> camera-frame points (..., 3)."""
        return np.asarray(u, dtype=np.float64) * self.scale + self.offset

    def sdf_to_camera(self, sdf: np.ndarray) -> np.ndarray:
        """Unit-cube signed distances (...) -> metres (...)."""
        return np.asarray(sdf, dtype=np.float64) * self.scale

    def sdf_to_unit(self, sdf: np.ndarray) -> np.ndarray:
        """Signed distances in metres (...) -> unit-cube units (...)."""
        return np.asarray(sdf, dtype=np.float64) / self.scale


def pair_normalization(*vertex_sets: np.ndarray, pad: float = PAD) -> Normalization:
    """Normalisation of the union of several vertex sets (each (V_i,3), e.g. hand and object).

    Centre: midpoint of the union bounding box. Scale: largest vertex distance from that
    centre, times ``pad``.
    """
    verts = np.concatenate([np.asarray(v, dtype=np.float64).reshape(-1, 3) for v in vertex_sets])
    if len(verts) == 0 or not np.isfinite(verts).all():
        raise ValueError("cannot normalise: no vertices or non-finite vertices")
    centre = 0.5 * (verts.min(axis=0) + verts.max(axis=0))
    radius = float(np.linalg.norm(verts - centre, axis=1).max())
    if radius <= 0.0:
        raise ValueError("cannot normalise: all vertices coincide")
    return Normalization(offset=centre, scale=radius * pad)
