"""The emulated arm's camera: ``so101 emulate --twin`` renders its wrist camera for other processes.

A real arm's camera is a USB device beside its serial port; the emulated arm's is this
server, on a Unix socket named after the emulator's pty (:func:`~so101_sim2real.cameras.twin_socket`),
read by :class:`~so101_sim2real.cameras.TwinCamera` (``--camera twin``). A frame is the twin's
RGB at the real camera's size, rendered on request from the joints and the cube as they are
at that moment. The world lock is held only while the scene is copied, never while it is
drawn, so the servos keep answering during a render.

The same connection plays the person beside the arm: at each episode start the client says
where the cube goes (what a real operator is told) and the server puts it there. Frames read
since then count the episode's ticks: :meth:`TwinCameraServer.now` is the session clock that
a scripted leader hand can wait for ("episode 2, step 15").
"""

from __future__ import annotations

import contextlib
import json
import select
import socket
import threading
from pathlib import Path
from typing import TYPE_CHECKING

import mujoco
import numpy as np

from so101_sim2real.cameras import twin_socket
from so101_sim2real.errors import So101Error
from so101_sim2real.sim import scene as S
from so101_sim2real.sim.camera import close_renderer, offscreen_renderer
from so101_sim2real.sim.camera_effects import picture_effects
from so101_sim2real.spec import ObservationSpec

if TYPE_CHECKING:
    from so101_sim2real.control.twin_bus import TwinBridge


class TwinCameraServer:
    """Serves the twin's wrist camera (and the operator's hands) of the emulated arm on ``port``."""

    def __init__(self, bridge: TwinBridge, spec: ObservationSpec, port: str):
        self.bridge, self.size = bridge, spec.source_size
        self.path: Path = twin_socket(port)
        self._listener: socket.socket | None = None
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._conns: set[socket.socket] = set()  # the connected clients, closed by stop()
        self._conns_lock = threading.Lock()
        self._clock_lock = threading.Lock()
        self._episode, self._step = 0, 0

    # the session clock -------------------------------------------------------------------------

    def now(self) -> tuple[int, int] | None:
        """(episode, frames read since it started); None before the client's first episode."""
        with self._clock_lock:
            return (self._episode, self._step) if self._episode else None

    # serving ---------------------------------------------------------------------------------

    def start(self) -> str:
        """Listen; the socket's path (a stale one, left by a killed emulator of this pty, is replaced)."""
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            self.path.unlink(missing_ok=True)
            listener.bind(str(self.path))
        except OSError as exc:
            listener.close()
            raise So101Error(f"the emulated arm's camera cannot listen at {self.path} ({exc.strerror}); remove "
                             f"that file if another emulator left it") from None
        listener.listen(4)
        listener.settimeout(0.2)
        self._listener = listener
        thread = threading.Thread(target=self._accept, name="twin-camera", daemon=True)
        thread.start()
        self._threads.append(thread)
        return str(self.path)

    def stop(self) -> None:
        """Stop serving: no new client, and every connected one sees its connection close at once
        (a client thread waiting in ``select`` would otherwise answer one more request)."""
        self._stop.set()
        if self._listener is not None:
            self._listener.close()
        self.path.unlink(missing_ok=True)
        with self._conns_lock:
            conns = list(self._conns)
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        for thread in list(self._threads):
            thread.join(timeout=3)

    def _accept(self) -> None:
        listener = self._listener
        assert listener is not None  # start() listens before this thread runs
        while not self._stop.is_set():
            try:
                conn, _ = listener.accept()
            except (TimeoutError, OSError):
                continue
            with self._conns_lock:
                self._conns.add(conn)
            thread = threading.Thread(target=self._serve, args=(conn,), name="twin-camera-client", daemon=True)
            thread.start()
            self._threads = [t for t in self._threads if t.is_alive()] + [thread]

    def _serve(self, conn: socket.socket) -> None:
        """One client: requests in order; the renderer lives in this thread (its GL context is bound here).

        A client may be idle for a minute (loading its networks, resetting an episode): the socket
        stays blocking and ``select`` looks at the stop flag between requests."""
        renderer = None
        stream = conn.makefile("rb")
        try:
            while not self._stop.is_set():
                if not select.select([conn], [], [], 0.5)[0]:
                    continue
                line = stream.readline()
                if not line:
                    return
                try:
                    request = json.loads(line)
                    if not isinstance(request, dict):
                        raise ValueError("not an object")
                    if request.get("op") == "frame" and renderer is None:
                        renderer = _Renderer(self.bridge, self.size)
                    reply = self._answer(request, renderer)
                except (ValueError, KeyError, TypeError, So101Error) as exc:  # this request, not the server
                    reply = (_header({"error": f"{type(exc).__name__}: {exc}"}),)
                for part in reply:  # a frame's pixels go out as they are, not copied into one message
                    conn.sendall(part)
        except OSError:
            return  # the client went away: it reconnects if it wants more
        finally:
            if renderer is not None:
                renderer.close()
            stream.close()
            with self._conns_lock:
                self._conns.discard(conn)
            conn.close()

    def _answer(self, request: dict, renderer: _Renderer | None) -> tuple[bytes | memoryview, ...]:
        op = request.get("op")
        h, w = self.size
        if op == "hello":  # a new session: its episodes count from its own first
            with self._clock_lock:
                self._episode, self._step = 0, 0
            return (_header({"height": h, "width": w}),)
        if op == "frame":
            assert renderer is not None  # _serve makes one for the first frame request
            rgb, t = renderer.render()
            with self._clock_lock:
                self._step += 1
            return _header({"height": h, "width": w, "time": t, "bytes": rgb.nbytes}), rgb.data.cast("B")
        if op == "episode":
            cube = request.get("cube_xy")
            if cube is not None:
                with self.bridge.lock:
                    self.bridge.task.place_cube(float(cube[0]), float(cube[1]))
            with self._clock_lock:
                self._episode, self._step = int(request["episode"]), 0
            return (_header({"ok": True}),)
        return (_header({"error": f"unknown request {op!r}"}),)


def _header(fields: dict) -> bytes:
    return json.dumps(fields).encode() + b"\n"


class _Renderer:
    """The wrist camera's RGB, drawn outside the world lock from a scene copied under it."""

    def __init__(self, bridge: TwinBridge, size: tuple[int, int]):
        self.bridge = bridge
        self.renderer = offscreen_renderer(bridge.task.model, *size)
        self.options = mujoco.MjvOption()
        self.options.sitegroup[:] = 0  # the TCP and base markers are not in a real picture
        self.effects = picture_effects(bridge.task.model, bridge.standin, size)
        self._camera_id = bridge.task.model.camera(S.WRIST_CAMERA).id

    def render(self) -> tuple[np.ndarray, float]:
        spin = np.zeros(6)
        with self.bridge.lock:
            self.renderer.update_scene(self.bridge.task.data, camera=S.WRIST_CAMERA, scene_option=self.options)
            t = float(self.bridge.task.data.time)
            if self.effects is not None:
                mujoco.mj_objectVelocity(self.bridge.task.model, self.bridge.task.data, mujoco.mjtObj.mjOBJ_CAMERA,
                                         self._camera_id, spin, 1)
        rgb = self.renderer.render()
        return (rgb if self.effects is None else self.effects.apply(rgb, spin[:3])), t

    def close(self) -> None:
        close_renderer(self.renderer)
