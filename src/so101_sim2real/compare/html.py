"""``compare-sim --out DIR``: one self-contained page (``index.html``) a browser opens offline.

The headline table and the findings, per-class IoU and disparity rank correlation over
the episode, and the ticks where the recording and the twin agree least, side by side:
[camera |] recorded seg and disparity | the twin's | where they differ. Pictures are inlined as PNG
data, so the page can be mailed or archived on its own.
"""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path

import cv2
import numpy as np

from so101_sim2real.compare.pictures import VIDEO, side_by_side
from so101_sim2real.compare.report import ReplayReport
from so101_sim2real.files import write_file

INDEX = "index.html"


def _png(rgb: np.ndarray) -> str:
    ok, data = cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    return "data:image/png;base64," + base64.b64encode(data.tobytes()).decode()


def _figure_png(fig) -> str:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=90)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def curves(report: ReplayReport) -> str:
    """Per-class IoU and disparity Spearman over the ticks, as one inlined PNG."""
    from matplotlib.figure import Figure

    seg = report.segmentation
    per_tick = np.array([[np.nan if v is None else v for v in row] for row in seg.per_tick_iou],
                        dtype=float).reshape(report.ticks, -1)
    fig = Figure(figsize=(9, 5.5))
    ax, bx = fig.add_subplot(2, 1, 1), fig.add_subplot(2, 1, 2)
    for k, name in enumerate(seg.classes):
        if np.isfinite(per_tick[:, k]).any():
            ax.plot(per_tick[:, k], label=name)
    ax.set(ylabel="IoU", ylim=(0, 1.02), title="recorded vs twin, per tick")
    ax.legend(loc="lower left", fontsize=8)
    rho = [np.nan if v is None else v for v in report.disparity.per_tick_spearman]
    bx.plot(rho, color="k")
    bx.set(xlabel="tick", ylabel="disparity Spearman", ylim=(min(0.0, np.nanmin(rho) if np.isfinite(rho).any()
                                                                  else 0.0), 1.02))
    fig.tight_layout()
    return _figure_png(fig)


def _table(report: ReplayReport) -> str:
    seg, disp, t = report.segmentation, report.disparity, report.timing

    def num(v, fmt=".3f"):
        return "-" if v is None else format(v, fmt)

    rows = [(name, num(iou)) for name, iou in seg.iou.items()]
    rows += [("pixel agreement", num(seg.agreement)), ("disparity Spearman", num(disp.spearman)),
             ("disparity median-scaled error", num(disp.rel_error)),
             ("... by the twin's depth band", ", ".join(f"{k} {num(v)}" for k, v in disp.by_band.items())),
             ("period p50 / p95 (ms)", f"{num(t.p50_s and t.p50_s * 1e3, '.1f')} / "
                                       f"{num(t.p95_s and t.p95_s * 1e3, '.1f')}"),
             ("the spec's period (ms)", f"{t.spec_period_s * 1e3:.1f}")]
    if report.dynamics is not None:
        worst = max(report.dynamics.joints, key=lambda j: j.rms_error_rad)
        rows += [("targets replayed open loop: worst joint RMS (rad)", f"{worst.rms_error_rad:.4f} ({worst.name})"),
                 ("lag (ticks, + behind / - ahead)", f"{report.dynamics.worst_lag}: {report.dynamics.lag_words()}")]
    if report.cube.source != "recorded":
        c = report.cube
        assert c.position is not None  # placed by the fit, or the nominal place
        rows.append(("cube (not recorded)", f"{c.source} at ({', '.join(f'{v:.3f}' for v in c.position)}) m"
                     + (f", IoU {c.iou:.2f} at tick {c.tick}" if c.iou is not None else "")))
    if report.motion is not None:
        m = report.motion
        rows.append(("EE motion explained as commanded / best axis map (R²)",
                     f"{m.r2_identity:.2f} / {m.r2_best:.2f}"))
    body = "".join(f"<tr><td>{html.escape(k)}</td><td>{html.escape(v)}</td></tr>" for k, v in rows)
    return f"<table><tr><th>measure</th><th>value</th></tr>{body}</table>"


def _state_table(report: ReplayReport) -> str:
    """The recorded state against the twin's, per field (empty where the recording has no state)."""
    if not report.state:
        return ""
    body = "".join(f"<tr><td>{html.escape(c.name)}</td><td>{c.rms:.3g}</td><td>{c.max:.3g}</td>"
                   f"<td>{'-' if c.scale is None else format(c.scale, '.3g')}</td></tr>" for c in report.state)
    return ("<h2>The state: recorded vs twin</h2><p>The twin's state computed from the recorded joints; "
            "a scale near 57.3 (or 1/57.3) is degrees where radians were meant.</p>"
            "<table><tr><th>field</th><th>RMS difference</th><th>largest</th><th>scale recorded / twin</th></tr>"
            f"{body}</table>")


def write_page(report: ReplayReport, channels: list[str], out: str | Path) -> Path:
    """``out/index.html``: the whole report in one file."""
    findings = "".join(f"<li><b>{html.escape(f.name)}</b>: {html.escape(f.line()[len(f.name) + 2:])}</li>"
                       for f in report.findings) or "<li>none: the recording matches the twin</li>"
    frames = "".join(f"<h3>tick {w.tick}</h3><img src='{_png(side_by_side(w, channels))}'>" for w in report.worst)
    page = f"""<!doctype html>
<html><head><meta charset="utf-8"><title>compare-sim: {html.escape(report.recording)}</title>
<style>body{{font-family:sans-serif;max-width:1100px;margin:2em auto}}td,th{{padding:2px 12px;text-align:left}}
img{{max-width:100%}}</style></head><body>
<h1>Recording vs twin</h1>
<p>{html.escape(report.recording)}, episode {report.episode}: {report.ticks} ticks replayed through the twin.</p>
{_table(report)}
<h2>Findings</h2><ul>{findings}</ul>
{_state_table(report)}
<h2>Over the episode</h2><img src="{curves(report)}">
<h2>Where they agree least</h2>
<p>Each row: {"the recorded camera | " if any(w.rgb is not None for w in report.worst) else ""}the recorded policy
channels | the twin's | the difference (white: the class differs; grey: twice the disparity difference).
The whole episode in this layout: <a href="{VIDEO}">{VIDEO}</a> (MPEG-4; a video player opens it).</p>
{frames}
</body></html>
"""
    return write_file(Path(out) / INDEX, page)
