"""``so101 calibrate board`` and ``so101 calibrate camera``: the camera's intrinsics from a printed board.

Thin commands over :mod:`so101_sim2real.calibrate.camera_session`; :func:`register` adds them to the
``calibrate`` group (app.py calls it, so this module never imports app.py).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Optional

import typer

from so101_sim2real.errors import So101Error

if TYPE_CHECKING:
    from so101_sim2real.calibrate.camera_fit import FitReport
    from so101_sim2real.calibrate.capture import Gathered
    from so101_sim2real.geometry.board import BoardSpec
    from so101_sim2real.geometry.camera_model import CameraModel

HIGH_RMS_PX = 1.0
DEFAULT_BOARD_TEXT = "ChArUco 7x5 squares of 30 mm, 22.5 mm markers, DICT_5X5_100 (what 'so101 calibrate board' prints)"


def _squares(text: str) -> tuple[int, int]:
    cols, sep, rows = text.lower().partition("x")
    if not sep or not cols.strip().isdigit() or not rows.strip().isdigit():
        raise So101Error(f"--squares {text!r}: use COLSxROWS, e.g. 7x5")
    return int(cols), int(rows)


def calibrate_board(
    out: Annotated[Path, typer.Option("--out", help="The PNG to write; board.yaml (and board.pdf) go beside it.")],
    kind: Annotated[str, typer.Option("--type", help="charuco (found even when partly out of view) or "
                                                     "checkerboard (must be wholly in view).")] = "charuco",
    squares: Annotated[str, typer.Option("--squares", help="Squares across x down.")] = "7x5",
    size_mm: Annotated[float, typer.Option("--size-mm", help="Side of a square in mm.")] = 30.0,
    marker_mm: Annotated[Optional[float], typer.Option("--marker-mm", help="ChArUco marker side in mm (default: "
                                                                           "0.75 of the square).")] = None,
    dictionary: Annotated[str, typer.Option("--dictionary", help="ChArUco: the ArUco dictionary.")] = "DICT_5X5_100",
    dpi: Annotated[int, typer.Option("--dpi", help="Printer resolution of the PNG and PDF.")] = 300,
    pdf: Annotated[bool, typer.Option("--pdf/--no-pdf", help="Also write a PDF of the page's physical size.")] = True,
) -> None:
    """Write a printable calibration board (PNG, its board.yaml, a PDF); print it at 100%."""
    import cv2

    from so101_sim2real.files import write_file
    from so101_sim2real.geometry.board import BoardSpec, board_layout, board_yaml_path, render_board, write_pdf

    if out.suffix.lower() != ".png":
        raise So101Error(f"--out {out}: the board is written as a PNG (lossless): give a .png name")
    spec = BoardSpec(type=kind, squares=_squares(squares), square_mm=size_mm,
                     marker_mm=marker_mm if marker_mm is not None else 0.75 * size_mm, dictionary=dictionary)
    image = render_board(spec, dpi)
    written = [write_file(out, cv2.imencode(".png", image)[1].tobytes()), spec.save(board_yaml_path(out))]
    if pdf:
        written.append(write_pdf(image, dpi, out.with_suffix(".pdf")))
    layout = board_layout(spec, dpi)
    page = [v * layout.mm_per_px for v in layout.image_px]
    width, height = spec.size_mm
    typer.echo(f"wrote {', '.join(str(p) for p in written)}")
    typer.echo(f"{spec.describe()}: the board is {width:g} x {height:g} mm, the page {page[0]:.0f} x {page[1]:.0f} mm "
               f"({layout.image_px[0]}x{layout.image_px[1]} px at {dpi} dpi)")
    typer.echo(f"print at 100% (no fit-to-page), glue it flat, and check that a square measures {size_mm:g} mm; "
               f"if not, write what you measured as square_mm in {board_yaml_path(out)}")


def calibrate_camera(
    out: Annotated[Path, typer.Option("--out", help="The camera.yaml to write.")],
    camera: Annotated[Optional[str], typer.Option("--camera", help="Live: a camera index (0) or device "
                                                                   "(/dev/video2); a view is taken whenever "
                                                                   "the board is in sight and adds coverage. "
                                                                   "'twin': a rehearsal, the twin's board "
                                                                   "through a known lens.")
                      ] = None,
    images: Annotated[Optional[Path], typer.Option("--images", help="A folder of pictures of the board.")] = None,
    board: Annotated[Optional[Path], typer.Option("--board", help="The board.yaml written by 'so101 calibrate "
                                                                  f"board' (default: {DEFAULT_BOARD_TEXT}).")
                     ] = None,
    min_views: Annotated[int, typer.Option("--min-views", help="Refuse to fit on fewer views.")] = 10,
    views: Annotated[int, typer.Option("--views", help="With --camera: stop after this many views (or Ctrl-C).")
                     ] = 20,
    report: Annotated[Optional[Path], typer.Option("--report", help="Folder for the report pictures (default: "
                                                                    "beside --out).")] = None,
    standin: Annotated[Optional[Path], typer.Option("--standin", help="With --camera twin: the board through a "
                                                                      "stand-in world's camera (its intrinsics "
                                                                      "and lens) instead of the rehearsal's "
                                                                      "lens.")] = None,
) -> None:
    """Fit the camera's intrinsics and lens (pinhole or fisheye, the better kept) to pictures of the board.

    Writes camera.yaml, a bar chart of each view's reprojection error and a picture
    undistorted next to the original, and prints both models' fit.
    """
    from so101_sim2real.calibrate.camera_fit import MIN_VIEWS
    from so101_sim2real.files import writable_folder
    from so101_sim2real.geometry.board import BoardSpec

    if (camera is None) == (images is None):
        raise So101Error("give one of --camera (live) or --images DIR (pictures taken before)")
    if min_views < MIN_VIEWS:
        raise So101Error(f"--min-views {min_views}: at least {MIN_VIEWS}")
    if camera is not None and views < min_views:
        raise So101Error(f"--views {views} is fewer than --min-views {min_views}")
    for folder in (out.parent, report or out.parent):
        if problem := writable_folder(folder):
            raise So101Error(f"cannot write to {folder}: {problem}")
    if standin is not None and camera != "twin":
        raise So101Error("--standin: a stand-in's camera is the twin's (--camera twin); a real camera is itself")
    lens = _standin_lens(standin) if standin is not None else None
    spec = BoardSpec.load(board) if board else BoardSpec()
    if images is not None:
        gathered = _from_images(images, spec)
    else:
        assert camera is not None  # one of --camera and --images, checked above
        gathered = _from_camera(camera, spec, views, lens)
    model = _fit_and_write(gathered, spec, min_views, out, report or out.parent,
                           f"--images {images}" if images is not None else f"--camera {camera}")
    if camera == "twin":
        from so101_sim2real.sim.board_view import REHEARSAL_LENS

        truth = lens or REHEARSAL_LENS
        errors = [100 * (got / want - 1) for got, want in ((model.fx, truth.fx), (model.fy, truth.fy),
                                                          (model.cx, truth.cx), (model.cy, truth.cy))]
        typer.echo(f"against {'the stand-in' if lens else 'the rehearsal'}'s lens: " + ", ".join(
            f"{name} {e:+.2f}%" for name, e in zip(("fx", "fy", "cx", "cy"), errors, strict=True))
            + f"; k1 {model.D[0]:+.3f} ({truth.D[0]:+.3f})")


def _standin_lens(path: Path) -> CameraModel:
    """The camera a stand-in world's wrist camera really has (its intrinsics and lens on the sim's)."""
    from so101_sim2real.geometry.rig_file import default_rig
    from so101_sim2real.sim.standin import load_standin
    from so101_sim2real.sim.standin_scene import standin_rig

    return standin_rig(load_standin(path), default_rig()).camera


def _from_images(folder: Path, spec: BoardSpec) -> Gathered:
    from tqdm import tqdm

    from so101_sim2real.calibrate.capture import image_files, views_from_images

    files = image_files(folder)
    bar = tqdm(total=len(files), unit="image", file=sys.stderr, disable=not sys.stderr.isatty(), leave=False)

    def looked_at(path: Path, found: bool) -> None:
        bar.update(1)

    try:
        gathered = views_from_images(files, spec, on_image=looked_at)
    finally:
        bar.close()
    for name in gathered.skipped:
        typer.echo(f"warning: {name}: not a readable image; skipped", err=True)
    if not gathered.views:
        raise So101Error(f"the board ({spec.describe()}) is not in any of the {gathered.pictures} image(s) of "
                         f"{folder}: is --board the board in the pictures? (a ChArUco board made by OpenCV before "
                         f"4.6 with an even number of rows needs legacy: true in its board.yaml)")
    return gathered


def _from_camera(source: str, spec: BoardSpec, wanted: int, lens: CameraModel | None = None) -> Gathered:
    from so101_sim2real.calibrate.camera_session import views_from_source

    gathered = views_from_source(source, spec, wanted, say=typer.echo, twin_lens=lens,
                                 on_view=lambda n, cov: typer.echo(f"view {n}: coverage {cov.fraction:.0%}"))
    if gathered.interrupted:
        typer.echo(f"stopped: {len(gathered.views)} view(s) taken")
    return gathered


def _fit_and_write(gathered: Gathered, spec: BoardSpec, min_views: int, out: Path, report_dir: Path,
                   where: str) -> CameraModel:
    from so101_sim2real.calibrate.camera_session import fit_and_save

    result = fit_and_save(gathered, min_views, out, report_dir,
                          source=f"so101 calibrate camera {where}; board {spec.describe()}")
    model, fit = result.model, result.fit
    for line in _table(fit):
        typer.echo(line)
    typer.echo(f"chosen: {fit.chosen} ({fit.reason})")
    typer.echo(f"views: {fit.views_used} used of {fit.views_found} found ({gathered.pictures} pictures)"
               + (f"; left out as outliers: {', '.join(fit.dropped)}" if fit.dropped else ""))
    typer.echo(f"wrote {out}; report: {', '.join(str(p) for p in result.pictures)}")
    if model.rms is not None and model.rms > HIGH_RMS_PX:  # a fitted model has its RMS
        typer.echo(f"warning: RMS {model.rms:.2f} px is high for a calibration (expect under 0.5): blurred "
                   f"pictures, a board that is not flat, or a board.yaml whose square_mm is not the printed one",
                   err=True)
    return model


def _table(fit: FitReport) -> list[str]:
    lines = [f"{'model':<10}{'RMS px':>8}{'edge px':>9}{'fx':>9}{'fy':>9}{'cx':>8}{'cy':>8}{'fovx':>7}{'fovy':>7}"]
    for f in fit.fits:
        name = f.model + (" *" if f.model == fit.chosen else "")
        c = f.camera
        if c is None:  # not f.ok: the fit failed
            lines.append(f"{name:<10}failed: {f.problem}")
            continue
        edge = "-" if f.edge_rms is None else f"{f.edge_rms:.3f}"
        lines.append(f"{name:<10}{f.rms:>8.3f}{edge:>9}{c.fx:>9.1f}{c.fy:>9.1f}{c.cx:>8.1f}{c.cy:>8.1f}"
                     f"{c.fovx_deg():>7.1f}{c.fovy_deg():>7.1f}")
    return lines


def register(group: typer.Typer) -> None:
    """Add ``board`` and ``camera`` to the ``calibrate`` group."""
    group.command("board")(calibrate_board)
    group.command("camera")(calibrate_camera)
