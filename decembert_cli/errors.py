"""Errors a user can cause. The CLI turns these into one message and exit code 2."""

from __future__ import annotations


class DecembertError(Exception):
    """A user-facing error: the message names the file, line or key and how to fix it."""


class ConfigError(DecembertError):
    """A bad config file, key or value."""
