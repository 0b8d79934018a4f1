"""The error a client event can provoke, raised inside the simulated model and turned into an `error` event."""

from __future__ import annotations


class ProtocolError(Exception):
    """A client event was refused. Carries the fields of an OpenAI `error` event."""

    def __init__(self, code: str, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.param = param


def missing(param: str) -> ProtocolError:
    """The error for a required field that is absent."""
    return ProtocolError("missing_required_parameter", f"Missing required parameter: '{param}'.", param)


def unknown(param: str) -> ProtocolError:
    """The error for a field the protocol does not define."""
    return ProtocolError("unknown_parameter", f"Unknown parameter: '{param}'.", param)


def invalid_value(param: str, value: object, supported: str | None = None) -> ProtocolError:
    """The error for a field whose value is out of range or not one of the accepted choices."""
    message = f"Invalid value: {value!r}."
    if supported:
        message += f" Supported values are: {supported}."
    return ProtocolError("invalid_value", message, param)


def invalid_type(param: str, expected: str) -> ProtocolError:
    """The error for a field of the wrong JSON type."""
    return ProtocolError("invalid_type", f"Invalid type for '{param}': expected {expected}.", param)
