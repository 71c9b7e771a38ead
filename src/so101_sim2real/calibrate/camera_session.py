"""A camera calibration in calls a script can make: the board's views gathered live from a camera
(opened and closed here), then both lens models fitted and camera.yaml and its report pictures
written. ``so101 calibrate camera`` is thin over these (and over :mod:`.capture` for a folder of
pictures)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from so101_sim2real.errors import So101Error

if TYPE_CHECKING:
    from so101_sim2real.calibrate.camera_fit import Coverage, FitReport
    from so101_sim2real.calibrate.capture import Gathered
    from so101_sim2real.geometry.board import BoardSpec
    from so101_sim2real.geometry.camera_model import CameraModel
    from so101_sim2real.interfaces import Camera

TWIN = "twin"  # the rehearsal's camera: the twin's board through a known lens


def _quiet(text: str) -> None:
    pass


@dataclass(frozen=True)
class CameraResult:
    """What a fit wrote: the chosen model (in ``out``), the report of both fits, the report pictures."""

    model: CameraModel
    fit: FitReport
    out: Path
    pictures: list[Path]


def views_from_source(source: str, board: BoardSpec, wanted: int, *, say: Callable[[str], None] = _quiet,
                      on_view: Callable[[int, Coverage], None] | None = None,
                      twin_lens: CameraModel | None = None) -> Gathered:
    """Views of ``board`` (a BoardSpec) taken live from the camera ``source`` (an index or a device;
    ``twin``: the twin's board from a new pose at each read, through ``twin_lens`` or
    :data:`~so101_sim2real.sim.board_view.REHEARSAL_LENS`), until ``wanted`` views or Ctrl-C. The
    camera is open for the gathering only; ``say`` is told what to do with the board once it is."""
    from so101_sim2real.calibrate.capture import views_from_camera
    from so101_sim2real.cameras import open_camera

    cam: Camera
    if source == TWIN:
        from so101_sim2real.sim.board_view import BoardCamera

        cam = BoardCamera(board) if twin_lens is None else BoardCamera(board, twin_lens)
    else:
        cam = open_camera(source)
    say(f"show the board ({board.describe()}) to camera {source}: move and tilt it over the whole picture; "
        f"a view is taken when it adds coverage; {wanted} views or Ctrl-C to stop")
    try:
        return views_from_camera(cam, board, wanted, on_view=on_view)
    finally:
        cam.close()


def fit_and_save(gathered: Gathered, min_views: int, out: Path, report_dir: Path, source: str = "") -> CameraResult:
    """Both lens models fitted to ``gathered``'s views (at least ``min_views``), the better written to
    ``out`` (``source``: where the pictures came from, kept in the file), and a bar chart of each
    view's error and an undistorted picture written to ``report_dir``."""
    from so101_sim2real.calibrate.camera_fit import fit_camera
    from so101_sim2real.calibrate.report import ERRORS_PNG, UNDISTORTED_PNG, plot_undistorted, plot_view_errors

    found = len(gathered.views)
    if found < min_views:
        raise So101Error(f"too few views: the board was found in {found} of {gathered.pictures} picture(s); need at "
                         f"least {min_views} (@min_views): more pictures, the board tilted and moved about")
    model, fit = fit_camera(gathered.views, gathered.size, min_views=min_views, source=source)
    model.save(out)
    pictures = [plot_view_errors(fit, report_dir / ERRORS_PNG)]
    if gathered.sample is not None:
        pictures.append(plot_undistorted(model, gathered.sample, report_dir / UNDISTORTED_PNG))
    return CameraResult(model, fit, out, pictures)
