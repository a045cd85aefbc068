"""User-facing errors: one clear line, no traceback, exit code 2 from the CLI."""


class ZooError(Exception):
    """A mistake in the user's input (file, field, id) with what would be valid."""

    exit_code = 2
