"""Engine exceptions. Every message is written for the person who must act on it."""


class ClearskyError(Exception):
    """Base class: str(error) is a plain-language message a user can act on."""


class InvalidParameterError(ClearskyError):
    """A parameter is missing, out of range or inconsistent."""


class AoiError(InvalidParameterError):
    """The area of interest is empty, invalid or cannot be read."""


class CatalogError(ClearskyError):
    """The STAC API could not be reached or answered something unusable."""


class NoScenesError(ClearskyError):
    """No scene is left after the filters; the message says which filter removed them."""


class ReadError(ClearskyError):
    """A raster asset could not be read, even after retries."""


class OutputError(ClearskyError):
    """The output cannot be written (folder missing or read-only, file exists, ...)."""


class CancelledError(ClearskyError):
    """The user cancelled the run; nothing was written."""

    def __init__(self, message: str = "Cancelled by the user; no output was written.") -> None:
        super().__init__(message)
