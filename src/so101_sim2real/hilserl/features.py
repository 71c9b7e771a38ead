"""A frozen encoder's features of stored frame stacks, computed once per row.

With the encoder frozen nothing back-propagates through it, and a stack's features never
change: computing them at every update is the update's whole cost. The cache keeps them per
(store, absolute row): the row's stack ending there, as the replay buffer rebuilds it, is a
function of the row alone once written. A row missing from the cache (never sampled, or its
slot taken by a newer row) is computed from the batch's frames when first sampled, in the
learner's thread, so the actor never pays for it.

Direct-mapped: row ``r`` of a store lives in slot ``r % slots`` with its row number as the tag,
so a slot that the ring reused is recomputed, never read stale. fp32, as the encoder computed
them: an update from cached features equals one that ran the frozen encoder (the oracle test);
bf16 when the learner's heads multiply in bf16 anyway (half the memory and the copying).

What it costs: augmentation is off (features of shifted stacks would need one entry per shift;
LeRobot's frozen-encoder HIL-SERL drops it too), and memory, ``feature_dim * 4`` bytes a row
(157 KB for the user's 32x35x35 features): ``feature_cache_mb`` bounds it, half for each
store (4096 MB: 13,697 rows a store in fp32, twice that in bf16). A store that holds more rows
than that keeps only part of them: a sampled row whose slot a newer row took is computed again.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch


class FeatureCache:
    """Features per (store, absolute row), the online and the demo store each half the budget."""

    def __init__(self, budget_mb: int, feature_dim: int, device: torch.device | str = "cpu",
                 dtype: torch.dtype = torch.float32):
        bytes_per_row = feature_dim * torch.finfo(dtype).bits // 8
        self.slots = max(1, int(budget_mb * 2**20 // (2 * bytes_per_row)))
        self.dim, self.device, self.dtype = feature_dim, torch.device(device), dtype
        self.hits = self.misses = 0
        # allocated on first use, one per store: False the online store, True the demo store
        self._data: dict[bool, torch.Tensor] = {}
        self._tags: dict[bool, np.ndarray] = {}

    def _store(self, demo: bool) -> tuple[torch.Tensor, np.ndarray]:
        if demo not in self._data:
            self._data[demo] = torch.empty(self.slots, self.dim, device=self.device, dtype=self.dtype)
            self._tags[demo] = np.full(self.slots, -1, dtype=np.int64)
        return self._data[demo], self._tags[demo]

    def features(self, from_demos: np.ndarray, rows: np.ndarray, frames: torch.Tensor,
                 encode: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
        """(B, feature_dim) features of the stacks at ``rows`` (of the demo store where
        ``from_demos``); ``frames`` are those stacks, ``encode`` the frozen encoder for misses."""
        slots = self._index(rows % self.slots)
        out = torch.empty(len(rows), self.dim, device=self.device, dtype=self.dtype)
        for demo in (False, True):
            mine = np.flatnonzero(from_demos == demo)
            if mine.size == 0:
                continue
            data, tags = self._store(demo)
            index = self._index(mine)
            if mine[-1] - mine[0] + 1 == mine.size:  # a run of the batch (as the buffer samples): gather in place
                torch.index_select(data, 0, slots[index], out=out[mine[0]:mine[-1] + 1])
            else:
                out[index] = data.index_select(0, slots[index])
            self._fill(out, mine, rows[mine], tags, data, frames, encode)
        return out

    def _index(self, positions: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(positions).to(self.device)

    def _fill(self, out: torch.Tensor, where: np.ndarray, rows: np.ndarray, tags: np.ndarray, data: torch.Tensor,
              frames: torch.Tensor, encode: Callable[[torch.Tensor], torch.Tensor]) -> None:
        """Compute the misses among ``rows`` (at ``where`` in the batch) and keep them."""
        miss = tags[rows % self.slots] != rows
        self.hits += int((~miss).sum())
        if not miss.any():
            return
        # a row sampled twice in this batch is computed once
        new_rows, first, again = np.unique(rows[miss], return_index=True, return_inverse=True)
        at = where[miss]
        computed = encode(frames[torch.from_numpy(at[first]).to(frames.device)]).to(self.dtype)
        out[self._index(at)] = computed[self._index(again.reshape(-1))]
        # two new rows for one slot (a ring larger than the cache): keep one, its tag and data alike
        slot, keep = np.unique(new_rows % self.slots, return_index=True)
        data[self._index(slot)] = computed[self._index(keep)]
        tags[slot] = new_rows[keep]
        self.misses += len(new_rows)

    @property
    def bytes(self) -> int:
        """Memory the cache holds now."""
        return sum(d.numel() * d.element_size() for d in self._data.values())
