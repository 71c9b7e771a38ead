"""The replay buffer the actor and the learner share: frames stored once, stacks rebuilt.

Each control tick is one row: the frame the policy saw (uint8, e.g. 2x84x84), the
state, the executed action, the reward, whether the episode ended there, and whether a
human (or the scripted helper) was in control. At sample time the 3-frame stacks and
the n-step returns are rebuilt from the rows, never across the start of an episode (the
stack is filled with copies of its first frame there, as :class:`FrameStack` does at
run time). About 14.2 KB per transition at 2x84x84 instead of DrQ-v2's stacked storage.

Two stores, sampled half and half (RLPD): every tick goes to the online store;
intervention ticks (and prior demos) also go to the demo store. An intervention is a
fragment of an episode, so it is stored with the frames before it as context (its
first stack is the real one) and, when the episode goes on after it, the next frame
(what its last transition bootstraps from).

Episode ends are terminal: success, the time limit and an interrupted episode all end
the return there, with no bootstrap (the stated way HIL-SERL and the user's fork
treat time limits). A window that reaches the end of an intervention fragment that
the episode survived is cut there and bootstraps from the frame after it.

Thread safety: one lock around every write and every sample, so a sample never sees a
half-written row, and a row being overwritten in the ring is never read.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Step:
    """One control tick as the actor stores it: the action is the one executed."""

    frame: np.ndarray  # (C, H, W) uint8, the observation this action was taken on
    state: np.ndarray  # (S,) float32
    action: np.ndarray  # (A,) float32
    reward: float
    terminated: bool  # success: the episode ends here
    truncated: bool = False  # the time limit (or an interruption) ends it here
    is_intervention: bool = False

    @property
    def ends_episode(self) -> bool:
        return self.terminated or self.truncated


@dataclass
class Batch:
    """Sampled transitions, ready for the learner (numpy; the learner moves them to torch)."""

    frames: np.ndarray  # (B, stack, C, H, W) uint8
    states: np.ndarray  # (B, stack, S) float32
    action: np.ndarray  # (B, A) float32
    reward: np.ndarray  # (B,) float32, the discounted n-step sum
    discount: np.ndarray  # (B,) float32, gamma^m, or 0 where the window ended the episode
    next_frames: np.ndarray  # (B, stack, C, H, W) uint8
    next_states: np.ndarray  # (B, stack, S) float32
    is_intervention: np.ndarray  # (B,) bool
    from_demos: np.ndarray  # (B,) bool
    # (B,) absolute rows of the stacks now and next, in their store (the demo store where from_demos):
    # what a frozen encoder's feature cache is keyed by; None for batches not sampled from a buffer
    row: np.ndarray | None = None
    next_row: np.ndarray | None = None


class EpisodeStore:
    """A ring of rows; each row knows where its episode (or fragment) starts and ends.

    Rows are numbered by an absolute counter; row ``i`` lives at ``i % capacity``. A row
    is sampleable when it is a transition (not context), every row its stacks and its
    n-step window need is still in the ring, and the window's bootstrap row (if any)
    has been written.
    """

    def __init__(self, capacity: int, frame_shape: tuple[int, ...], state_dim: int, action_dim: int,
                 frame_stack: int = 3, n_step: int = 3, gamma: float = 0.99):
        if capacity < 1 or frame_stack < 1 or n_step < 1 or not 0.0 <= gamma <= 1.0:
            raise ValueError("capacity, frame_stack and n_step must be >= 1 and gamma in [0, 1]")
        self.capacity, self.stack, self.n, self.gamma = capacity, frame_stack, n_step, gamma
        self.frame = np.zeros((capacity, *frame_shape), dtype=np.uint8)
        self.state = np.zeros((capacity, state_dim), dtype=np.float32)
        self.action = np.zeros((capacity, action_dim), dtype=np.float32)
        self.reward = np.zeros(capacity, dtype=np.float32)
        self.terminal = np.zeros(capacity, dtype=bool)  # the transition ends its episode: no bootstrap
        self.sampleable = np.zeros(capacity, dtype=bool)  # False: context for stacks and bootstraps only
        self.intervention = np.zeros(capacity, dtype=bool)
        self.start = np.zeros(capacity, dtype=np.int64)  # absolute row of the episode's (fragment's) first row
        self.run_end = np.full(capacity, -1, dtype=np.int64)  # its last transition row; -1 while still open
        self.written = 0  # absolute rows written so far
        self._open_start: int | None = None

    # ------------------------------------------------------------------ writing

    @property
    def bytes_per_row(self) -> int:
        arrays = (self.frame, self.state, self.action, self.reward, self.terminal, self.sampleable,
                  self.intervention, self.start, self.run_end)
        return sum(a.nbytes for a in arrays) // self.capacity

    def __len__(self) -> int:
        return min(self.written, self.capacity)

    def begin(self) -> None:
        """Start an episode (or fragment); an open one is closed first."""
        if self._open_start is not None:
            self.close()
        self._open_start = self.written

    def append(self, frame: np.ndarray, state: np.ndarray, action: np.ndarray | None = None, reward: float = 0.0,
               terminal: bool = False, sampleable: bool = True, intervention: bool = False) -> None:
        """One row of the open episode; ``sampleable=False`` rows are context (no action)."""
        if self._open_start is None:
            raise RuntimeError("begin() an episode before appending to it")
        i = self.written % self.capacity
        self.frame[i] = frame
        self.state[i] = state
        self.action[i] = 0.0 if action is None else action
        self.reward[i] = reward
        self.terminal[i] = terminal
        self.sampleable[i] = sampleable
        self.intervention[i] = intervention
        self.start[i] = self._open_start
        self.run_end[i] = -1
        self.written += 1

    def close(self) -> None:
        """End the open episode: its transitions learn where their run ends.

        The last transition is terminal unless a context row follows it (an intervention
        the episode survived): nothing bootstraps across into another episode's rows.
        """
        if self._open_start is None:
            return
        first, stop = self._open_start, self.written
        rows = np.arange(max(first, stop - self.capacity), stop)
        transitions = rows[self.sampleable[rows % self.capacity]]
        if transitions.size:
            self.run_end[rows % self.capacity] = transitions[-1]
            if transitions[-1] == stop - 1:
                self.terminal[transitions[-1] % self.capacity] = True
        self._open_start = None

    def drop_open(self) -> int:
        """Make the open episode's rows unsampleable and close it; returns how many rows it had."""
        if self._open_start is None:
            return 0
        first = self._open_start
        self._open_start = None
        return self.drop_since(first)

    def drop_since(self, first: int) -> int:
        """Make absolute rows ``first`` onward unsampleable (they stay as dead context)."""
        rows = np.arange(max(first, self.written - self.capacity), self.written)
        self.sampleable[rows % self.capacity] = False
        return len(rows)

    # ------------------------------------------------------------------ sampling

    def _window_end(self, rows: np.ndarray) -> np.ndarray:
        """The last transition of each row's n-step window: n - 1 ahead, or its run's end."""
        run_end = self.run_end[rows % self.capacity]
        return np.where(run_end >= 0, np.minimum(rows + self.n - 1, run_end), rows + self.n - 1)

    def _valid(self, rows: np.ndarray) -> np.ndarray:
        """Which absolute rows can be sampled now."""
        oldest = max(0, self.written - self.capacity)
        idx = rows % self.capacity
        ok = self.sampleable[idx] & (np.maximum(self.start[idx], rows - (self.stack - 1)) >= oldest)
        last = self._window_end(rows)
        # An open run has no terminal yet; a closed one bootstraps only from a context row after it.
        needs_next = (self.run_end[idx] < 0) | ~self.terminal[last % self.capacity]
        return ok & (~needs_next | (last + 1 < self.written))

    def sample_rows(self, count: int, rng: np.random.Generator, rounds: int = 100) -> np.ndarray:
        """``count`` valid absolute rows, uniformly (rejection sampling over the ring)."""
        oldest = max(0, self.written - self.capacity)
        out = np.empty(0, dtype=np.int64)
        if self.written == 0:
            raise RuntimeError("the replay store holds too few sampleable transitions")
        for _ in range(rounds):
            rows = rng.integers(oldest, self.written, size=max(2 * count, 16))
            out = np.concatenate([out, rows[self._valid(rows)]])
            if out.size >= count:
                return out[:count]
        raise RuntimeError("the replay store holds too few sampleable transitions")

    def has_transitions(self) -> bool:
        """Whether any row can be sampled now (a scan of the ring: for tests and reports, not the hot path)."""
        oldest = max(0, self.written - self.capacity)
        return bool(self._valid(np.arange(oldest, self.written)).any())

    def _stack_rows(self, rows: np.ndarray) -> np.ndarray:
        """(B, stack) absolute rows of each row's stack, oldest first, clamped to its episode start."""
        offsets = np.arange(-(self.stack - 1), 1)
        return np.maximum(rows[:, None] + offsets[None, :], self.start[rows % self.capacity][:, None])

    def gather(self, rows: np.ndarray) -> dict[str, np.ndarray]:
        """Stacks, actions and n-step returns of the given valid rows."""
        idx = rows % self.capacity
        last = self._window_end(rows)
        span = last - rows + 1  # transitions in each window
        reward = np.zeros(len(rows), dtype=np.float64)
        for k in range(self.n):
            inside = k < span
            reward += np.where(inside, self.gamma**k * self.reward[(rows + k) % self.capacity], 0.0)
        ended = self.terminal[last % self.capacity]
        discount = np.where(ended, 0.0, self.gamma**span)
        nxt = np.where(ended, last, last + 1)  # a terminal window's next stack is never used
        now_stack, next_stack = self._stack_rows(rows) % self.capacity, self._stack_rows(nxt) % self.capacity
        return {
            "frames": self.frame[now_stack], "states": self.state[now_stack], "action": self.action[idx],
            "reward": reward.astype(np.float32), "discount": discount.astype(np.float32),
            "next_frames": self.frame[next_stack], "next_states": self.state[next_stack],
            "is_intervention": self.intervention[idx], "row": rows, "next_row": nxt,
        }


