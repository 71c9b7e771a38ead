"""The frozen encoder's feature cache: one computation per stored row, never a stale read."""

import numpy as np
import torch

from so101_sim2real.hilserl.features import FeatureCache


def encoder(calls: list):
    def encode(frames: torch.Tensor) -> torch.Tensor:
        calls.append(len(frames))
        return frames.float().flatten(1)[:, :4] * 2.0
    return encode


def frames_of(rows: np.ndarray, demo: np.ndarray) -> torch.Tensor:
    """Stand-in stacks whose content names their row and store."""
    values = torch.from_numpy(rows * 10 + demo).float()
    return values[:, None, None, None].expand(-1, 1, 2, 2).clone()


def test_each_row_is_computed_once_and_read_back_the_same():
    calls: list = []
    cache = FeatureCache(budget_mb=1, feature_dim=4)
    rows, demo = np.array([3, 5, 3, 7]), np.zeros(4, dtype=bool)
    first = cache.features(demo, rows, frames_of(rows, demo), encoder(calls))
    second = cache.features(demo, rows, frames_of(rows, demo), encoder(calls))
    assert torch.equal(first, second) and torch.equal(first[:, 0], torch.tensor([60.0, 100.0, 60.0, 140.0]))
    assert sum(calls) == 3 and cache.misses == 3  # row 3 twice in the first batch: computed once
    assert cache.hits == 4


def test_the_same_row_number_in_the_two_stores_is_two_entries():
    calls: list = []
    cache = FeatureCache(budget_mb=1, feature_dim=4)
    rows, demo = np.array([4, 4]), np.array([False, True])
    out = cache.features(demo, rows, frames_of(rows, demo), encoder(calls))
    assert out[0, 0] == 80.0 and out[1, 0] == 82.0
    again = cache.features(demo[::-1].copy(), rows, frames_of(rows, demo[::-1].copy()), encoder(calls))
    assert again[0, 0] == 82.0 and again[1, 0] == 80.0 and sum(calls) == 2


def test_a_slot_reused_by_a_newer_row_is_recomputed_not_read_stale():
    calls: list = []
    cache = FeatureCache(budget_mb=1, feature_dim=4)
    slots = cache.slots
    demo = np.zeros(1, dtype=bool)
    for row in (2, 2 + slots, 2):  # the same slot, three different rows
        rows = np.array([row])
        out = cache.features(demo, rows, frames_of(rows, demo), encoder(calls))
        assert out[0, 0] == row * 20.0
    assert cache.misses == 3 and cache.hits == 0


def test_the_budget_bounds_the_memory():
    cache = FeatureCache(budget_mb=8, feature_dim=32 * 35 * 35)  # the user's features: 157 KB a row
    assert cache.slots == 8 * 2**20 // (2 * 4 * 32 * 35 * 35)
    rows, demo = np.arange(3), np.array([False, True, False])
    cache.features(demo, rows, torch.zeros(3, 1, 1, 1), lambda f: torch.zeros(len(f), 32 * 35 * 35))
    assert cache.bytes <= 8 * 2**20
    half = FeatureCache(budget_mb=8, feature_dim=32 * 35 * 35, dtype=torch.bfloat16)
    assert half.slots == 8 * 2**20 // (2 * 2 * 32 * 35 * 35)


def test_two_new_rows_for_one_slot_in_one_batch_leave_a_consistent_entry():
    calls: list = []
    cache = FeatureCache(budget_mb=1, feature_dim=4)
    rows, demo = np.array([1, 1 + cache.slots]), np.zeros(2, dtype=bool)
    out = cache.features(demo, rows, frames_of(rows, demo), encoder(calls))
    assert out[0, 0] == 20.0 and out[1, 0] == (1 + cache.slots) * 20.0
    for row in rows:  # whichever the slot kept, reading either row gives its own features
        one = np.array([row])
        assert cache.features(demo[:1], one, frames_of(one, demo[:1]), encoder(calls))[0, 0] == row * 20.0
