"""The two hand models behind `HandModel` and `load_hand`, the one way code gets a hand."""

from __future__ import annotations

from pathlib import Path

import torch

from gsdf_data.hand.base import HandModel, mirror_arrays


class ProceduralHand(HandModel):
    """The hand the project ships (see `gsdf_data.hand.procedural`): 2,000 vertices,
    watertight, no pose blend shapes, no PCA space, 2 shape coefficients (of 10 slots).
    side="left" mirrors it (x -> -x, see `base.mirror_arrays`)."""

    name = "procedural"

    def __init__(
        self,
        side: str = "right",
        dtype: torch.dtype = torch.float32,
        device: torch.device | str | None = None,
    ) -> None:
        from gsdf_data.hand.procedural import procedural_arrays

        arrays = procedural_arrays()
        if side == "left":
            arrays = mirror_arrays(arrays)
        elif side != "right":
            raise ValueError(f"side must be 'right' or 'left', not {side!r}")
        super().__init__(**arrays, side=side, dtype=dtype, device=device)


def load_hand(
    path: str | Path | None = None,
    side: str = "right",
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
    **mano_kwargs,
) -> HandModel:
    """The project's hand: `ProceduralHand` when path is None, else `MANOHand.from_pkl(path)`
    (the user's MANO_RIGHT.pkl; mano_kwargs: flat_hand_mean, tips, ncomps)."""
    if path is None:
        return ProceduralHand(side=side, dtype=dtype, device=device)
    from gsdf_data.hand.mano import MANOHand

    return MANOHand.from_pkl(path, side=side, device=device, dtype=dtype, **mano_kwargs)
