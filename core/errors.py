"""Errors that carry a message meant for a person, not a traceback."""


class BoneSentinelError(Exception):
    """Base class: ``str(err)`` is a complete, user-readable sentence."""


class ImageRejected(BoneSentinelError):
    """A file that cannot be scored; the message names the file and the reason."""

    def __init__(self, name: str, reason: str) -> None:
        super().__init__(f"{name}: {reason}")
        self.name = name
        self.reason = reason


class BundleError(BoneSentinelError):
    """A model bundle that is missing, altered or incompatible with this code."""
