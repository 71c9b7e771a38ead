"""The ``so101`` command line."""

from typing import Any, Literal, TypedDict


class PlainSettings(TypedDict):
    """The keywords of :class:`typer.Typer` that :data:`PLAIN` sets, typed as Typer declares them."""

    rich_markup_mode: Literal["markdown", "rich"] | None
    pretty_exceptions_enable: bool
    context_settings: dict[Any, Any]


# Click's own help layout for every command group: two columns that wrap to the terminal
# (rich's boxed tables cut the help text into a narrow column at 80 columns and label
# flags "<bool>").
PLAIN: PlainSettings = {"rich_markup_mode": None, "pretty_exceptions_enable": False,
                        "context_settings": {"help_option_names": ["-h", "--help"]}}
