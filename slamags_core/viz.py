"""Image helpers for notebooks and the README: cell mosaics with witnesses outlined."""
from __future__ import annotations

import numpy as np

from slamags_core.validation import check_int


def mosaic(images: np.ndarray, *, ncols: int, outline: np.ndarray | None = None,
           color: tuple[int, int, int] = (255, 215, 0), pad: int = 2) -> np.ndarray:
    """Tile cell patches into one image; outlined cells get a coloured frame.

    Used to show a bag (slide) with its witnesses (abnormal cells) outlined, as in the
    witness-rate figures of SLAM-AGS (Acerbis et al., ISBI 2026).

    Args:
        images: ``uint8 (N, H, W, 3)`` patches, N >= 1.
        ncols: patches per row (>= 1); rows = ceil(N / ncols), missing tiles stay white.
        outline: optional bool ``(N,)``; ``True`` draws a frame of ``color`` around that cell.
        color: RGB of the frame.
        pad: white gap between tiles in px (>= 0); a frame is ``max(pad, 1)`` px wide and is
            drawn inside the tile over the cell's border pixels when ``pad`` is 0.

    Returns:
        ``uint8 (rows * (H + 2 pad), ncols * (W + 2 pad), 3)``: tile ``i`` covers rows
        ``r*(H+2p) .. (r+1)*(H+2p)`` and columns ``c*(W+2p) ..`` with ``r, c = divmod(i, ncols)``.

    Raises:
        ValueError: bad shapes or dtype, ``ncols < 1``, ``pad < 0``, outline length mismatch.
    """
    images = np.asarray(images)
    if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8 or len(images) == 0:
        raise ValueError(f"images must be uint8 (N>=1, H, W, 3), got {images.dtype} {images.shape}")
    ncols, pad = check_int(ncols, "ncols", ge=1), check_int(pad, "pad", ge=0)
    n, h, w, _ = images.shape
    mark = np.zeros(n, dtype=bool) if outline is None else np.asarray(outline, dtype=bool)
    if mark.shape != (n,):
        raise ValueError(f"outline must have shape ({n},), got {mark.shape}")
    rows = -(-n // ncols)
    th, tw = h + 2 * pad, w + 2 * pad
    tiles = np.full((rows * ncols, th, tw, 3), 255, dtype=np.uint8)   # (R*C, th, tw, 3)
    tiles[:n, pad:pad + h, pad:pad + w] = images
    b = max(pad, 1)
    frame = np.zeros((th, tw), dtype=bool)
    frame[:b], frame[-b:], frame[:, :b], frame[:, -b:] = True, True, True, True
    sel = tiles[:n][mark]                                              # (M, th, tw, 3)
    sel[:, frame] = np.asarray(color, dtype=np.uint8)
    tiles[np.flatnonzero(mark)] = sel
    return tiles.reshape(rows, ncols, th, tw, 3).transpose(0, 2, 1, 3, 4).reshape(
        rows * th, ncols * tw, 3)
