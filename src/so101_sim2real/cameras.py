"""Cameras: a USB camera through OpenCV, the emulated arm's camera, and videos or image folders.

Every camera returns :class:`~so101_sim2real.interfaces.Frame` with RGB uint8 (OpenCV's
BGR is converted once, here). The OpenCV camera captures on its own thread so that
grabbing the next frame overlaps with perception; :meth:`OpenCVCamera.read` returns
the newest frame it has not returned yet, waiting only when there is none.
"""

from __future__ import annotations

import json
import os
import socket
import tempfile
import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, Protocol

import cv2
import numpy as np

from so101_sim2real.errors import DeviceFault, So101Error
from so101_sim2real.interfaces import Camera, Frame
from so101_sim2real.spec import SOURCE_SIZE

if TYPE_CHECKING:
    from so101_sim2real.geometry.camera_model import CameraModel

VIDEO_SUFFIXES = {".mp4", ".avi", ".mkv", ".mov", ".webm", ".m4v"}
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"}


class CameraError(So101Error):
    """A camera cannot be opened, or stopped delivering frames."""


class CameraStopped(CameraError, DeviceFault):
    """A live camera gave no new frame in time (unplugged, or held by another program)."""


class CameraExhausted(CameraError):
    """A video or image folder has no frames left."""


class SeekableCamera(Camera, Protocol):
    """A video file or an image folder: how many frames it holds (None: unknown), and a jump to one."""

    @property
    def frame_count(self) -> int | None: ...

    def seek(self, index: int) -> None: ...


def _rgb(bgr: np.ndarray) -> np.ndarray:
    if bgr.ndim == 2:
        return cv2.cvtColor(bgr, cv2.COLOR_GRAY2RGB)
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


class OpenCVCamera:
    """A live camera (an index such as ``0`` or a device path) read on a capture thread.

    When the device goes away the thread tries to reopen it every ``retry_s``; a
    :meth:`read` that gets no new frame within ``timeout_s`` raises :class:`CameraError`.
    """

    def __init__(self, device: int | str, size: tuple[int, int] = SOURCE_SIZE, fps: float = 30.0,
                 timeout_s: float = 2.0, retry_s: float = 0.5):
        self.device, self.size, self.fps = device, size, fps
        self.timeout_s, self.retry_s = timeout_s, retry_s
        self._cond = threading.Condition()
        self._latest: Frame | None = None
        self._returned = 0
        self._stop = threading.Event()
        self.reconnects = 0
        self._cap: cv2.VideoCapture | None = self._open()
        self._thread = threading.Thread(target=self._capture, name=f"camera-{device}", daemon=True)
        self._thread.start()

    def _open(self) -> cv2.VideoCapture:
        cap = cv2.VideoCapture(self.device)
        if not cap.isOpened():
            cap.release()
            raise CameraError(f"camera {self.device}: cannot open it; check that it is plugged in and not used by "
                              f"another program (on Linux: ls /dev/video*)")
        height, width = self.size
        cap.set(cv2.CAP_PROP_FRAME_WIDTH, width)
        cap.set(cv2.CAP_PROP_FRAME_HEIGHT, height)
        cap.set(cv2.CAP_PROP_FPS, self.fps)
        cap.set(cv2.CAP_PROP_BUFFERSIZE, 1)  # the newest frame, not a queue of stale ones
        # read here, before the capture thread owns the device (OpenCV's capture is not thread-safe)
        self._delivers = (int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT)), int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)))
        return cap

    def _capture(self) -> None:
        index = 0
        while not self._stop.is_set():
            ok, bgr = self._cap.read() if self._cap is not None else (False, None)
            if ok and bgr is not None:
                index += 1
                frame = Frame(_rgb(bgr), time.monotonic(), index)
                with self._cond:
                    self._latest = frame
                    self._cond.notify_all()
            else:
                self._reopen()

    def _reopen(self) -> None:
        if self._cap is not None:
            self._cap.release()
            self._cap = None
        if self._stop.wait(self.retry_s):
            return
        try:
            self._cap = self._open()
            self.reconnects += 1
        except CameraError:
            self._cap = None

    def frame_size(self) -> tuple[int, int]:
        """(H, W) the device said it delivers when opened (it may ignore the size asked for)."""
        return self._delivers

    def read(self) -> Frame:
        deadline = time.monotonic() + self.timeout_s
        with self._cond:
            while self._latest is None or self._latest.index == self._returned:
                left = deadline - time.monotonic()
                if left <= 0 or self._stop.is_set():
                    raise CameraStopped(f"camera {self.device}: no new frame for {self.timeout_s:.1f} s (unplugged, "
                                      f"or the stream ended); check the cable and that no other program holds it")
                self._cond.wait(left)
            self._returned = self._latest.index
            return self._latest

    def close(self) -> None:
        self._stop.set()
        with self._cond:
            self._cond.notify_all()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout=2.0)
        if self._cap is not None:
            self._cap.release()
            self._cap = None


