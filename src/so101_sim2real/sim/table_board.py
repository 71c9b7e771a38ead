"""A calibration board lying flat on the twin's table, where ``so101 calibrate rig`` expects it.

The board frame is OpenCV's object frame (:mod:`so101_sim2real.geometry.board`): the origin at
the squares' top-left outer corner, x along the printed rows, y down the page, z into the page. Face up
on the table, with the page's x along the world's x turned by ``yaw``, that is a half turn
about x: board y is world -y and board z is world -z. The printed page (margin, caption) is
a texture on a thin plane just above the floor, visible but out of every collision.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import mujoco
import numpy as np

from so101_sim2real.geometry.board import BoardSpec, board_layout, render_board

BOARD_GEOM = "calibration_board"
TEXTURE_DPI = 127  # 5 texels per mm: the squares' corners fall on texel edges
LIFT_M = 0.0005  # above the floor plane: no z-fighting in the render


@dataclass(frozen=True)
class TableBoard:
    """A board on the table: its squares' top-left corner at ``origin_xy`` (m), its x axis at ``yaw_rad``.
    The default puts the middle of a 7x5 board of 30 mm squares where the task's cube goes."""

    board: BoardSpec
    origin_xy: tuple[float, float] = (0.145, 0.075)
    yaw_rad: float = 0.0

    @property
    def rotation(self) -> np.ndarray:
        """Board axes in the world, as columns: R such that world = origin + R @ board."""
        c, s = math.cos(self.yaw_rad), math.sin(self.yaw_rad)
        return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]]) @ np.diag([1.0, -1.0, -1.0])

    @property
    def origin(self) -> np.ndarray:
        return np.array([self.origin_xy[0], self.origin_xy[1], LIFT_M])

    def to_world(self, points: np.ndarray) -> np.ndarray:
        """Board-frame points (N, 3) in world coordinates."""
        return self.origin + np.asarray(points, np.float64).reshape(-1, 3) @ self.rotation.T

    def centre(self) -> np.ndarray:
        """The middle of the squares, in the world."""
        width_m, height_m = (v / 1000 for v in self.board.size_mm)
        return self.to_world(np.array([[width_m / 2, height_m / 2, 0.0]]))[0]

    def add_to(self, spec: mujoco.MjSpec) -> None:
        """The printed page as a textured plane on the table (a scene-building hook)."""
        image = render_board(self.board, TEXTURE_DPI)
        layout = board_layout(self.board, TEXTURE_DPI)
        height, width = image.shape
        texture = spec.add_texture(name=BOARD_GEOM, type=mujoco.mjtTexture.mjTEXTURE_2D, width=width,
                                   height=height, nchannel=3)
        texture.data = np.ascontiguousarray(np.repeat(image[:, :, None], 3, axis=2)).tobytes()
        material = spec.add_material(name=BOARD_GEOM, specular=0, shininess=0, reflectance=0)
        material.textures[mujoco.mjtTextureRole.mjTEXROLE_RGB] = BOARD_GEOM
        metre_per_px = layout.mm_per_px / 1000
        centre = np.array([(width / 2 - layout.origin_px[0]) * metre_per_px,
                           (height / 2 - layout.origin_px[1]) * metre_per_px, 0.0])
        # A plane's visible side is its +z; the board's front is its -z, i.e. the plane turned a half
        # turn about x in the board frame, which cancels the board's own half turn: only the yaw is left.
        half = self.yaw_rad / 2
        spec.worldbody.add_geom(name=BOARD_GEOM, type=mujoco.mjtGeom.mjGEOM_PLANE, material=BOARD_GEOM,
                                pos=list(self.to_world(centre[None])[0]),
                                size=[width * metre_per_px / 2, height * metre_per_px / 2, 0.01],
                                quat=[math.cos(half), 0.0, 0.0, math.sin(half)], contype=0, conaffinity=0)
