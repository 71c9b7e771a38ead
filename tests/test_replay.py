"""The shared replay buffer: stacks and n-step returns rebuilt exactly as the policy saw them."""

import threading

import numpy as np
import pytest

from so101_sim2real.hilserl.replay import EpisodeStore, ReplayBuffer, Step

SHAPE, S, A = (2, 4, 4), 3, 4


def step(value: float, reward: float = 0.0, end: bool = False, truncated: bool = False,
         intervention: bool = False, shape=SHAPE) -> Step:
    """A step whose frame, state and action all encode ``value`` (so rows can be identified)."""
    return Step(np.full(shape, value, np.uint8), np.full(S, value, np.float32), np.full(A, value, np.float32),
                reward, end, truncated, intervention)


def ids(frames: np.ndarray) -> list[int]:
    return [int(f[0, 0, 0]) for f in frames]


def episode(buffer: ReplayBuffer, values, rewards=None, end=True, intervened=()):
    buffer.begin_episode()
    for i, v in enumerate(values):
        last = end and i == len(values) - 1
        buffer.add(step(v, 0.0 if rewards is None else rewards[i], end=last, intervention=v in intervened))


def gather(store: EpisodeStore, row: int) -> dict:
    return {k: v[0] for k, v in store.gather(np.array([row])).items()}


def test_a_transition_costs_under_15_kb_at_the_users_observation_size():
    buffer = ReplayBuffer(1000, (2, 84, 84), 18, 4)
    assert buffer.bytes_per_transition <= 15 * 1024
    stacked = 2 * (3 * 2 * 84 * 84) + 2 * 3 * 18 * 4  # DrQ-v2 style: obs and next obs stacked, uint8
    assert buffer.bytes_per_transition < stacked / 5


def test_stacks_are_rebuilt_oldest_first_and_never_cross_an_episode_start():
    buffer = ReplayBuffer(100, SHAPE, S, A, gamma=0.5)
    episode(buffer, [10, 11, 12, 13, 14])
    episode(buffer, [20, 21, 22, 23, 24])
    on = buffer.online
    assert ids(gather(on, 0)["frames"]) == [10, 10, 10]  # a reset fills the stack with the first frame
    assert ids(gather(on, 1)["frames"]) == [10, 10, 11]
    assert ids(gather(on, 4)["frames"]) == [12, 13, 14]
    assert ids(gather(on, 5)["frames"]) == [20, 20, 20]  # not 13, 14, 20
    assert ids(gather(on, 6)["frames"]) == [20, 20, 21]
    assert gather(on, 6)["states"][:, 0].tolist() == [20, 20, 21]
    assert ids(gather(on, 0)["next_frames"]) == [11, 12, 13]  # n = 3 ahead


def test_n_step_returns_stop_at_the_episode_end_without_bootstrap():
    buffer = ReplayBuffer(100, SHAPE, S, A, n_step=3, gamma=0.5)
    episode(buffer, [10, 11, 12, 13, 14], rewards=[1.0, 2.0, 4.0, 8.0, 16.0])
    on = buffer.online
    g = gather(on, 0)
    assert g["reward"] == pytest.approx(1 + 0.5 * 2 + 0.25 * 4) and g["discount"] == pytest.approx(0.125)
    g = gather(on, 3)  # the window reaches the terminal step
    assert g["reward"] == pytest.approx(8 + 0.5 * 16) and g["discount"] == 0.0
    assert gather(on, 4)["discount"] == 0.0


def test_an_open_episode_is_sampled_only_where_the_bootstrap_frame_exists():
    buffer = ReplayBuffer(100, SHAPE, S, A, n_step=3)
    buffer.begin_episode()
    for v in (10, 11, 12):
        buffer.add(step(v))
    with pytest.raises(RuntimeError, match="too few"):
        buffer.sample(4)
    buffer.add(step(13))
    batch = buffer.sample(8)
    assert set(ids(batch.frames[:, -1])) == {10} and set(ids(batch.next_frames[:, -1])) == {13}


def test_an_episode_ended_without_a_terminal_step_does_not_bootstrap_into_the_next():
    buffer = ReplayBuffer(100, SHAPE, S, A, n_step=3)
    episode(buffer, [10, 11, 12, 13], end=False)
    buffer.end_episode()
    episode(buffer, [20, 21, 22, 23, 24])
    g = gather(buffer.online, 2)
    assert g["discount"] == 0.0  # 12's window ends at 13, the episode's end
    batch = buffer.sample(64)
    for now, nxt, d in zip(batch.frames, batch.next_frames, batch.discount, strict=True):
        if d > 0:
            assert ids(now)[-1] // 10 == ids(nxt)[-1] // 10  # bootstrap within the same episode


