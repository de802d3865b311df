"""Entry-point discovery for pluggable parts (tasks, corpora, ...).

Plugins are found through package metadata without importing them, and imported only when used.
A plugin that fails to import is reported with its name and package and does not break the others;
two packages registering the same name is an error naming both.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import metadata
from typing import Any

from decembert_cli.errors import DecembertError

TASKS = "decembert.tasks"
CORPORA = "decembert.corpora"


@dataclass(frozen=True)
class PluginInfo:
    name: str  # user-facing name, e.g. msrvtt-qa
    group: str  # entry-point group
    target: str  # "module:attribute"
    package: str  # distribution that registered it
    version: str  # that distribution's version


class Registry:
    """The plugins of one entry-point group."""

    def __init__(self, group: str, kind: str) -> None:
        self.group = group
        self.kind = kind  # "task", "corpus": used in messages
        self._loaded: dict[str, Any] = {}

    def available(self) -> dict[str, PluginInfo]:
        """Name -> PluginInfo for every installed plugin, without importing any of them."""
        found: dict[str, PluginInfo] = {}
        for ep in metadata.entry_points(group=self.group):
            dist = getattr(ep, "dist", None)
            info = PluginInfo(
                name=ep.name,
                group=self.group,
                target=ep.value,
                package=dist.metadata["Name"] if dist is not None else "?",
                version=dist.version if dist is not None else "?",
            )
            other = found.get(ep.name)
            if other is not None and (other.package, other.target) != (info.package, info.target):
                raise DecembertError(
                    f"{self.kind} '{ep.name}' is registered twice: by {other.package} ({other.target}) and by "
                    f"{info.package} ({info.target}); uninstall one of the two packages"
                )
            found[ep.name] = info
        return dict(sorted(found.items()))

    def load(self, name: str) -> Any:
        """Import and return the plugin object registered as `name`."""
        if name in self._loaded:
            return self._loaded[name]
        plugins = self.available()
        if name not in plugins:
            names = ", ".join(plugins) or "none installed"
            raise DecembertError(f"unknown {self.kind} '{name}'; installed: {names}")
        return self._import(plugins[name])

    def _import(self, info: PluginInfo) -> Any:
        if info.name in self._loaded:
            return self._loaded[info.name]
        ep = metadata.EntryPoint(name=info.name, value=info.target, group=self.group)
        try:
            obj = ep.load()
        except Exception as exc:  # a broken plugin must not take the CLI down with it
            raise DecembertError(
                f"{self.kind} '{info.name}' from package {info.package} {info.version} failed to load "
                f"({exc.__class__.__name__}: {exc}); reinstall or fix that package"
            ) from exc
        self._loaded[info.name] = obj
        return obj

    def load_all(self) -> tuple[dict[str, Any], dict[str, str]]:
        """(name -> object for those that load, name -> error message for those that do not)."""
        loaded, broken = {}, {}
        for name, info in self.available().items():  # one metadata scan for all of them
            try:
                loaded[name] = self._import(info)
            except DecembertError as exc:
                broken[name] = str(exc)
        return loaded, broken


tasks = Registry(TASKS, "task")
corpora = Registry(CORPORA, "corpus")
