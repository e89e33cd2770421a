"""The one error type for what a user asked for wrongly."""


class BenchError(Exception):
    """An error in what the user asked for; the CLI prints it as one line and exits with 2."""
