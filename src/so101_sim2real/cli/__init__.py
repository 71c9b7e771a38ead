"""The ``so101`` command line."""

# Click's own help layout for every command group: two columns that wrap to the terminal
# (rich's boxed tables cut the help text into a narrow column at 80 columns and label
# flags "<bool>").
PLAIN = {"rich_markup_mode": None, "pretty_exceptions_enable": False,
         "context_settings": {"help_option_names": ["-h", "--help"]}}
