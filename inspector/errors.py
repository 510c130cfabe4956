"""User-facing errors: one line, naming the file and the fix. The CLI prints them without a traceback."""

from __future__ import annotations


class InspectorError(Exception):
    """An error the user can cause and fix (bad config, wrong model, unreadable footage)."""


class ConfigError(InspectorError):
    """A config, calibration or manifest file that does not validate."""


class ModelError(InspectorError):
    """A model file or manifest that does not honour the model contract (docs/ARCHITECTURE.md)."""


class SourceError(InspectorError):
    """Footage or a camera that cannot be opened or read."""


class BackendError(ModelError):
    """An inference request that failed at run time (a remote server timed out, went away or answered an error).

    The pipeline rejects the bunches of the frame it was for: a failed inference never passes a bunch.
    """

    def __init__(self, message: str, kind: str = "server") -> None:
        super().__init__(message)
        self.kind = kind  # timeout | unavailable | server | shape (the label of inspector_triton_errors_total)
