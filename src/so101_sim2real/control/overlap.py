"""Perception of frame t+1 while the loop acts on frame t: the period of the slowest stage, not the sum.

On a real arm one tick is: grab a camera frame, run two networks on it, ask the
policy, send the targets. Done in that order, the period is the sum of the stages
(about 75-190 ms on a 2-core CPU, nearly all perception). Here the camera and the
networks run in a thread of their own, frame after frame, while the loop takes the
newest complete observation, acts on it and sends the command; the period becomes
that of perception alone. The policy never sees the same observation twice and never
a half-made one: :meth:`observe` waits for a frame newer than the last it returned.

Between episodes nothing asks for frames (the arm's reset, the learner catching up): after
``idle_after_s`` from the last answer with no request waiting, the thread rests, so
perception's cores go to the learner, whose turn that is. The next request wakes it and
waits for a frame captured after the request: the frames made before, the one in progress
when it came, and an error met before, all show an arm that has moved since.

Each observation carries ``captured_at`` (``time.monotonic()`` when its camera read
began), so a recording shows the true latency from photon to command.

Only where it is safe: on a real camera, or a twin camera that renders under the
emulator's lock. The plain twin steps its physics in the loop's own thread, so a
render from another thread could see half a step.
"""

from __future__ import annotations

import threading
import time
from dataclasses import replace

from so101_sim2real.cameras import CameraStopped
from so101_sim2real.interfaces import Perceived, Perception

WAIT_S = 2.0  # no new observation in this long: the camera (or the networks) stopped
RETRY_S = 0.1  # after a failed observation the thread tries again this much later (a camera coming back)
IDLE_AFTER_S = 2.0  # no request this long after the last answer (longer than a loop's period): between episodes
REST_POLL_S = 0.1  # a resting thread looks for the stop this often (a request wakes it at once)


class OverlappedPerception:
    """A perception run ahead in a background thread; :meth:`observe` returns the newest complete frame."""

    def __init__(self, inner: Perception, with_rgb: bool = False, wait_s: float = WAIT_S,
                 idle_after_s: float = IDLE_AFTER_S):
        self.inner, self.with_rgb, self.wait_s, self.idle_after_s = inner, with_rgb, wait_s, idle_after_s
        self._ready = threading.Condition()
        self._latest: Perceived | None = None
        self._made = self._taken = 0
        self._answered = time.monotonic()  # when the last request was answered (or refused)
        self._waiting = 0  # requests waiting now
        self._fresh_after = 0.0  # frames captured before this are stale (a request that ended a rest)
        self.rests = 0  # times the thread rested, nobody asking
        self._error: BaseException | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="perception-ahead", daemon=True)
        self._thread.start()

    @property
    def last_timing(self):  # noqa: ANN201 - the inner perception's per-stage timing, for the profiles
        return getattr(self.inner, "last_timing", None)

    @property
    def backend_line(self) -> str | None:
        """Which backend runs the inner perception's networks, and why."""
        return getattr(self.inner, "backend_line", None)

    @property
    def example_models(self) -> list[str]:
        """The inner perception's networks on random example weights."""
        return getattr(self.inner, "example_models", [])

    def _unasked(self) -> bool:
        return not self._waiting and time.monotonic() - self._answered > self.idle_after_s

    def _rest_while_unasked(self) -> None:
        """Wait while the loop asks for nothing (between episodes); :meth:`observe` wakes it."""
        with self._ready:
            if not self._unasked():
                return
            self.rests += 1
            while not self._stop.is_set() and self._unasked():
                self._ready.wait(REST_POLL_S)

    def _run(self) -> None:
        while not self._stop.is_set():
            self._rest_while_unasked()
            if self._stop.is_set():
                return
            started = time.monotonic()
            try:
                seen = self.inner.observe(self.with_rgb)
            except Exception as exc:  # noqa: BLE001 - handed to the loop's thread, which decides
                with self._ready:
                    self._error = exc
                    self._ready.notify_all()
                self._stop.wait(RETRY_S)  # and try again: a paused session waits for the camera to come back
                continue
            with self._ready:
                self._latest = replace(seen, captured_at=started) if seen.captured_at is None else seen
                self._made += 1
                self._error = None
                self._ready.notify_all()

    def observe(self, with_rgb: bool = False) -> Perceived:
        """The newest observation not returned before, waiting for it if need be; an error the
        thread met since is raised here, in the loop's thread, once."""
        asked = time.monotonic()
        deadline = asked + self.wait_s
        with self._ready:
            if asked - self._answered > self.idle_after_s:  # between episodes: all it has is old
                self._fresh_after, self._taken, self._error = asked, self._made, None
            self._waiting += 1
            self._ready.notify_all()  # a resting thread goes back to work
            try:
                return self._newest(deadline)
            finally:
                self._waiting -= 1
                self._answered = time.monotonic()

    def _newest(self, deadline: float) -> Perceived:
        """The newest fresh frame not returned before (under the lock), waiting until ``deadline``."""
        while True:
            if self._made != self._taken:
                latest = self._latest
                assert latest is not None  # made at least once
                self._taken = self._made
                if (latest.captured_at or 0.0) >= self._fresh_after:
                    return latest
                continue  # begun before the request that ended a rest: stale
            if self._error is not None:
                error, self._error = self._error, None
                raise error
            left = deadline - time.monotonic()
            if left <= 0:
                raise CameraStopped(f"no new observation in {self.wait_s:.1f} s: the camera or the perception "
                                    f"stopped")
            self._ready.wait(left)

    @property
    def camera(self) -> _NextObservation:
        """What a paused session probes: a new observation through the thread (never a second reader
        on the camera)."""
        return _NextObservation(self)

    def close(self) -> None:
        self._stop.set()
        with self._ready:
            self._ready.notify_all()
        self._thread.join(timeout=self.wait_s + 5.0)
        self.inner.close()


class _NextObservation:
    """``read`` = one new observation from the thread: the camera answers again."""

    def __init__(self, owner: OverlappedPerception):
        self.owner = owner

    def read(self) -> Perceived:
        return self.owner.observe()