class ReplayBuffer:
    """The online store and the demo store behind one lock; RLPD sampling half and half."""

    def __init__(self, capacity: int, frame_shape: tuple[int, ...], state_dim: int, action_dim: int,
                 frame_stack: int = 3, n_step: int = 3, gamma: float = 0.99, demo_capacity: int | None = None,
                 seed: int | None = None):
        args = (frame_shape, state_dim, action_dim, frame_stack, n_step, gamma)
        self.online = EpisodeStore(capacity, *args)
        self.demos = EpisodeStore(demo_capacity or capacity, *args)
        self.stack = frame_stack
        self._lock = threading.Lock()
        self._rng = np.random.default_rng(seed)
        self._recent: list[Step] = []  # the open episode's last frame_stack - 1 steps: an intervention's context
        self._in_fragment = False
        self._demos_before = 0  # the demo store's rows when the open episode began

    # ------------------------------------------------------------------ the actor's side

    def begin_episode(self) -> None:
        with self._lock:
            self._close_fragment(None)
            self.online.begin()
            self._recent = []
            self._demos_before = self.demos.written

    def add(self, step: Step) -> None:
        """One tick of the open episode; the last one has ``terminated`` or ``truncated`` set."""
        with self._lock:
            ends = step.ends_episode
            self.online.append(step.frame, step.state, step.action, step.reward, ends,
                               intervention=step.is_intervention)
            if step.is_intervention:
                if not self._in_fragment:
                    self.demos.begin()
                    for before in self._recent:  # the real stack the fragment starts from
                        self.demos.append(before.frame, before.state, sampleable=False)
                    self._in_fragment = True
                self.demos.append(step.frame, step.state, step.action, step.reward, ends, intervention=True)
            elif self._in_fragment:
                self._close_fragment(step)
            self._recent = (self._recent + [step])[-(self.stack - 1):] if self.stack > 1 else []
            if ends:
                self._close_fragment(None)
                self.online.close()

    def end_episode(self) -> None:
        """Close an episode that stopped without a terminal step: its last step becomes terminal."""
        with self._lock:
            self._close_fragment(None)
            self.online.close()

    def discard_episode(self) -> int:
        """Throw the open episode away: its rows (and its intervention fragments in the demo store)
        are never sampled again; their slots are reused as the ring turns. Returns the rows dropped.
        The learner may have sampled them while the episode ran: a few updates, not the buffer."""
        with self._lock:
            self._close_fragment(None)
            dropped = self.online.drop_open()
            self.demos.drop_since(self._demos_before)
            self._recent = []
            return dropped

    def _close_fragment(self, after: Step | None) -> None:
        if not self._in_fragment:
            return
        if after is not None:  # the episode went on: the frame the fragment's last transition bootstraps from
            self.demos.append(after.frame, after.state, sampleable=False)
        self.demos.close()
        self._in_fragment = False

    def add_demo_episode(self, steps: list[Step]) -> None:
        """A whole prior demonstration (e.g. from a recording) into the demo store."""
        with self._lock:
            self.demos.begin()
            for s in steps:
                self.demos.append(s.frame, s.state, s.action, s.reward, s.ends_episode, intervention=True)
            self.demos.close()  # its last step is terminal

    # ------------------------------------------------------------------ the learner's side

    def sample(self, batch_size: int) -> Batch:
        """Half from the online store, half from the demos (all from one while the other has none)."""
        with self._lock:
            # a few rejection rounds tell a store with transitions from one without, no scan needed
            demo_rows, online_rows = self._try_rows(self.demos, batch_size), self._try_rows(self.online, batch_size)
            if demo_rows is None and online_rows is None:
                raise RuntimeError("the replay store holds too few sampleable transitions")
            if demo_rows is not None and online_rows is not None:
                half = batch_size // 2
                online_rows, demo_rows = online_rows[:batch_size - half], demo_rows[:half]
            gathered = []
            for store, rows, is_demo in ((self.online, online_rows, False), (self.demos, demo_rows, True)):
                if rows is None:
                    continue
                g = store.gather(rows)
                g["from_demos"] = np.full(len(rows), is_demo)
                gathered.append(g)
        return Batch(**{k: np.concatenate([g[k] for g in gathered]) for k in gathered[0]})

    def reseed(self, seed: int) -> None:
        """A new sampling stream (a resumed session must not replay the last one's draws)."""
        with self._lock:
            self._rng = np.random.default_rng(seed)

    def _try_rows(self, store: EpisodeStore, count: int) -> np.ndarray | None:
        try:
            return store.sample_rows(count, self._rng, rounds=8)
        except RuntimeError:
            return None

    def __len__(self) -> int:
        return len(self.online)

    @property
    def bytes_per_transition(self) -> int:
        return self.online.bytes_per_row
