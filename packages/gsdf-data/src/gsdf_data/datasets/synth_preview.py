"""The preview of the synthetic dataset: first frames tiled with their projected joints."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from gsdf_data.datasets.obman import OBMAN_K
from gsdf_data.datasets.synth import SynthConfig, cached_sequence

# 21 keypoints (paper order): bones to draw, parent -> child
SKELETON = [(0, 1), (1, 2), (2, 3), (3, 4)] + [
    (a, b) for f in range(4) for a, b in ((0, 5 + 4 * f), (5 + 4 * f, 6 + 4 * f),
                                          (6 + 4 * f, 7 + 4 * f), (7 + 4 * f, 8 + 4 * f))
]  # fmt: skip


def preview(config: SynthConfig, path: str | Path, n: int = 8, cols: int | None = None) -> Path:
    """Tile the first `n` frames (one per sequence) with their projected joints into a PNG
    (`cols` tiles per row; default 4, or 3 when that fills the rows)."""
    import cv2

    if cols is None:
        cols = 3 if n % 4 and n % 3 == 0 else 4
    tiles = []
    for i in range(n):
        s = cached_sequence(config, i, False)
        fr = s.frames[0]
        img = np.ascontiguousarray(fr.rgb[..., ::-1])
        uv = fr.keypoints @ OBMAN_K.T
        pix = [tuple(int(c) for c in p) for p in np.rint(uv[:, :2] / uv[:, 2:3])]
        colours = [(0, 0, 255), (0, 165, 255), (0, 255, 0), (255, 128, 0), (255, 0, 255)]
        for a, b in SKELETON:
            col = colours[(b - 1) // 4]
            cv2.line(img, tuple(pix[a]), tuple(pix[b]), col, 1, cv2.LINE_AA)
        for j in range(21):
            col = (255, 255, 255) if j == 0 else colours[(j - 1) // 4]
            cv2.circle(img, tuple(pix[j]), 2, col, -1, cv2.LINE_AA)
        tiles.append(img)
    while len(tiles) % cols:
        tiles.append(np.zeros_like(tiles[0]))
    rows = [np.concatenate(tiles[r : r + cols], axis=1) for r in range(0, len(tiles), cols)]
    grid = np.concatenate(rows, axis=0)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), grid, [cv2.IMWRITE_PNG_COMPRESSION, 9])
    return path
