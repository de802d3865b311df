"""Entry-point registry: discovery without import, lazy load, broken plugins, duplicates."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from decembert_cli.errors import DecembertError
from decembert_cli.registry import Registry

GROUP = "decembert.testing-plugins"


def _install_fake_dist(root: Path, name: str, version: str, entry_points: dict[str, str]) -> None:
    info = root / f"{name.replace('-', '_')}-{version}.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
    lines = [f"[{GROUP}]"] + [f"{k} = {v}" for k, v in entry_points.items()]
    (info / "entry_points.txt").write_text("\n".join(lines) + "\n")


@pytest.fixture
def plugin_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    (tmp_path / "good_plugin.py").write_text("LOADS = []\nclass Thing:\n    pass\nLOADS.append(1)\n")
    (tmp_path / "broken_plugin.py").write_text("raise ImportError('needs a missing dependency')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    yield tmp_path
    for mod in ("good_plugin", "broken_plugin"):
        sys.modules.pop(mod, None)


def test_discovers_without_importing_and_loads_lazily(plugin_path: Path) -> None:
    _install_fake_dist(plugin_path, "good-pkg", "1.2.3", {"good": "good_plugin:Thing"})
    registry = Registry(GROUP, "thing")
    info = registry.available()["good"]
    assert (info.package, info.version, info.target) == ("good-pkg", "1.2.3", "good_plugin:Thing")
    assert "good_plugin" not in sys.modules
    thing = registry.load("good")
    assert thing.__name__ == "Thing" and sys.modules["good_plugin"].LOADS == [1]
    assert registry.load("good") is thing


def test_broken_plugin_is_named_and_others_still_work(plugin_path: Path) -> None:
    _install_fake_dist(plugin_path, "good-pkg", "1.0", {"good": "good_plugin:Thing"})
    _install_fake_dist(plugin_path, "broken-pkg", "0.1", {"broken": "broken_plugin:Thing"})
    registry = Registry(GROUP, "thing")
    loaded, broken = registry.load_all()
    assert list(loaded) == ["good"]
    assert "broken-pkg 0.1 failed to load" in broken["broken"] and "needs a missing dependency" in broken["broken"]
    with pytest.raises(DecembertError, match="unknown thing 'nope'; installed: broken, good"):
        registry.load("nope")


def test_duplicate_names_are_an_error_naming_both_packages(plugin_path: Path) -> None:
    _install_fake_dist(plugin_path, "first-pkg", "1.0", {"same": "good_plugin:Thing"})
    _install_fake_dist(plugin_path, "second-pkg", "1.0", {"same": "broken_plugin:Thing"})
    with pytest.raises(
        DecembertError, match="registered twice.*first-pkg.*second-pkg|registered twice.*second-pkg.*first-pkg"
    ):
        Registry(GROUP, "thing").available()


def test_empty_group_lists_nothing() -> None:
    registry = Registry("decembert.no-such-group", "corpus")
    assert registry.available() == {}
    with pytest.raises(DecembertError, match="none installed"):
        registry.load("howto100m")


def test_shipped_corpora_follow_the_corpus_contract() -> None:
    import inspect

    from decembert_cli.protocols import CorpusOpener
    from decembert_cli.registry import corpora

    expected = list(inspect.signature(CorpusOpener.__call__).parameters)[1:]
    assert {"howto100m", "sample"} <= set(corpora.available())
    for name in ("howto100m", "sample"):
        opener = corpora.load(name)
        assert list(inspect.signature(opener).parameters) == expected, name
