"""`decembert visualize` on the sample corpus: every picture exists at its size, the attention data equals
the model's eager attention, and the HTML report is self-contained (and renders in headless Chromium)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from decembert_cli.app import app
from decembert_cli.viz.plots import DPI
from tests.helpers import png_size

runner = CliRunner()
DIM = 16


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A rendered sample corpus with oracle dense captions, a tiny pre-training run and an evaluated QA run."""
    from decembert_cli.data.sample.corpus import generate

    base = tmp_path_factory.mktemp("viz")
    root = generate(base / "corpus", videos=8, clips=20, feature_dim_2d=DIM, feature_dim_3d=DIM, render=True)
    result = runner.invoke(
        app, ["dense-caption", str(root / "videos"), "--backend", "oracle", "--out", str(base / "dc")]
    )
    assert result.exit_code == 0, result.output
    sets = [
        f"data.root={root}",
        f"model.feature_dim_2d={DIM}",
        f"model.feature_dim_3d={DIM}",
        "data.workers=0",
        "train.batch_size=8",
        "train.max_steps=4",
        "train.log_every=1",
        "train.validate_every=2",
        "train.device=cpu",
    ]
    result = runner.invoke(
        app,
        [
            "pretrain",
            "--data",
            "sample",
            "--config",
            "tiny",
            *[x for s in sets for x in ("--set", s)],
            "--out",
            str(base / "runs" / "z-pretrain"),  # named to sort last: the report must still show it first
        ],
    )
    assert result.exit_code == 0, result.output
    qa = [f"task.root={root / 'msrvtt'}", "train.max_steps=2", "train.batch_size=4"]
    result = runner.invoke(
        app,
        [
            "finetune",
            "msrvtt-qa",
            "--checkpoint",
            str(base / "runs" / "z-pretrain"),
            *[x for s in qa for x in ("--set", s)],
            "--out",
            str(base / "runs" / "qa"),
        ],
    )
    assert result.exit_code == 0, result.output
    result = runner.invoke(app, ["evaluate", "msrvtt-qa", "--checkpoint", str(base / "runs" / "qa")])
    assert result.exit_code == 0, result.output
    return {
        "root": root,
        "dc": base / "dc",
        "pre": base / "runs" / "z-pretrain",
        "qa": base / "runs" / "qa",
        "runs": base / "runs",
    }


