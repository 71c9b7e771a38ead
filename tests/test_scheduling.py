"""The actor first, the learner with what is left: thread scheduling classes, the whole-tick timer,
and what a session says about its threads."""

import os
import sys
import threading
import time

import pytest

from so101_sim2real.control.timing import TickTimer
from so101_sim2real.scheduling import background_thread, process_threads

linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="per-thread scheduling classes: Linux")


def _in_thread(fn):
    """Run ``fn`` in a new thread; what it returned (or raised)."""
    out = {}

    def run():
        try:
            out["value"] = fn()
        except BaseException as exc:  # noqa: BLE001 - handed back to the test
            out["error"] = exc

    t = threading.Thread(target=run)
    t.start()
    t.join()
    if "error" in out:
        raise out["error"]
    return out["value"]


def _mine(tid: int):
    return next(t for t in process_threads() if t.tid == tid)


@linux_only
def test_a_background_thread_is_in_the_idle_class_and_the_threads_it_starts_inherit_it():
    def learner():
        got = background_thread()
        pool_thread = _in_thread(lambda: _mine(threading.get_native_id()))  # as a torch/OpenMP pool starts its own
        return got, _mine(threading.get_native_id()), pool_thread

    got, me, pool = learner_result = _in_thread(learner)
    assert got == "SCHED_IDLE", learner_result
    assert me.policy == "idle" and pool.policy == "idle"
    assert _mine(threading.get_native_id()).policy == "normal"  # the caller (the actor) is untouched


@linux_only
def test_without_the_idle_class_a_background_thread_is_nice_19():
    got, me = _in_thread(lambda: (background_thread(idle=False), _mine(threading.get_native_id())))
    assert got == "nice 19" and me.nice == 19 and me.policy == "normal"
    assert _mine(threading.get_native_id()).nice == os.getpriority(os.PRIO_PROCESS, 0)


@linux_only
def test_the_thread_table_counts_each_threads_cpu_time():
    me = threading.get_native_id()
    before = _mine(me).cpu_s
    end = time.thread_time() + 0.1
    while time.thread_time() < end:
        pass
    assert _mine(me).cpu_s >= before + 0.05


def test_the_tick_timer_leaves_out_the_rate_keepers_sleep_and_counts_waits():
    timer = TickTimer()
    timer.start()
    timer.lap()  # only marks: the first tick begins
    t0 = time.perf_counter()
    time.sleep(0.05)  # the rate keeper's sleep...
    timer.lap(idle_s=time.perf_counter() - t0)  # ...left out of the tick, measured as the runner measures it
    end = time.thread_time() + 0.02
    while time.thread_time() < end:  # a tick of work
        pass
    time.sleep(0.03)  # and of waiting (a frame, a lock)
    timer.lap()
    assert len(timer.wall_s) == 2
    assert timer.wall_s[0] < 0.02  # the sleep is not a tick (what is left: the two laps' own cost)
    assert timer.wall_s[1] >= 0.05
    waited = timer.wall_s[1] - timer.cpu_s[1]
    assert waited >= 0.025 and timer.cpu_s[1] >= 0.02  # the sleep inside the tick is a wait, the loop is CPU
    s = timer.summary()
    assert s["count"] == 2 and s["max_ms"] >= 50 and s["wait_p95_ms"] >= 25
    timer.start()  # a new episode: the reset in between is no tick
    time.sleep(0.02)
    timer.lap()
    assert len(timer.wall_s) == 2


def test_a_session_says_its_threads_and_warns_when_actor_and_learner_ask_for_more_cores(monkeypatch):
    from so101_sim2real.control.description import describe
    from so101_sim2real.hilserl.options import RunOptions, thread_layout

    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    default = RunOptions(describe(ckpt="c.pt", perception="real", seg_ckpt="s.ckpt"))
    note, warning = thread_layout(default, 1)
    assert note == "threads: actor 1 (policy and perception), learner 1 in the OS's idle class, on 2 cores"
    assert warning is None
    given = RunOptions(describe(ckpt="c.pt", perception="real", seg_ckpt="s.ckpt", perception_threads=2))
    _, warning = thread_layout(given, 1)
    assert warning is not None and "ask for more than the 2 cores" in warning and "lower it to 1" in warning
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0}, raising=False)
    assert thread_layout(default, 1)[1] is None  # one core and nothing given: nothing the person can change
