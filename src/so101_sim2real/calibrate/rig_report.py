"""The rig calibration's pictures: the twin, as fitted, over what the camera saw.

A row per pose (a few, spread over the set): the camera's picture with the corners it
found (green), where the guess put them (red) and where the fit puts them (blue); then the
twin rendered through the fitted camera, mount and joint offsets at that reading, blended
over the picture. A fit that is right makes the blend look like one picture.
"""

from __future__ import annotations

import io
from pathlib import Path

import cv2
import numpy as np

from so101_sim2real.calibrate.align_view import twin_picture
from so101_sim2real.calibrate.hand_eye import ArmGeometry, RigFit, euler_to_matrix, project_board
from so101_sim2real.calibrate.rig_capture import Captured
from so101_sim2real.files import write_file
from so101_sim2real.geometry.rig_file import RigGeometry
from so101_sim2real.sim.table_board import TableBoard

OVERLAY_PNG = "rig_overlay.png"
ROWS = 3


def _marks(image: np.ndarray, points: np.ndarray, colour: tuple[int, int, int], radius: int) -> None:
    for x, y in points:
        if np.isfinite(x) and np.isfinite(y):
            cv2.circle(image, (int(round(x)), int(round(y))), radius, colour, 2, cv2.LINE_AA)


def plot_rig_overlay(fit: RigFit, guess: RigGeometry, captured: Captured, board: TableBoard,
                     path: str | Path) -> Path:
    """The PNG described in the module docstring; returns its path."""
    from matplotlib.figure import Figure

    arm = ArmGeometry()
    picks = np.unique(np.linspace(0, len(captured.views) - 1, min(ROWS, len(captured.views))).round().astype(int))
    fig = Figure(figsize=(10, 3.6 * len(picks)))
    for row, i in enumerate(picks):
        view, image = captured.views[i], captured.images[i]
        marked, rms = image.copy(), []
        for rig, colour in ((guess, (230, 40, 40)), (fit.rig, (40, 90, 255))):
            px = project_board(arm, rig.camera, board, view.joints + rig.joint_offsets_rad, view.object_points,
                               euler_to_matrix(rig.mount_euler), np.array(rig.mount_pos))
            _marks(marked, px, colour, 5)
            rms.append(float(np.sqrt(np.nanmean(np.sum((px - view.image_points) ** 2, axis=1)))))
        _marks(marked, view.image_points, (40, 200, 40), 2)
        blend = cv2.addWeighted(image, 0.5, twin_picture(fit.rig, view.joints, image.shape[:2], board), 0.5, 0)
        for col, (picture, title) in enumerate(((marked, f"view {i + 1}: found (green), guess (red), fit (blue)"),
                                                (blend, "the fitted twin over the picture"))):
            ax = fig.add_subplot(len(picks), 2, 2 * row + col + 1)
            ax.imshow(picture)
            ax.set_title(title + f"\nRMS {rms[0]:.1f} px -> {rms[1]:.2f} px"
                         if col == 0 else title, fontsize=8)
            ax.axis("off")
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=90)
    return write_file(path, buffer.getvalue())
