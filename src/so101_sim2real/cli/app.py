"""The ``so101`` command line: thin commands over the library, one module per command or group.

Each command parses its options, calls the library and prints; :func:`main` turns the library's
errors into one line on stderr and an exit code.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

import typer

from so101_sim2real.cli import PLAIN
from so101_sim2real.cli.calibrate import calibrate_app
from so101_sim2real.cli.checkpoint import convert, inspect
from so101_sim2real.cli.compare_sim import register as register_compare_sim
from so101_sim2real.cli.depth import depth_app
from so101_sim2real.cli.emulate import register as register_emulate
from so101_sim2real.cli.export import export_app
from so101_sim2real.cli.hilserl import hilserl_app
from so101_sim2real.cli.infer import infer
from so101_sim2real.cli.models import models_app
from so101_sim2real.cli.motors import motors_app
from so101_sim2real.cli.perceive import perceive
from so101_sim2real.cli.reward import reward_app
from so101_sim2real.cli.seg import seg_app
from so101_sim2real.errors import So101Error

app = typer.Typer(
    name="so101",
    help="Take a DrQ-v2 pixel policy trained in MuJoCo onto a real SO-101 arm, and fine-tune it there.",
    no_args_is_help=True,
    add_completion=False,
    **PLAIN,
)

# `so101 --help` lists the commands in the order they are added here, then the groups in theirs.
app.command()(inspect)
app.command()(convert)
app.command()(infer)
app.command()(perceive)
register_emulate(app)
register_compare_sim(app)
app.add_typer(motors_app, name="motors")
app.add_typer(calibrate_app, name="calibrate")
app.add_typer(models_app, name="models")
app.add_typer(reward_app, name="reward")
app.add_typer(seg_app, name="seg")
app.add_typer(depth_app, name="depth")
app.add_typer(hilserl_app, name="hilserl")
app.add_typer(export_app, name="export")


RAISE_ENV = "SO101_RAISE"  # set (the test suite does): unexpected exceptions propagate with their traceback


def main(argv: list[str] | None = None) -> None:
    """Console entry point: user errors are one line on stderr and exit code 2; anything unexpected
    is one line too, exit code 3, with the traceback saved to a file for the bug report."""
    from typer import _click as click  # typer's bundled click: its exceptions, not the click package's

    progress = _ProgressLines()
    try:
        code = typer.main.get_command(app).main(args=argv, prog_name="so101", standalone_mode=False)
    except click.exceptions.NoArgsIsHelpError as exc:  # `so101`, `so101 motors`: the help is the answer
        typer.echo(exc.format_message())
        sys.exit(0)
    except click.exceptions.UsageError as exc:  # a mistyped command line: one line, like every other error
        where = exc.ctx.command_path if exc.ctx else "so101"
        typer.echo(f"error: {exc.format_message()} (see '{where} --help')", err=True)
        sys.exit(2)
    except typer.Abort:  # Ctrl-C (click turns KeyboardInterrupt into Abort)
        typer.echo("interrupted", err=True)
        sys.exit(130)
    except So101Error as exc:
        typer.echo(f"error: {exc.cli_text()}", err=True)  # the library's @options as flags
        sys.exit(2)
    except KeyboardInterrupt:
        typer.echo("interrupted", err=True)
        sys.exit(130)
    except Exception as exc:  # noqa: BLE001 - the boundary: no wall of stack for a user
        if os.environ.get(RAISE_ENV):
            raise
        path = _save_traceback()
        typer.echo(f"error: unexpected {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''} "
                   f"(a bug: please report it with the traceback saved in {path})", err=True)
        sys.exit(3)
    finally:
        progress.close()
    if code:  # typer.Exit(code) from a command
        sys.exit(code)


class _ProgressLines(logging.Handler):
    """The library's INFO lines (what a long first load is doing) on stderr while a command runs."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.logger = logging.getLogger("so101_sim2real")
        self.level_before = self.logger.level
        self.logger.setLevel(logging.INFO)
        self.logger.addHandler(self)

    def emit(self, record: logging.LogRecord) -> None:
        typer.echo(record.getMessage(), err=True)  # sys.stderr as it is now (a test's capture, a pipe)

    def close(self) -> None:
        self.logger.removeHandler(self)
        self.logger.setLevel(self.level_before)
        super().close()


def _save_traceback() -> str:
    import tempfile
    import time
    import traceback

    path = Path(tempfile.gettempdir()) / f"so101-traceback-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.txt"
    try:
        path.write_text(f"so101 {' '.join(sys.argv[1:])}\n\n{traceback.format_exc()}")
    except OSError:
        return "(nowhere: the temporary folder is not writable)"
    return str(path)
