"""The calibration report: per-view reprojection error, and a picture undistorted next to the original."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from so101_sim2real.calibrate.camera_fit import FitReport
from so101_sim2real.files import write_file
from so101_sim2real.geometry.camera_model import CameraModel

ERRORS_PNG = "reprojection_errors.png"
UNDISTORTED_PNG = "undistorted.png"


def _save(fig, path: Path) -> Path:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    return write_file(path, buffer.getvalue())


def plot_view_errors(report: FitReport, path: str | Path) -> Path:
    """A bar per view: its reprojection RMS under each fitted model, the chosen one solid."""
    from matplotlib.figure import Figure  # the Agg canvas, no pyplot state

    fits = [f for f in report.fits if f.ok]
    names = report.view_names
    fig = Figure(figsize=(max(6.0, 0.35 * len(names) + 2), 4))
    ax = fig.add_subplot()
    width = 0.8 / max(len(fits), 1)
    x = np.arange(len(names))
    for i, fit in enumerate(fits):
        chosen = fit.model == report.chosen
        ax.bar(x + (i - (len(fits) - 1) / 2) * width, fit.per_view, width, alpha=1.0 if chosen else 0.45,
               label=f"{fit.model}{' (chosen)' if chosen else ''}: RMS {fit.rms:.3f} px")
        if chosen:
            ax.axhline(fit.rms, color="k", lw=0.8, ls="--")
    ax.set_xticks(x, names, rotation=60, ha="right", fontsize=7)
    ax.set_ylabel("reprojection RMS (px)")
    ax.set_title(f"per-view reprojection error, {report.views_used} views")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return _save(fig, Path(path))


def plot_undistorted(camera: CameraModel, image: np.ndarray, path: str | Path) -> Path:
    """The picture as taken next to the picture undistorted by ``camera`` (same K): straight lines
    should look straight on the right."""
    from matplotlib.figure import Figure

    height, width = camera.size
    fig = Figure(figsize=(10, 10 * height / (2 * width) + 0.6))
    for i, (picture, title) in enumerate(((image, "as taken"), (camera.undistort(image), "undistorted"))):
        ax = fig.add_subplot(1, 2, i + 1)
        ax.imshow(picture, cmap="gray" if picture.ndim == 2 else None, vmin=0, vmax=255)
        ax.set_title(f"{title} ({camera.model})" if i else title, fontsize=9)
        ax.set_axis_off()
    fig.tight_layout()
    return _save(fig, Path(path))
