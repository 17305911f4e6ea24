"""Writes a stand-in for MANO_RIGHT.pkl in the real file's layout, with geometry we know.

Layout as in the licensed file: a Python 2 pickle (protocol 2, byte strings as py2 `str`, so
it only loads with encoding="latin1"), `shapedirs` a `chumpy.ch.Ch`, `J` a
`chumpy.reordering.Select` of a `Ch`, `J_regressor` a `scipy.sparse.csc.csc_matrix`
pickled by its old module path, numpy arrays by `numpy.core.multiarray._reconstruct`.
No chumpy is needed to write or read it: the pickler below writes those class references
by name.

Geometry: the procedural hand's template plus 16 vertices at its joints and 5 at its
fingertips (not used by faces), so `J_regressor` picks the joint vertices exactly and the
fingertip ids are the last five. Skinning weights are the procedural hand's (the extra
vertices follow their own joint rigidly), so this "MANO" poses exactly like the procedural
hand. Known blend shapes: shape coefficient 0 scales everything by +10 %; the first pose
feature, (R_1 - I)[0, 0] of the index root, shifts every vertex by 1 cm along z. The PCA
basis is a seeded random orthogonal matrix; hands_mean a slightly curled hand (as MANO's).
"""

from __future__ import annotations

import copyreg
import io
import pickle
import struct

import numpy as np


class _Named:
    """An object that pickles as a new-style instance of `module.name` with a dict state."""

    module = name = ""

    def __init__(self, state: dict) -> None:
        self.state = state

    def __reduce_ex__(self, protocol):
        return copyreg.__newobj__, (type(self),), self.state


class FakeCh(_Named):
    module, name = "chumpy.ch", "Ch"


class FakeSelect(_Named):
    module, name = "chumpy.reordering", "Select"


class FakeCSC(_Named):
    module, name = "scipy.sparse.csc", "csc_matrix"


class Py2Pickler(pickle._Pickler):
    """Protocol 2 with Python 2 conventions: text and bytes as 8-bit `str`, numpy under its
    old `numpy.core` path, fake classes under their own names."""

    dispatch = pickle._Pickler.dispatch.copy()

    def save_py2str(self, obj) -> None:
        data = obj.encode("latin1") if isinstance(obj, str) else bytes(obj)
        if len(data) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(data)]) + data)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(data)) + data)
        self.memoize(obj)

    dispatch[str] = save_py2str
    dispatch[bytes] = save_py2str

    def save_global(self, obj, name=None) -> None:
        if isinstance(obj, type) and issubclass(obj, _Named):
            module, name = obj.module, obj.name
        else:
            module = getattr(obj, "__module__", None) or pickle.whichmodule(obj, name)
            name = name or obj.__qualname__
            if module.startswith("numpy._core"):
                module = "numpy.core" + module[len("numpy._core") :]
        self.write(pickle.GLOBAL + f"{module}\n{name}\n".encode())
        self.memoize(obj)

    dispatch[type] = save_global


def standin_arrays(seed: int = 0) -> dict[str, np.ndarray]:
    """The stand-in's content as plain arrays (what a correct loader must recover)."""
    import torch

    from gsdf_data.hand import ProceduralHand

    hand = ProceduralHand(dtype=torch.float64)
    v0 = hand.v_template.numpy()
    J = hand.joints_template.numpy()
    tips = hand.tips_template.numpy()
    V0 = len(v0)
    v = np.vstack([v0, J, tips])
    V = len(v)
    W = np.zeros((V, 16))
    W[:V0] = hand.weights.numpy()
    W[V0 + np.arange(16), np.arange(16)] = 1.0
    W[V0 + 16 + np.arange(5), [15, 3, 6, 12, 9]] = 1.0
    J_reg = np.zeros((16, V))
    J_reg[np.arange(16), V0 + np.arange(16)] = 1.0
    shapedirs = np.zeros((V, 3, 10))
    shapedirs[..., 0] = 0.1 * v
    posedirs = np.zeros((V, 3, 135))
    posedirs[:, 2, 0] = 0.01
    rng = np.random.default_rng(seed)
    comps, _ = np.linalg.qr(rng.normal(size=(45, 45)))
    return {
        "v_template": v,
        "f": hand.faces_open.astype(np.uint32),
        "weights": W,
        "J_regressor": J_reg,
        "J": J,
        "shapedirs": shapedirs,
        "posedirs": posedirs,
        "hands_components": comps,
        # a relaxed, slightly curled hand like MANO's mean pose, plus some noise
        "hands_mean": hand.sample_poses(1, rng, grasp=0.3, noise=0.0)[0].astype(np.float64)
        + rng.normal(0, 0.05, 45),
        "hands_coeffs": rng.normal(size=(10, 45)),
        "kintree_table": np.array(
            [[4294967295, 0, 1, 2, 0, 4, 5, 0, 7, 8, 0, 10, 11, 0, 13, 14], np.arange(16)],
            dtype=np.int64,
        ),
        "bs_style": "lbs",
        "bs_type": "lrotmin",
        "tip_ids": np.arange(V0 + 16, V0 + 21),
        "faces_closed": hand.faces,
    }


def write_mano_standin(path, seed: int = 0, mirror: bool = False, drop: tuple = ()) -> dict:
    """Write the stand-in pickle to path; returns `standin_arrays` (mirror=True writes the
    left-hand version: x negated, faces re-wound). drop: keys to leave out."""
    import scipy.sparse as sp

    a = standin_arrays(seed)
    if mirror:
        a = dict(a)
        a["v_template"] = a["v_template"] * [-1, 1, 1]
        a["J"] = a["J"] * [-1, 1, 1]
        a["f"] = a["f"][:, ::-1].copy()
        flip = np.tile([1.0, -1.0, -1.0], 15)  # axis-angle under the x mirror
        a["hands_mean"] = a["hands_mean"] * flip
        a["hands_components"] = a["hands_components"] * flip
    csc = sp.csc_matrix(a["J_regressor"])
    content = {
        "v_template": a["v_template"],
        "f": a["f"],
        "weights": a["weights"],
        "J_regressor": FakeCSC(
            {
                "_shape": csc.shape,
                "maxprint": 50,
                "data": csc.data,
                "indices": csc.indices.astype(np.int32),
                "indptr": csc.indptr.astype(np.int32),
            }
        ),
        "J": FakeSelect(
            {"a": FakeCh({"x": a["J"].ravel()}), "idxs": np.arange(48), "preferred_shape": (16, 3)}
        ),
        "shapedirs": FakeCh({"x": a["shapedirs"], "_dirty_vars": set()}),
        "posedirs": a["posedirs"],
        "hands_components": a["hands_components"],
        "hands_mean": a["hands_mean"],
        "hands_coeffs": a["hands_coeffs"],
        "kintree_table": a["kintree_table"],
        "bs_style": a["bs_style"],
        "bs_type": a["bs_type"],
    }
    for k in drop:
        content.pop(k)
    buf = io.BytesIO()
    Py2Pickler(buf, protocol=2).dump(content)
    with open(path, "wb") as fh:
        fh.write(buf.getvalue())
    return a
