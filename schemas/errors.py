"""Base class for errors that a user caused and can fix; the CLI prints them as one line, never a traceback."""


class CmtpError(Exception):
    """A user-facing error: bad input, bad option, missing model. Its message says what to do."""
