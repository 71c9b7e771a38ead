"""The ``so101`` command line."""
