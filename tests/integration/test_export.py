"""decembert export / load_pretrained: safetensors folders that load back to the same outputs, and that
finetune and evaluate take as checkpoints."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from decembert_cli.api import load_pretrained
from decembert_cli.app import app

runner = CliRunner()
DIM = 16


def _sets(*pairs: str) -> list[str]:
    return [x for p in pairs for x in ("--set", p)]


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A sample corpus, a 2-step pre-training run and a 2-step msrvtt-qa run from it."""
    home = tmp_path_factory.mktemp("export")
    corpus = home / "corpus"
    args = ["sample-data", str(corpus), "--videos", "12", "--clips", "40", "--feature-dim", str(DIM), "--no-render"]
    assert runner.invoke(app, args).exit_code == 0
    common = ("train.batch_size=8", "train.max_steps=2", "train.device=cpu")
    pre = home / "pre"
    dims = (f"model.feature_dim_2d={DIM}", f"model.feature_dim_3d={DIM}")
    sets = _sets(f"data.root={corpus}", "data.workers=0", *dims, *common)
    result = runner.invoke(app, ["pretrain", "--data", "sample", "--config", "tiny", *sets, "--out", str(pre)])
    assert result.exit_code == 0, result.output
    qa = home / "qa"
    sets = _sets(f"task.root={corpus / 'msrvtt'}", *common)
    result = runner.invoke(app, ["finetune", "msrvtt-qa", "--checkpoint", str(pre), *sets, "--out", str(qa)])
    assert result.exit_code == 0, result.output
    ret = home / "ret"
    result = runner.invoke(app, ["finetune", "msrvtt-retrieval", "--checkpoint", str(pre), *sets, "--out", str(ret)])
    assert result.exit_code == 0, result.output
    return {"corpus": corpus, "pre": pre, "qa": qa, "ret": ret, "home": home}


def _export(run: Path, out: Path) -> Path:
    result = runner.invoke(app, ["export", str(run), "--out", str(out)])
    assert result.exit_code == 0, result.output
    return out


def _no_pickle(folder: Path) -> None:
    for path in folder.iterdir():
        head = path.read_bytes()[:2]
        assert path.suffix not in (".pt", ".bin", ".pkl", ".pickle") and head[:1] != b"\x80", path  # pickle opcode


def _batch(corpus: Path, loaded: object, n: int = 6) -> object:
    from decembert_cli.data.corpus import PretrainDataset, open_corpus

    config = loaded.config  # type: ignore[attr-defined]
    tok = loaded.tokenizer  # type: ignore[attr-defined]
    table, _ = open_corpus("sample", config.data, (DIM, DIM), tok, strict=False)
    data = PretrainDataset(table, tok, config.data, seed=1)
    return data.collate([data[i] for i in range(n)])


def test_a_pretraining_export_loads_back_to_the_same_outputs(runs: dict[str, Path]) -> None:
    folder = _export(runs["pre"], runs["home"] / "pre-export")
    _no_pickle(folder)
    assert {"model.safetensors", "config.json", "README.md", "tokenizer.json", "tokenizer_config.json"} <= {
        p.name for p in folder.iterdir()
    }
    described = json.loads((folder / "config.json").read_text())
    assert described["hidden_size"] > 0 and described["decembert"]["config"]["model"]["feature_dim_2d"] == DIM
    card = (folder / "README.md").read_text()
    assert "pre-trained on the `sample` corpus" in card and "decembert export" in card and "vtm_acc" in card
    ours, theirs = load_pretrained(runs["pre"]), load_pretrained(folder)
    assert ours.kind == theirs.kind == "pretrain"
    batch = _batch(runs["corpus"], ours)
    with torch.no_grad():
        a, b = ours.encoder(batch), theirs.encoder(batch)  # type: ignore[operator]
        la, lb = ours.model(batch).losses, theirs.model(batch).losses  # type: ignore[operator]
    assert torch.allclose(a.sequence, b.sequence, atol=1e-6, rtol=0) and a.sequence.abs().max() > 0
    assert all(abs(float(la[k]) - float(lb[k])) <= 1e-6 for k in la)
    result = runner.invoke(app, ["export", str(runs["pre"]), "--out", str(folder)])
    assert result.exit_code == 2 and "exists" in result.output  # never overwritten


def test_a_fine_tuned_export_scores_like_its_run(runs: dict[str, Path]) -> None:
    folder = _export(runs["qa"], runs["home"] / "qa-export")
    _no_pickle(folder)
    ours, theirs = load_pretrained(runs["qa"]), load_pretrained(folder)
    assert theirs.kind == "finetune" and theirs.task.state() == ours.task.state()  # the answer vocabulary travels
    for a, b in zip(ours.model.state_dict().values(), theirs.model.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    scores = []
    for checkpoint in (runs["qa"], folder):
        out = runs["home"] / f"eval-{checkpoint.name}"
        args = ["evaluate", "msrvtt-qa", "--checkpoint", str(checkpoint), "--out", str(out), "--split", "val"]
        result = runner.invoke(app, [*args, "--set", f"task.root={runs['corpus'] / 'msrvtt'}"])
        assert result.exit_code == 0, result.output
        scores.append(json.loads((out / "metrics.json").read_text())["metrics"])
    assert scores[0] == scores[1]


def test_finetuning_starts_from_an_export(runs: dict[str, Path], tmp_path: Path) -> None:
    from decembert_cli.engine.finetune import prepare

    folder = runs["home"] / "pre-export"
    if not folder.exists():
        _export(runs["pre"], folder)
    setup = prepare("msrvtt-qa", None, [f"task.root={runs['corpus'] / 'msrvtt'}"], tmp_path / "ft", folder)
    pre = load_pretrained(runs["pre"]).encoder.state_dict()
    assert all(torch.equal(v, pre[k]) for k, v in setup.job.model.encoder.state_dict().items())
    assert setup.config.model.tokenizer == str(folder)  # the export's own tokenizer files


def test_the_documented_python_example_runs(runs: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    readme = (Path(__file__).parents[2] / "docs" / "commands" / "export.md").read_text()
    code = readme.split("<!-- python-api -->\n```python\n", 1)[1].split("```", 1)[0]
    for theirs, ours in {
        '"runs/h100m"': repr(str(runs["pre"])),
        '"runs/qa"': repr(str(runs["qa"])),
        '"runs/ret"': repr(str(runs["ret"])),
        '"data/msrvtt"': repr(str(runs["corpus"] / "msrvtt")),
        "(2048, 2048)": f"({DIM}, {DIM})",
        '"video7"': '"video1"',
    }.items():
        assert theirs in code
        code = code.replace(theirs, ours)
    namespace: dict = {}
    exec(compile(code, "docs/commands/export.md", "exec"), namespace)
    printed = capsys.readouterr().out.splitlines()
    assert len(printed) == 4 and printed[0].startswith("torch.Size([1,")
    assert namespace["mass"].shape[-1] == 2 and namespace["out"].candidate_u.shape[-1] == 2
    assert isinstance(namespace["answer"](namespace["qa"], namespace["video_2d"], namespace["video_3d"], "who?"), str)
    score = float(printed[3])
    assert score == namespace["retrieval_score"](
        namespace["ret"], namespace["video_2d"], namespace["video_3d"], "a man is cooking"
    )