def test_attention_picture_and_its_numbers_are_the_models_eager_attention(runs: dict[str, Path]) -> None:
    from decembert_cli.viz.attention import attention_example

    out = runs["pre"] / "fig4.png"
    result = runner.invoke(
        app,
        [
            "visualize",
            "attention",
            "--checkpoint",
            str(runs["pre"]),
            "--video",
            "sample_0002",
            "--clip",
            "3",
            "--compare",
            str(runs["pre"]),
            "--out",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    assert png_size(out) == (14 * DPI, int(7.5 * DPI))  # two models side by side
    bad = runner.invoke(
        app, ["visualize", "attention", "--checkpoint", str(runs["pre"]), "--video", "sample_0002", "--layer", "9"]
    )
    assert bad.exit_code == 2 and "--layer 9: the model has layers 1 to 2" in bad.output
    drawn = json.loads(out.with_suffix(".json").read_text())["examples"][0]
    example = attention_example(runs["pre"], "sample_0002", 3)
    assert np.allclose(drawn["mass"], example.mass, atol=1e-6) and drawn["candidates"] == example.candidates

    # independently: rebuild the sample and read the maps BertModel itself returns on the eager path
    import dataclasses

    from decembert_cli.checkpoint import list_checkpoints, load_checkpoint
    from decembert_cli.config import Config
    from decembert_cli.config.loader import from_dict
    from decembert_cli.data.batch import collate
    from decembert_cli.data.corpus import PretrainDataset, open_corpus
    from decembert_cli.model import build_encoder, build_tokenizer

    payload = load_checkpoint(list_checkpoints(runs["pre"])[-1])
    cfg = from_dict(Config, payload["config"])
    cfg = dataclasses.replace(
        cfg,
        model=dataclasses.replace(cfg.model, init="none", attention="eager"),
        data=dataclasses.replace(cfg.data, mask_prob=0.0, negative_prob=0.0),
    )
    tok = build_tokenizer(cfg.model)
    dims = (cfg.model.feature_dim_2d, cfg.model.feature_dim_3d)
    table, _ = open_corpus("sample", cfg.data, dims, tok, strict=False)
    row = table.find("sample_0002")
    ds = PretrainDataset(table, tok, cfg.data, videos=np.array([row]), seed=cfg.seed, shuffle_candidates=False)
    sample, _ = ds.build(0, 3)
    assert sample.candidate_offsets == sorted(sample.candidate_offsets)  # the picture's candidates are in time order
    encoder, _ = build_encoder(cfg.model)
    encoder.load_state_dict({k[8:]: v for k, v in payload["model"].items() if k.startswith("encoder.")})
    encoder.eval()
    batch = collate([sample], cls_id=tok.cls_token_id, sep_id=tok.sep_token_id, pad_id=tok.pad_token_id)
    assert batch.text_pos is not None  # candidates share positions
    v = batch.video_mask.shape[1]
    cand = torch.cat([torch.full((1, v), -1), batch.caption_id], 1)[0]
    allowed = ~((cand[:, None] >= 0) & (cand[None, :] >= 0) & (cand[:, None] != cand[None, :]))  # candidates apart
    with torch.no_grad():
        maps = encoder.bert(
            inputs_embeds=torch.cat(
                [encoder.video(batch.video_2d, batch.video_3d), encoder.word_embeddings(batch.text_ids)], 1
            ),
            token_type_ids=torch.cat([torch.full(batch.video_mask.shape, 2), batch.text_type], 1),
            position_ids=torch.cat([torch.arange(v), batch.text_pos[0]])[None],
            attention_mask=allowed[None, None],
            output_attentions=True,
        ).attentions
    v = batch.video_mask.shape[1]
    for layer, att in enumerate(maps):
        for j in range(len(example.candidates)):
            cols = v + torch.nonzero(batch.caption_id[0] == j).squeeze(-1)
            expected = att[0][:, :v][:, :, cols].sum(-1).mean(-1).numpy()  # (heads,)
            np.testing.assert_allclose(example.mass[layer, :, j], expected, atol=1e-5)


def test_run_task_and_video_pictures(runs: dict[str, Path], tmp_path: Path) -> None:
    curves = tmp_path / "curves.png"
    assert (
        runner.invoke(
            app, ["visualize", "run", str(runs["pre"]), "--compare", str(runs["qa"]), "--out", str(curves)]
        ).exit_code
        == 0
    )
    width, height = png_size(curves)
    assert width == 12 * DPI and height % (3 * DPI) == 0 and height >= 6 * DPI  # 3 per row, 3 inches a row
    examples = tmp_path / "examples.png"
    result = runner.invoke(app, ["visualize", "task", str(runs["qa"]), "--count", "3", "--out", str(examples)])
    assert result.exit_code == 0, result.output
    assert png_size(examples) == (10 * DPI, int(3 * 2.2 * DPI))
    rows = [json.loads(x) for x in (runs["qa"] / "eval-test" / "predictions.jsonl").read_text().splitlines()]
    # what the picture prints
    assert all(len(r["top5"]) == 5 and abs(sum(p for _, p in r["top5"])) <= 1.0 + 1e-6 for r in rows)
    frames = tmp_path / "frames.png"
    video = runs["root"] / "videos" / "sample_0001.mp4"
    result = runner.invoke(
        app,
        [
            "visualize",
            "video",
            str(video),
            "--densecap",
            str(runs["dc"]),
            "--features",
            str(runs["root"] / "features"),
            "--most",
            "8",
            "--out",
            str(frames),
        ],
    )
    assert result.exit_code == 0, result.output
    assert png_size(frames) == (16 * DPI, int((2 * 3.2 + 3.0) * DPI))  # 8 frames in 2 rows, and the feature strip
    from decembert_cli.viz.report import frames_every

    picked = frames_every(video, 2.0, 8)
    assert len(picked) == 8 and picked[0][0] == 0.0 and picked[0][1].shape == (120, 160, 3)
    bad = runner.invoke(app, ["visualize", "task", str(runs["pre"])])
    assert bad.exit_code == 2 and "is a pretrain run" in bad.output


def test_report_is_one_self_contained_page(runs: dict[str, Path]) -> None:
    result = runner.invoke(app, ["visualize", "report", str(runs["runs"])])
    assert result.exit_code == 0, result.output
    page = Path(result.output.strip().splitlines()[-1])
    text = page.read_text()
    assert page == runs["runs"] / "report" / "index.html"
    assert text.count('src="data:image/png;base64,') >= 4  # curves of both runs, the attention map, the QA examples
    assert not re.search(r'(src|href)="(https?:)?//', text) and "<script" not in text  # nothing fetched, nothing run
    assert "msrvtt-qa, test split" in text and "last validation" in text
    _assert_summary_then_pipeline_order(text)
    assert "<details><summary>housekeeping: lr, weight_mlm" in text  # folded away under the curves that matter


def _assert_summary_then_pipeline_order(text: str) -> None:
    """The page opens on the summary, then pre-training, then the task (whatever the folders' names)."""
    summary, pre, qa = (
        text.index(x) for x in ("<h2>Summary</h2>", ": pretrain sample</h2>", ": finetune msrvtt-qa</h2>")
    )
    assert summary < pre < qa
    head = text[summary:pre]
    assert (
        "MLM accuracy on ASR tokens" in head
        and "(paper, Table 6 full)" in head
        and "(mlm_acc_asr_swapped_video)" in head
    )
    assert "msrvtt-qa (qa, test split)" in head and "37.40 (paper)" in head  # QA accuracy beside the paper's


@pytest.mark.slow
@pytest.mark.skipif(
    not (shutil.which("chromium") or shutil.which("chromium-browser")),
    reason="headless Chromium (Debian: apt-get install chromium) not installed",
)
def test_report_renders_in_headless_chromium(runs: dict[str, Path]) -> None:
    result = runner.invoke(app, ["visualize", "report", str(runs["runs"])])
    page = Path(result.output.strip().splitlines()[-1])
    shot = page.parent / "screenshot.png"
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    run = subprocess.run(
        [
            browser,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--hide-scrollbars",
            "--enable-logging=stderr",
            "--v=0",
            "--window-size=1400,2400",
            f"--screenshot={shot}",
            page.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    assert png_size(shot) == (1400, 2400)
    assert "Uncaught" not in run.stderr and "ERR_FILE_NOT_FOUND" not in run.stderr
    dom = subprocess.run(
        [
            browser,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--dump-dom",
            page.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert dom.returncode == 0, dom.stderr[-2000:]
    _assert_summary_then_pipeline_order(dom.stdout)  # as the browser laid it out
