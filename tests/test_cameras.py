"""Cameras: image folders, videos, and the OpenCV capture thread (on a video file standing in for a device)."""

from __future__ import annotations

import time

import cv2
import numpy as np
import pytest

from so101_sim2real.cameras import (
    CameraError,
    CameraExhausted,
    ImageFolderCamera,
    OpenCVCamera,
    VideoCamera,
    open_camera,
)

RED_BGR = (0, 0, 255)


def _write_video(path, frames: int = 12, size=(48, 64)) -> None:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 30.0, (size[1], size[0]))
    for i in range(frames):
        img = np.zeros((*size, 3), dtype=np.uint8)
        img[:] = RED_BGR
        img[: 4 + i, :4] = 255  # a growing white block: frames differ
        writer.write(img)
    writer.release()


def test_image_folder_in_name_order_as_rgb(tmp_path):
    for name, bgr in (("b.png", (255, 0, 0)), ("a.png", RED_BGR)):
        cv2.imwrite(str(tmp_path / name), np.full((8, 8, 3), bgr, dtype=np.uint8))
    (tmp_path / "notes.txt").write_text("not an image")
    camera = ImageFolderCamera(tmp_path)
    first, second = camera.read(), camera.read()
    assert camera.name == "b.png"
    assert first.rgb[0, 0].tolist() == [255, 0, 0]  # a.png: red, now in RGB order
    assert second.rgb[0, 0].tolist() == [0, 0, 255]
    assert (first.index, second.index) == (1, 2)
    with pytest.raises(CameraExhausted):
        camera.read()
    looping = ImageFolderCamera(tmp_path, loop=True)
    assert [looping.read().index for _ in range(3)] == [1, 2, 3]


def test_video_frames_in_order_with_timestamps(tmp_path):
    path = tmp_path / "clip.avi"
    _write_video(path, frames=5)
    camera = VideoCamera(path)
    frames = [camera.read() for _ in range(5)]
    assert frames[0].rgb.shape == (48, 64, 3)
    r, g, b = frames[0].rgb[30, 40]
    assert r > 200 and g < 60 and b < 60  # red in RGB order
    assert [f.timestamp for f in frames] == pytest.approx([i / 30.0 for i in range(5)])
    with pytest.raises(CameraExhausted):
        camera.read()
    camera.close()
    looping = VideoCamera(path, loop=True)
    assert len([looping.read() for _ in range(8)]) == 8


def test_opencv_camera_reports_a_lost_device_and_reconnects(tmp_path):
    path = tmp_path / "device.avi"
    _write_video(path, frames=30)
    camera = OpenCVCamera(str(path), timeout_s=0.5, retry_s=0.05)
    try:
        a, b = camera.read(), camera.read()
        assert b.index > a.index and b.timestamp >= a.timestamp  # never the same frame twice
        path.unlink()  # the device goes away
        deadline = time.monotonic() + 10
        with pytest.raises(CameraError, match="no new frame"):
            while time.monotonic() < deadline:
                camera.read()
        _write_video(path, frames=30)  # and comes back
        assert camera.read().rgb.shape == (48, 64, 3)
        assert camera.reconnects >= 1
    finally:
        camera.close()


def test_open_camera_dispatches_and_explains(tmp_path):
    _write_video(tmp_path / "v.mp4", frames=2)
    cv2.imwrite(str(tmp_path / "one.jpg"), np.zeros((4, 4, 3), dtype=np.uint8))
    assert isinstance(open_camera(str(tmp_path / "v.mp4")), VideoCamera)
    assert isinstance(open_camera(str(tmp_path / "one.jpg")), ImageFolderCamera)
    assert isinstance(open_camera(str(tmp_path)), ImageFolderCamera)
    with pytest.raises(CameraError, match="no such file or folder"):
        open_camera(str(tmp_path / "missing.mp4"))
    (tmp_path / "data.csv").write_text("1,2")
    with pytest.raises(CameraError, match="not a video"):
        open_camera(str(tmp_path / "data.csv"))
    with pytest.raises(CameraError, match="no such camera device"):
        open_camera("/dev/video-none")
    with pytest.raises(CameraError, match="cannot open"):
        open_camera("63")  # an index with no camera behind it
