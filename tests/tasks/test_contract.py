"""Every installed task against the plugin contract (decembert_cli.testing.check_task) on the sample corpus."""

from __future__ import annotations

from pathlib import Path

import pytest

from decembert_cli.registry import tasks
from decembert_cli.testing import check_task

DIM = 16


@pytest.fixture(scope="module")
def sample_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from decembert_cli.data.sample.corpus import generate

    return generate(
        tmp_path_factory.mktemp("sample") / "corpus", videos=8, clips=40, feature_dim_2d=DIM, feature_dim_3d=DIM
    )


@pytest.mark.parametrize("name", sorted(tasks.available()))
def test_task_follows_the_contract(name: str, sample_root: Path) -> None:
    task_cls = tasks.load(name)
    settings = task_cls.sample_settings(sample_root)
    if settings is None:
        pytest.skip(f"{name} does not say how to run on the sample corpus; its package tests it with check_task")
    result = check_task(task_cls, settings, feature_dims=(DIM, DIM))
    assert result.predictions > 0 and result.loss > 0


def test_a_broken_task_is_reported_by_name(sample_root: Path) -> None:
    class NoMetric:
        name, version, main_metric, eval_split = "broken", "1.0", "accuracy", "test"

    with pytest.raises(AssertionError, match="has no class attribute 'Config'"):
        check_task(NoMetric, {}, feature_dims=(DIM, DIM))
