"""A loop that perceives ahead: the newest complete observation, never one twice, errors in the loop's thread."""

import threading
import time

import numpy as np
import pytest

from so101_sim2real.cameras import CameraStopped
from so101_sim2real.control.overlap import OverlappedPerception
from so101_sim2real.errors import DeviceFault
from so101_sim2real.interfaces import Perceived


class Counting:
    """A perception whose n-th observation carries n in its frame; it takes ``work_s`` per frame."""

    def __init__(self, work_s: float = 0.01, fail: set[int] | None = None):
        self.work_s, self.fail, self.made, self.closed = work_s, fail or set(), 0, False
        self.lock = threading.Lock()

    def observe(self, with_rgb: bool = False) -> Perceived:
        time.sleep(self.work_s)
        with self.lock:
            self.made += 1
            n = self.made
        if n in self.fail:
            raise CameraStopped(f"frame {n} lost")
        frame = np.full((2, 4, 4), n % 256, np.uint8)
        return Perceived(frame, frame[0], frame[1].astype(np.float32), None, float(n))

    def close(self) -> None:
        self.closed = True


def test_the_loop_never_gets_an_observation_twice_and_gets_the_newest():
    inner = Counting(work_s=0.005)
    ahead = OverlappedPerception(inner)
    try:
        seen = []
        for _ in range(12):
            seen.append(ahead.observe().timestamp)
            time.sleep(0.02)  # the loop acts for longer than a frame takes: frames pile up meanwhile
        assert all(b > a for a, b in zip(seen, seen[1:], strict=False))  # strictly newer each time
        # it skipped the frames made while the loop was acting: what it got was the newest one
        assert seen[-1] - seen[0] > len(seen)
        latest = ahead.observe()
        assert latest.timestamp >= inner.made - 1  # at most the one in progress is newer
        assert latest.captured_at is not None and latest.captured_at <= time.monotonic()
    finally:
        ahead.close()
    assert inner.closed


def test_perception_runs_while_the_loop_acts():
    inner = Counting(work_s=0.01)
    ahead = OverlappedPerception(inner)
    try:
        ahead.observe()
        before = inner.made
        time.sleep(0.1)  # the loop's policy and command: nothing asks the perception for a frame
        assert inner.made > before + 1  # yet it kept perceiving
    finally:
        ahead.close()


def test_an_error_in_the_thread_is_raised_in_the_loop_once_then_frames_come_again():
    inner = Counting(work_s=0.005, fail={3})
    ahead = OverlappedPerception(inner)
    try:
        got, errors = [], 0
        while len(got) < 4:
            try:
                got.append(ahead.observe().timestamp)
            except CameraStopped:
                errors += 1
            time.sleep(0.03)
        assert errors == 1 and 3.0 not in got
    finally:
        ahead.close()


def test_no_new_observation_in_time_is_a_device_fault():
    inner = Counting(work_s=0.5)
    ahead = OverlappedPerception(inner, wait_s=0.05)
    try:
        with pytest.raises(DeviceFault, match="no new observation"):
            ahead.observe()
    finally:
        ahead.close()


def test_a_paused_session_probes_through_the_thread():
    inner = Counting(work_s=0.005)
    ahead = OverlappedPerception(inner)
    try:
        assert ahead.camera.read().timestamp >= 1.0  # what pause.env_probes calls: a new observation
    finally:
        ahead.close()


def test_a_loop_faster_than_perception_waits_for_the_next_frame():
    inner = Counting(work_s=0.02)
    ahead = OverlappedPerception(inner)
    try:
        seen = [ahead.observe().timestamp for _ in range(6)]  # no acting between: faster than the frames
        assert seen == sorted(set(seen)) and len(set(seen)) == 6
    finally:
        ahead.close()


def test_between_episodes_perception_rests_and_the_next_request_gets_a_frame_captured_after_it():
    """Nobody asks (a reset, the learner's catch-up): the thread stops perceiving, leaving the cores
    to the learner; the next request wakes it and never gets a frame from before the gap."""
    inner = Counting(work_s=0.005)
    ahead = OverlappedPerception(inner, idle_after_s=0.3)
    try:
        ahead.observe()
        time.sleep(0.8)  # the episode ended: no requests
        resting = inner.made
        time.sleep(0.5)
        assert inner.made <= resting + 1 and ahead.rests == 1  # at most the frame in progress was finished
        asked = time.monotonic()
        seen = ahead.observe()
        assert seen.captured_at is not None and seen.captured_at >= asked  # made after the request, not before
        assert seen.timestamp > resting
        for _ in range(5):  # an episode again: requests every tick, no rest
            ahead.observe()
            time.sleep(0.02)
        assert ahead.rests == 1
    finally:
        ahead.close()
    assert inner.closed


def test_the_frame_in_progress_when_a_rest_ends_is_stale_too():
    """A frame begun just before the thread would have rested finishes after the next request: it
    shows the arm before the gap, so the request waits for the one after it."""
    inner = Counting(work_s=0.5)
    ahead = OverlappedPerception(inner, idle_after_s=0.2, wait_s=5.0)
    try:
        ahead.observe()  # answered as a frame ends; the thread begins the next at once
        time.sleep(0.3)  # past idle_after_s, inside that next frame
        asked = time.monotonic()
        seen = ahead.observe()
        assert seen.captured_at is not None and seen.captured_at >= asked
    finally:
        ahead.close()


def test_an_error_met_before_a_rest_is_not_raised_after_it():
    inner = Counting(work_s=0.005, fail=set(range(2, 10_000)))  # the camera fails from its second frame on
    ahead = OverlappedPerception(inner, idle_after_s=0.2)
    try:
        ahead.observe()
        time.sleep(0.5)  # an error is met, then the thread rests with it
        inner.fail = set()  # the camera answers again when the next episode asks
        assert ahead.observe().timestamp > 1
    finally:
        ahead.close()
