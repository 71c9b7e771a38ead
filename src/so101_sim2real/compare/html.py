"""``compare-sim --out DIR``: one self-contained page (``index.html``) a browser opens offline.

The headline table and the findings, per-class IoU and disparity rank correlation over
the episode, and the ticks where the recording and the twin agree least, side by side:
recorded seg and disparity | the twin's | where they differ. Pictures are inlined as PNG
data, so the page can be mailed or archived on its own.
"""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path

import cv2
import numpy as np

from so101_sim2real.compare.replay import ReplayReport, WorstTick
from so101_sim2real.control.video import label, policy_panels
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


def side_by_side(worst: WorstTick, channels: list[str]) -> np.ndarray:
    """recorded channels | twin channels | the pixels whose class differs (white), one RGB row."""
    recorded = policy_panels(worst.recorded, channels)
    twin = policy_panels(worst.twin, channels)
    seg = channels.index("seg")
    differ = (worst.recorded[seg] != worst.twin[seg]).astype(np.uint8) * 255
    diff = cv2.resize(np.repeat(differ[..., None], 3, axis=2), recorded[0].shape[1::-1],
                      interpolation=cv2.INTER_NEAREST)
    label(recorded[0], "recorded", first_row=1)
    label(twin[0], "twin", first_row=1)
    label(diff, f"seg differs: {100 * (1 - worst.agreement):.1f}%")
    return np.hstack(recorded + twin + [diff])


def _table(report: ReplayReport) -> str:
    seg, disp, t = report.segmentation, report.disparity, report.timing

    def num(v, fmt=".3f"):
        return "-" if v is None else format(v, fmt)

    rows = [(name, num(iou)) for name, iou in seg.iou.items()]
    rows += [("pixel agreement", num(seg.agreement)), ("disparity Spearman", num(disp.spearman)),
             ("disparity median-scaled error", num(disp.rel_error)),
             ("period p50 / p95 (ms)", f"{num(t.p50_s and t.p50_s * 1e3, '.1f')} / "
                                       f"{num(t.p95_s and t.p95_s * 1e3, '.1f')}"),
             ("the spec's period (ms)", f"{t.spec_period_s * 1e3:.1f}")]
    body = "".join(f"<tr><td>{html.escape(k)}</td><td>{html.escape(v)}</td></tr>" for k, v in rows)
    return f"<table><tr><th>measure</th><th>value</th></tr>{body}</table>"


def write_page(report: ReplayReport, channels: list[str], out: str | Path) -> Path:
    """``out/index.html``: the whole report in one file."""
    findings = "".join(f"<li><b>{html.escape(f.name)}</b>: {html.escape(f.line().split(': ', 1)[1])}</li>"
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
<h2>Over the episode</h2><img src="{curves(report)}">
<h2>Where they agree least</h2>{frames}
</body></html>
"""
    return write_file(Path(out) / INDEX, page)
