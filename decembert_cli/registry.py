"""Entry-point discovery for pluggable parts (tasks, corpora, ...).

Plugins are found through package metadata without importing them, and imported only when used.
A plugin that fails to import (whatever it raises: SystemExit and KeyboardInterrupt too) or is not what
its group needs (a task class, a callable corpus) is reported with its name, package and the reason, and
does not break the others; two packages registering the same name is an error naming both.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from importlib import metadata
from typing import Any

from decembert_cli.errors import DecembertError
from decembert_cli.protocols import TASK_ATTRIBUTES

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
    """The plugins of one entry-point group; `problem(obj)` says why a loaded object cannot serve (None: it can)."""

    def __init__(self, group: str, kind: str, problem: Callable[[Any], str | None] | None = None) -> None:
        self.group = group
        self.kind = kind  # "task", "corpus": used in messages
        self.problem = problem
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
        plugin = f"{self.kind} '{info.name}' from package {info.package} {info.version}"
        try:
            obj = ep.load()
            problem = self.problem(obj) if self.problem is not None else None
        except BaseException as exc:  # a broken plugin must not take the CLI down, even one that exits
            first = (str(exc).strip().splitlines() or [""])[0][:300]
            reason = f"{exc.__class__.__name__}: {first}" if first else exc.__class__.__name__
            raise DecembertError(f"{plugin} failed to load ({reason}); reinstall or fix that package") from exc
        if problem is not None:
            raise DecembertError(f"{plugin} {problem}; fix that package")
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


def _not_a_task(obj: Any) -> str | None:
    if not isinstance(obj, type):
        return f"is {_a(obj)}, not a task class (decembert_cli.protocols.Task)"
    missing = [name for name in TASK_ATTRIBUTES if not hasattr(obj, name)]
    return f"is a class without {', '.join(missing)} (decembert_cli.protocols.Task)" if missing else None


def _not_a_corpus(obj: Any) -> str | None:
    if callable(obj):
        return None
    return f"is {_a(obj)}, which is not callable (a corpus is a CorpusOpener function or an IndexedCorpus)"


def _a(obj: Any) -> str:
    name = type(obj).__name__
    return f"{'an' if name[:1].lower() in 'aeiou' else 'a'} {name}"


tasks = Registry(TASKS, "task", _not_a_task)
corpora = Registry(CORPORA, "corpus", _not_a_corpus)
