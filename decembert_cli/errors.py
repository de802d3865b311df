"""Errors a user can cause. The CLI turns these into one message and exit code 2."""

from __future__ import annotations

import reprlib


class DecembertError(Exception):
    """A user-facing error: the message names the file, line or key and how to fix it."""


class ConfigError(DecembertError):
    """A bad config file, key or value."""


def shown(value: object) -> str:
    """A value as an error message quotes it (what a file held where something else was expected): a short
    repr and its type, e.g. `[1, 2] (list)`; long values are cut."""
    return f"{reprlib.repr(value)} ({type(value).__name__})"
