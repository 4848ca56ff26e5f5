"""User-facing errors.

A :class:`WorldlineError` carries one line that names the culprit (file, field or value). The CLI
prints it as ``error: <message>`` and exits with status 2, without a traceback.
"""


class WorldlineError(Exception):
    """An error caused by the user's input (data, config, arguments), reported as one clear line."""

    def __init__(self, message: str):
        message = " ".join(str(message).split())  # always one line
        super().__init__(message)