def test_the_ring_never_serves_an_overwritten_row():
    buffer = ReplayBuffer(16, SHAPE, S, A, n_step=3, seed=0)
    for e in range(1, 8):
        episode(buffer, [10 * e + i for i in range(6)])
    batch = buffer.sample(256)
    # A 16-row ring holds the last 16 of 42 rows: 52-55 of episode 5, then episodes 6 and 7. Episode 5's
    # stacks start at 50, so only 54 and 55 still have their whole stack (52, 53, 54 and 53, 54, 55).
    for now, nxt in zip(batch.frames, batch.next_frames, strict=True):
        for stack in (ids(now), ids(nxt)):
            assert min(stack) >= 52 and len({v // 10 for v in stack}) == 1  # one episode, still in the ring
            assert all(b - a in (0, 1) for a, b in zip(stack, stack[1:], strict=False))
    assert min(ids(batch.frames[:, -1])) == 54


def test_an_intervention_goes_to_the_demo_store_with_its_real_context():
    buffer = ReplayBuffer(100, SHAPE, S, A, n_step=3, gamma=0.5)
    episode(buffer, list(range(10, 20)), rewards=[1.0] * 10, intervened={14, 15, 16})
    demos = buffer.demos
    transitions = [r for r in range(demos.written) if demos.sampleable[r]]
    assert [int(demos.frame[r][0, 0, 0]) for r in transitions] == [14, 15, 16]
    first = gather(demos, transitions[0])
    assert ids(first["frames"]) == [12, 13, 14]  # the stack the human took over from, not copies of 14
    last = gather(demos, transitions[-1])
    assert ids(last["next_frames"]) == [15, 16, 17]  # the frame after the fragment, to bootstrap from
    assert last["discount"] == pytest.approx(0.5) and last["reward"] == pytest.approx(1.0)
    middle = gather(demos, transitions[1])  # its window is cut at the fragment's end
    assert middle["reward"] == pytest.approx(1.5) and middle["discount"] == pytest.approx(0.25)
    assert middle["is_intervention"]


def test_an_intervention_until_the_episode_ends_is_terminal_in_the_demo_store():
    buffer = ReplayBuffer(100, SHAPE, S, A)
    episode(buffer, [10, 11, 12, 13], intervened={12, 13})
    demos = buffer.demos
    transitions = [r for r in range(demos.written) if demos.sampleable[r]]
    assert gather(demos, transitions[-1])["discount"] == 0.0


def test_batches_are_half_demos_once_there_are_demos():
    buffer = ReplayBuffer(100, SHAPE, S, A, seed=1)
    episode(buffer, list(range(10, 20)))
    assert not buffer.sample(8).from_demos.any()
    buffer.add_demo_episode([step(v) for v in (30, 31, 32, 33, 34)])
    batch = buffer.sample(8)
    assert batch.from_demos.tolist() == [False] * 4 + [True] * 4
    assert set(ids(batch.frames[4:, -1])) <= {30, 31, 32, 33, 34}
    assert all(ids(f)[0] >= 30 for f in batch.frames[4:])  # demo stacks from the demo episode only


@pytest.mark.slow
def test_a_sample_never_sees_a_half_written_row():
    big = (2, 84, 84)
    buffer = ReplayBuffer(64, big, S, A, seed=2)
    buffer.begin_episode()
    for v in range(1, 8):
        buffer.add(step(v, end=v == 7, shape=big))
    stop, errors = threading.Event(), []

    def write():
        value = 8
        while not stop.is_set():
            buffer.begin_episode()
            for i in range(6):
                buffer.add(step(value % 250 + 1, end=i == 5, shape=big))
                value += 1

    def read():
        for _ in range(300):
            b = buffer.sample(32)
            for frames, states in zip(b.frames, b.states, strict=True):
                if not all((f == f.flat[0]).all() and s[0] == f.flat[0] for f, s in zip(frames, states,
                                                                                            strict=True)):
                    errors.append("torn row")

    writer = threading.Thread(target=write)
    writer.start()
    try:
        read()
    finally:
        stop.set()
        writer.join()
    assert not errors
