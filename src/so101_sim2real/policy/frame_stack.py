"""Time stacking of observations, oldest first, as the agent saw it in training."""

from __future__ import annotations

from collections import deque

import numpy as np


class FrameStack:
    """Keeps the last ``frames`` arrays; a reset fills it with copies of the first.

    ``stacked()`` returns ``(frames, *item_shape)``: for pixel frames
    ``(3, 2, 84, 84)``, for states ``(3, 18)``. The policy flattens it itself, so the
    stack is never handed over pre-flattened.
    """

    def __init__(self, frames: int):
        if frames < 1:
            raise ValueError("frames must be >= 1")
        self.frames = frames
        self._items: deque[np.ndarray] = deque(maxlen=frames)

    def reset(self, first: np.ndarray) -> np.ndarray:
        self._items.clear()
        for _ in range(self.frames):
            self._items.append(np.array(first, copy=True))
        return self.stacked()

    def push(self, item: np.ndarray) -> np.ndarray:
        if not self._items:
            return self.reset(item)
        if item.shape != self._items[-1].shape:
            raise ValueError(f"frame shape {item.shape} differs from the stack's {self._items[-1].shape}")
        self._items.append(np.array(item, copy=True))
        return self.stacked()

    def stacked(self) -> np.ndarray:
        if not self._items:
            raise RuntimeError("FrameStack is empty: call reset() with the first frame")
        return np.stack(self._items, axis=0)

    def __len__(self) -> int:
        return len(self._items)
