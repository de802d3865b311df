"""decembert: the DeCEMBERT video-and-language toolkit (library core and CLI)."""

from __future__ import annotations

from importlib import metadata

try:
    __version__ = metadata.version("decembert")
except metadata.PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0+unknown"
