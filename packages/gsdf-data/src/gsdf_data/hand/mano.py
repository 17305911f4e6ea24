"""MANO from the user's own `MANO_RIGHT.pkl`, without chumpy.

The file is a Python 2 pickle holding chumpy objects and a scipy sparse `J_regressor`. A
custom unpickler maps every chumpy class to a stub that keeps the pickled state and then
recovers the array from it (`x` for `Ch`, `a[idxs]` for `Select`, else the first array in the
state); scipy sparse matrices are rebuilt from their pickled (data, indices, indptr) so old
module paths and attribute names do not matter. No chumpy module is ever imported, and no
class other than these, NumPy's and builtin values is resolved: a file from anywhere
cannot run code on load (`gsdf_data.safe_pickle`).

Left hands: `side="left"` mirrors the right model across x = 0 (vertices, blend shapes,
PCA space; faces re-wound to stay outward; see `base.mirror_arrays`). A MANO_LEFT.pkl
passed as the right hand is refused; pass the right file with side="left" instead.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from gsdf_data.hand.base import HandModel, mirror_arrays
from gsdf_data.hand.kinematics import PARENTS
from gsdf_data.safe_pickle import SafeUnpickler

# Fingertip vertex ids of MANO (thumb, index, middle, ring, little). Two sets are in use:
# - ObMan's `coords_3d`: the renderer's SMPL+H fingertip vertices (right hand 6206, 5795, 5905,
#   6016, 6134; obman_render `coordutils.py`) through obman_render's SMPL+H -> MANO vertex map
#   (`assets/models/smpl2righthand_verts.npy`): the keypoints of the ObMan dataset.
# - manopth's ManoLayer and the gSDF reference's own MANO layer (`common/mano/manolayer.py`,
#   used by its IK, FK and scored joints), also the DexYCB toolkit's: 2-6 mm from the above.
OBMAN_TIPS = (744, 333, 443, 554, 672)
MANOPTH_TIPS = (745, 317, 444, 556, 673)
TIP_IDS = {"obman": OBMAN_TIPS, "manopth": MANOPTH_TIPS, "dexycb": MANOPTH_TIPS}
REQUIRED = ("v_template", "f", "J_regressor", "weights", "posedirs", "shapedirs",
            "hands_components", "hands_mean", "kintree_table")  # fmt: skip


class MANOFileError(ValueError):
    """The file is not a usable MANO model; the message names the file and the reason."""


class _ChumpyStub:
    """Stands in for any chumpy class: keeps the pickled state, reconstructs an array."""

    def __init__(self, *args, **kwargs) -> None:
        self.state: dict = {}

    def __setstate__(self, state) -> None:
        self.state = state if isinstance(state, dict) else {"state": state}

    def __reduce__(self):  # pragma: no cover - never pickled back
        raise TypeError("chumpy stand-in objects cannot be pickled")

    def array(self) -> np.ndarray:
        st = self.state
        if "x" in st:
            return _to_array(st["x"])
        if "a" in st and "idxs" in st:  # chumpy.reordering.Select: a.ravel()[idxs]
            out = _to_array(st["a"]).ravel()[np.asarray(st["idxs"])]
            shape = st.get("preferred_shape")
            return out.reshape(shape) if shape is not None else out
        if "a" in st:
            return _to_array(st["a"])
        for v in st.values():
            if isinstance(v, np.ndarray | _ChumpyStub):
                return _to_array(v)
        raise ValueError("a chumpy object without an array in its state")


class _SparseStub:
    """Stands in for scipy.sparse matrices of any scipy version; `array()` -> dense."""

    default_format = "csc"

    def __init__(self, *args, **kwargs) -> None:
        self.state: dict = {}

    def __setstate__(self, state) -> None:
        self.state = state

    def array(self) -> np.ndarray:
        st = {k.lstrip("_"): v for k, v in self.state.items()}
        import scipy.sparse as sp

        fmt = st.get("format", self.default_format)
        shape = tuple(st["shape"])
        if fmt in ("csc", "csr"):
            cls = sp.csc_matrix if fmt == "csc" else sp.csr_matrix
            m = cls((st["data"], st["indices"], st["indptr"]), shape=shape)
        elif fmt == "coo":
            m = sp.coo_matrix((st["data"], (st["row"], st["col"])), shape=shape)
        else:
            raise ValueError(f"unsupported sparse format {fmt!r}")
        return np.asarray(m.toarray())


def _to_array(v) -> np.ndarray:
    if isinstance(v, _ChumpyStub | _SparseStub):
        return v.array()
    return np.asarray(v)


class _MANOUnpickler(SafeUnpickler):
    """What a MANO file holds, and nothing else: chumpy objects (as stand-ins), scipy sparse
    matrices (as stand-ins), NumPy arrays and builtin values. No other class is resolved, so
    a file from anywhere cannot run code on load."""

    def find_class(self, module: str, name: str):
        if module == "chumpy" or module.startswith("chumpy."):
            return _ChumpyStub
        if module.startswith("scipy.sparse") and name.endswith(("_matrix", "_array")):
            # old pickles may lack a "format" entry: the class name carries it
            return type(name, (_SparseStub,), {"default_format": name[:3]})
        return super().find_class(module, name)


def read_mano_pkl(path: str | Path) -> dict[str, np.ndarray]:
    """The MANO pickle as plain NumPy arrays (chumpy and sparse objects converted)."""
    path = Path(path)
    if not path.is_file():
        raise MANOFileError(f"{path}: no such file")
    try:
        with path.open("rb") as fh:
            raw = _MANOUnpickler(fh, encoding="latin1").load()
    except Exception as exc:
        raise MANOFileError(f"{path}: not a MANO pickle ({type(exc).__name__}: {exc})") from None
    if not isinstance(raw, dict):
        raise MANOFileError(f"{path}: not a MANO pickle (holds a {type(raw).__name__}, not a dict)")
    missing = [k for k in REQUIRED if k not in raw]
    if missing:
        raise MANOFileError(f"{path}: not a MANO model file, missing keys {missing}")
    try:
        return {k: _to_array(v) for k, v in raw.items() if k in REQUIRED or k == "J"}
    except Exception as exc:
        raise MANOFileError(f"{path}: unreadable MANO arrays ({exc})") from None


def handedness(joints: np.ndarray, tips: np.ndarray, hands_mean: np.ndarray) -> float:
    """Evidence (metres) that a rest hand is a right hand: > 0 right, < 0 left, near 0
    unknown. joints (16, 3) and tips (5, 3) at rest (MANO order); hands_mean (45,).

    With n = (wrist -> middle root) x (little root -> index root), which points out of the
    back of a right hand and out of the palm of a left one: MANO's mean pose curls the
    fingers towards the palm, so the curl moves the finger joints along -n for a right
    hand. Without a mean pose, the thumb (which sits in front of the palm) decides.
    """
    import torch

    from gsdf_data.hand.kinematics import axis_angle_to_rotmat, forward_kinematics

    J = np.asarray(joints, dtype=np.float64)
    n = np.cross(J[4] - J[0], J[1] - J[7])
    n /= np.linalg.norm(n)
    if np.abs(hands_mean).max() > 0.05:
        aa = np.concatenate([np.zeros(3), np.asarray(hands_mean, dtype=np.float64)]).reshape(16, 3)
        R = axis_angle_to_rotmat(torch.as_tensor(aa))[None]
        posed = forward_kinematics(R, torch.as_tensor(J))[0][0].numpy()
        fingers = [2, 3, 5, 6, 8, 9, 11, 12]
        return -float(np.mean((posed[fingers] - J[fingers]) @ n))
    thumb = (tips[0] + J[14]) / 2 - J[[1, 4, 7, 10]].mean(0)
    return -float(thumb @ n)


class MANOHand(HandModel):
    """MANO (the user's own file) behind the `HandModel` interface. See `from_pkl`."""

    name = "mano"

    @classmethod
    def from_pkl(
        cls,
        path: str | Path,
        flat_hand_mean: bool = True,
        tips: str | tuple[int, ...] = "obman",
        ncomps: int = 45,
        side: str = "right",
        check_side: bool = True,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str | None = None,
    ) -> MANOHand:
        """Load MANO_RIGHT.pkl.

        flat_hand_mean: True (ObMan's pca_pose convention) makes the zero pose the flat
        hand; False adds the file's hands_mean to every finger pose (DexYCB). tips: "obman"
        (ObMan's keypoints), "manopth" (= "dexycb"; the reference's MANO layer) or 5 vertex
        ids (thumb, index, middle, ring, little); see `TIP_IDS`. ncomps: PCA rows kept
        (pca_coeffs (B, n <= ncomps)). side: "right", or "left" to mirror it (see module
        docstring). check_side: refuse a file whose template is a left hand.
        """
        path = Path(path)
        d = read_mano_pkl(path)
        v = d["v_template"].astype(np.float64)
        V = len(v)
        if v.ndim != 2 or v.shape[1] != 3:
            raise MANOFileError(f"{path}: v_template has shape {v.shape}, expected (V, 3)")
        kintree = np.asarray(d["kintree_table"]).astype(np.int64)
        parents = kintree[0].copy()
        parents[0] = -1
        if tuple(parents.tolist()) != PARENTS:
            raise MANOFileError(
                f"{path}: kinematic tree {parents.tolist()} is not MANO's hand tree"
            )
        J_reg = d["J_regressor"].astype(np.float64)
        if J_reg.shape != (16, V):
            raise MANOFileError(f"{path}: J_regressor has shape {J_reg.shape}, expected (16, {V})")
        tip_ids = np.asarray(TIP_IDS[tips] if isinstance(tips, str) else tips, dtype=np.int64)
        if tip_ids.shape != (5,) or tip_ids.min() < 0 or tip_ids.max() >= V:
            raise MANOFileError(f"{path}: fingertip ids {tip_ids.tolist()} do not fit {V} vertices")
        shapedirs = d["shapedirs"].astype(np.float64).reshape(V, 3, -1)
        posedirs = d["posedirs"].astype(np.float64).reshape(V * 3, -1).T  # (135, V*3)
        comps = d["hands_components"].astype(np.float64)[:ncomps]
        mean = d["hands_mean"].astype(np.float64).reshape(45)
        faces = d["f"].astype(np.int64)
        joints = J_reg @ v
        # only refuse on clear evidence (millimetres of curl), never on a near-tie
        if check_side and handedness(joints, v[tip_ids], mean) < -0.002:
            raise MANOFileError(
                f"{path}: this looks like a left-hand model; pass MANO_RIGHT.pkl (with "
                "side='left' for left hands), or check_side=False to skip this check"
            )
        arrays = {
            "v_template": v,
            "faces": close_wrist(v, faces),
            "faces_open": faces,
            "weights": d["weights"].astype(np.float64),
            "joints": joints,
            "shapedirs": shapedirs,
            "joint_shapedirs": np.einsum("jv,vcs->jcs", J_reg, shapedirs),
            "posedirs": posedirs,
            "hands_components": comps,
            "hands_mean": np.zeros(45) if flat_hand_mean else mean,
        }
        if side == "left":
            arrays = mirror_arrays(arrays)
        elif side != "right":
            raise ValueError(f"side must be 'right' or 'left', not {side!r}")
        model = cls(**arrays, tip_vertex_ids=tip_ids, side=side, dtype=dtype, device=device)
        model.flat_hand_mean = flat_hand_mean
        model.source = str(path)
        return model


def close_wrist(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """Close every boundary loop of an open mesh (MANO's wrist opening) with a triangle fan
    from the loop's first vertex, wound against the loop so normals point outward. No
    vertices are added, so vertex ids (fingertips) keep their meaning. Returns (F + k, 3)."""
    loops = _boundary_loops(faces)
    extra = []
    for loop in loops:
        for i in range(1, len(loop) - 1):
            extra.append((loop[0], loop[i + 1], loop[i]))
    if not extra:
        return faces
    return np.vstack([faces, np.asarray(extra, dtype=np.int64)])


def _boundary_loops(faces: np.ndarray) -> list[list[int]]:
    """Boundary loops, each oriented along its faces' edges (a -> b with no twin b -> a)."""
    edges = np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]])
    directed = {(int(a), int(b)) for a, b in edges}
    nxt = {a: b for a, b in directed if (b, a) not in directed}
    loops, seen = [], set()
    for start in nxt:
        if start in seen:
            continue
        loop, cur = [], start
        while cur not in seen and cur in nxt:
            seen.add(cur)
            loop.append(cur)
            cur = nxt[cur]
        if len(loop) >= 3:
            loops.append(loop)
    return loops