class VideoCamera:
    """Frames of a video file in order; its timestamps follow the file's frame rate."""

    def __init__(self, path: str | Path, loop: bool = False):
        self.path, self.loop = Path(path), loop
        self._cap = cv2.VideoCapture(str(self.path))
        if not self._cap.isOpened():
            raise CameraError(f"{self.path}: OpenCV cannot read this video")
        self.fps = self._cap.get(cv2.CAP_PROP_FPS) or 30.0
        self.frames = int(self._cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
        self._index = 0

    def read(self) -> Frame:
        ok, bgr = self._cap.read()
        if not ok and self.loop and self._index > 0:
            self._cap.set(cv2.CAP_PROP_POS_FRAMES, 0)
            ok, bgr = self._cap.read()
        if not ok:
            raise CameraExhausted(f"{self.path}: no frames left after {self._index}")
        self._index += 1
        return Frame(_rgb(bgr), (self._index - 1) / self.fps, self._index)

    def frame_size(self) -> tuple[int, int]:
        """(H, W) of the file's frames, as its header says."""
        return int(self._cap.get(cv2.CAP_PROP_FRAME_HEIGHT)), int(self._cap.get(cv2.CAP_PROP_FRAME_WIDTH))

    @property
    def frame_count(self) -> int | None:
        """Frames in the file as its header says (None: unknown or looped), for a progress bar."""
        return None if self.loop or self.frames <= 0 else self.frames  # some containers say -1

    def seek(self, index: int) -> None:
        """The next read gives frame ``index`` (0 first)."""
        self._cap.set(cv2.CAP_PROP_POS_FRAMES, index)
        self._index = index

    def close(self) -> None:
        self._cap.release()


class ImageFolderCamera:
    """Images of a folder (or one image) in name order, each a frame."""

    def __init__(self, path: str | Path, loop: bool = False):
        self.path, self.loop = Path(path), loop
        if self.path.is_dir():
            self.files = sorted(p for p in self.path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        else:
            self.files = [self.path]
        if not self.files:
            raise CameraError(f"{self.path}: no images ({', '.join(sorted(IMAGE_SUFFIXES))}) in this folder")
        self._index = 0

    def read(self) -> Frame:
        if self._index >= len(self.files) and not (self.loop and self._index):
            raise CameraExhausted(f"{self.path}: no images left after {self._index}")
        path = self.files[self._index % len(self.files)]
        bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if bgr is None:
            raise CameraError(f"{path}: not a readable image")
        self._index += 1
        return Frame(_rgb(bgr), float(self._index - 1), self._index)

    def frame_size(self) -> tuple[int, int]:
        """(H, W) of the first image (every frame is checked again as it is read)."""
        bgr = cv2.imread(str(self.files[0]), cv2.IMREAD_COLOR)
        if bgr is None:
            raise CameraError(f"{self.files[0]}: not a readable image")
        return bgr.shape[0], bgr.shape[1]

    @property
    def frame_count(self) -> int | None:
        return None if self.loop else len(self.files)

    def seek(self, index: int) -> None:
        """The next read gives image ``index`` (0 first)."""
        self._index = index

    @property
    def name(self) -> str:
        """The file the last frame came from."""
        return self.files[(self._index - 1) % len(self.files)].name if self._index else ""

    def close(self) -> None:
        pass


class UndistortedCamera:
    """A camera's frames undistorted to the ideal pinhole image with the same K and size: what
    the twin's camera with these intrinsics renders. This is the one place distortion is
    handled; perception and the twin both see the ideal image.

    Frames at another resolution of the calibrated aspect ratio use the model scaled to it;
    the maps are made once per frame size, not per frame.
    """

    def __init__(self, camera: Camera, model: CameraModel):
        self.camera, self.model = camera, model
        self.active: CameraModel | None = None  # the model at the stream's frame size
        self._maps: tuple[np.ndarray, np.ndarray] | None = None

    def _maps_for(self, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
        if self._maps is None or self.active is None or self.active.size != size:
            self.active = self.model if size == self.model.size else self.model.scaled_to(size)
            self._maps = self.active.undistort_maps()
        return self._maps

    def read(self) -> Frame:
        frame = self.camera.read()
        height, width = frame.rgb.shape[:2]
        maps = self._maps_for((height, width))
        assert self.active is not None  # _maps_for set it
        return replace(frame, rgb=self.active.undistort(frame.rgb, maps))

    def __getattr__(self, name: str) -> Any:  # frame_count, name, ...: the wrapped camera's
        if name == "camera":
            raise AttributeError(name)
        return getattr(self.camera, name)

    def close(self) -> None:
        self.camera.close()


def undistorted(camera: Camera, model: CameraModel) -> Camera:
    """``camera`` through :class:`UndistortedCamera` when ``model`` has a lens distortion, else as it is."""
    return UndistortedCamera(camera, model) if np.any(model.D != 0) else camera


TWIN = "twin"
TWIN_TIMEOUT_S = 10.0  # a software render of 640x480 takes ~0.5 s; on a loaded machine several


def twin_socket(port: str) -> Path:
    """Where ``so101 emulate --twin`` serves the camera of the arm on ``port`` (its pty)."""
    name = os.path.realpath(port).strip("/").replace("/", "-")
    return Path(tempfile.gettempdir()) / f"so101-twin-{os.getuid()}-{name}.sock"  # one user's, in a shared /tmp


class TwinCamera:
    """The emulated arm's wrist camera: frames that ``so101 emulate --twin`` renders from its twin.

    The emulator serves it on a Unix socket named after its pty (:func:`twin_socket`), so
    ``--camera twin`` beside ``--port PTY`` (or ``twin:PTY`` anywhere) finds it. Each
    :meth:`read` is the twin as it is now, at the real camera's size. The same connection
    plays the person who sets the scene: :meth:`start_episode` puts the cube where a real
    operator would be told to, and tells the emulator which episode runs (a scripted leader
    hand can wait for it).
    """

    def __init__(self, port: str, timeout_s: float = TWIN_TIMEOUT_S):
        self.port, self.path, self.timeout_s = port, twin_socket(port), timeout_s
        self._lock = threading.Lock()  # one request in flight (a perceive-ahead thread and the loop share it)
        self._sock: socket.socket | None = None
        self._file: BinaryIO | None = None
        self._index = 0
        self.reconnects = 0  # connections made again after one broke (the emulator restarted)
        self._connect()
        hello = self._ask({"op": "hello"})
        self.size: tuple[int, int] = (int(hello["height"]), int(hello["width"]))

    def _connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout_s)
        try:
            sock.connect(str(self.path))
        except OSError:
            sock.close()
            raise CameraError(f"camera twin on {self.port}: no emulated camera there; start 'so101 emulate --twin' "
                              f"and give the pty it prints as @port (or the camera as twin:PTY)") from None
        self._sock, self._file = sock, sock.makefile("rb")

    def _drop(self) -> None:
        for item in (self._file, self._sock):
            if item is not None:
                item.close()
        self._sock = self._file = None

    def _ask(self, request: dict) -> dict:
        """One request, its header and payload; one reconnection if the emulator restarted."""
        with self._lock:
            for attempt in range(2):
                try:
                    header = self._exchange(request)
                    self.reconnects += attempt
                    break
                except (OSError, ValueError, CameraError) as exc:
                    self._drop()
                    if attempt:
                        raise CameraStopped(f"camera twin on {self.port}: the emulator stopped answering ({exc}); "
                                            f"is 'so101 emulate --twin' still running?") from None
        if "error" in header:  # the emulator refused this request: asking again would not help
            raise CameraError(f"camera twin on {self.port}: the emulator says {header['error']}")
        return header

    def _exchange(self, request: dict) -> dict:
        if self._sock is None:
            self._connect()
        sock, file = self._sock, self._file
        assert sock is not None and file is not None  # _connect() opened both
        sock.sendall(json.dumps(request).encode() + b"\n")
        header = json.loads(file.readline() or b"null")
        if not isinstance(header, dict):
            raise ConnectionError("closed")
        if header.get("bytes"):
            header["payload"] = file.read(header["bytes"])
            if len(header["payload"]) != header["bytes"]:
                raise ConnectionError("short frame")
        return header

    def frame_size(self) -> tuple[int, int]:
        return self.size

    def read(self) -> Frame:
        reply = self._ask({"op": "frame"})
        h, w = reply["height"], reply["width"]
        rgb = np.frombuffer(reply["payload"], np.uint8).reshape(h, w, 3).copy()  # writable, as a capture is
        self._index += 1
        return Frame(rgb, float(reply["time"]), self._index)

    def start_episode(self, episode: int, cube_xy: tuple[float, float] | None) -> None:
        """The emulated person sets the scene: the cube at ``cube_xy`` (m, in the arm's base frame)."""
        self._ask({"op": "episode", "episode": int(episode),
                   "cube_xy": None if cube_xy is None else [float(v) for v in cube_xy]})

    def close(self) -> None:
        with self._lock:
            self._drop()


def check_frame_size(camera: Camera, size: tuple[int, int], name: str) -> None:
    """Refuse, before any network loads, a camera whose frames are not of the policy's aspect ratio
    (one of the same aspect ratio is rescaled to ``size``, (H, W), frame by frame)."""
    h, w = camera.frame_size() if hasattr(camera, "frame_size") else size
    if h <= 0 or w <= 0:
        return  # a container that does not say: every frame is checked as it is read
    sh, sw = size
    if abs(w / h - sw / sh) > 0.01:
        raise CameraError(f"camera {name}: its frames are {w}x{h}; the policy was trained on {sw}x{sh} images (another "
                          f"aspect ratio): set the camera to {sw}x{sh}, or give a video of that size")


def open_camera(source: str, size: tuple[int, int] = SOURCE_SIZE, loop: bool = False,
                port: str | None = None) -> Camera:
    """``0`` or ``/dev/video2`` (a live camera), a video file, an image or a folder of images;
    ``twin`` (the camera of the emulated arm on ``port``) or ``twin:PTY``."""
    text = str(source).strip()
    if text == TWIN or text.startswith(TWIN + ":"):
        pty = text[len(TWIN) + 1:] or port
        if not pty:
            raise CameraError("camera twin: the emulated arm's camera needs the arm's port: give @port PTY (from "
                              "'so101 emulate --twin'), or name it twin:PTY")
        return TwinCamera(pty)
    if text.isdigit():
        return OpenCVCamera(int(text), size)
    path = Path(text).expanduser()
    if text.startswith("/dev/"):
        if not path.exists():
            raise CameraError(f"{text}: no such camera device (on Linux: ls /dev/video*)")
        return OpenCVCamera(text, size)
    if not path.exists():
        raise CameraError(f"{text}: no such file or folder (a camera is an index such as 0, a video, an image or a "
                          f"folder of images)")
    if path.is_dir() or path.suffix.lower() in IMAGE_SUFFIXES:
        return ImageFolderCamera(path, loop=loop)
    if path.suffix.lower() in VIDEO_SUFFIXES:
        return VideoCamera(path, loop=loop)
    raise CameraError(f"{text}: not a video ({', '.join(sorted(VIDEO_SUFFIXES))}) or an image")
