"""Retrieval evaluation speed: the batched all-pairs cross-encoder against a one-pair-at-a-time loop, and --rerank-k.

On the sample corpus' MSR-VTT-format test clips (a T x T gallery), with the `small` encoder (MiniLM-L6
text init, random video MLP; the speed does not depend on the weights), measures in one run:

- batched: `decembert evaluate`'s path (each clip's features and dense captions and each text
  prepared once, then `--batch-size` pairs per forward pass);
- naive: for every (text, clip) pair, read the clip's features and dense captions from disk,
  tokenise, collate one pair and run the model (what a first implementation does);
- rerank: a cosine first stage over separately encoded clips and texts, then the cross-encoder on
  each text's top K.

Both full protocols give the same scores (tests/tasks/test_retrieval.py); here only time is taken.

    python benchmarks/retrieval_eval.py                 # CPU, 48 x 48 pairs
    python benchmarks/retrieval_eval.py --device cuda --clips 5000 --arch base
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

import torch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=int, default=240, help="sample clips generated (20 %% are the test gallery)")
    parser.add_argument("--arch", default="small", choices=["tiny", "small", "base"])
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--rerank-k", type=int, default=10)
    parser.add_argument(
        "--naive-pairs", type=int, default=400, help="pairs timed for the naive loop (its rate is per pair)"
    )
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--tokenizer", default="auto", help="model.tokenizer (a folder where the package is absent)")
    parser.add_argument("--dtype", default="fp32", choices=["fp32", "bf16"], help="autocast dtype of the scoring")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "retrieval_eval_cpu2.json")
    args = parser.parse_args()

    from decembert_cli.config import ModelConfig
    from decembert_cli.data.batch import collate_with
    from decembert_cli.data.sample.corpus import generate
    from decembert_cli.data.tokenizer import tokenize_captions
    from decembert_cli.engine.finetune import TaskModel, score_split
    from decembert_cli.model import build_encoder, build_tokenizer
    from decembert_tasks.retrieval import MSRVTTRetrieval, MSRVTTRetrievalConfig, _sample

    torch.set_num_threads(torch.get_num_threads())
    device = torch.device(args.device)
    with tempfile.TemporaryDirectory() as tmp:
        root = generate(Path(tmp) / "corpus", videos=2, clips=args.clips, feature_dim_2d=2048, feature_dim_3d=2048)
        init = "auto" if args.arch == "small" and args.tokenizer == "auto" else "none"
        model_cfg = ModelConfig(arch=args.arch, init=init, tokenizer=args.tokenizer, dropout=0.0)
        tokenizer = build_tokenizer(model_cfg)
        encoder, _ = build_encoder(model_cfg)
        results: dict = {
            "device": str(device),
            "arch": args.arch,
            "threads": torch.get_num_threads(),
            "platform": platform.platform(),
            "batch_size": args.batch_size,
            "dtype": args.dtype,
        }
        autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.dtype == "bf16")

        def run(k: int) -> tuple[float, int, object]:
            task = MSRVTTRetrieval(MSRVTTRetrievalConfig(root=str(root / "msrvtt"), rerank_k=k))
            model = TaskModel(encoder, task.head(encoder)).to(device).eval()
            started = time.perf_counter()
            data = task.dataset("test", tokenizer, model_cfg, train=False)
            metric = task.metric("test")
            with autocast:
                score_split(task, model, data, metric, args.batch_size, device)
            return time.perf_counter() - started, len(data), (data, model)

        seconds, pairs, (data, model) = run(0)
        results["gallery"] = len(data.pairs.clips)
        results["batched"] = {"pairs": pairs, "seconds": round(seconds, 3), "pairs_per_s": round(pairs / seconds, 1)}
        seconds_k, _, _ = run(args.rerank_k)
        results["rerank"] = {
            "k": args.rerank_k,
            "cross_encoder_pairs": len(data.pairs.texts) * args.rerank_k,
            "seconds": round(seconds_k, 3),
            "speedup_vs_batched": round(seconds / seconds_k, 2),
        }

        from decembert_cli.data.video_store import VideoStore

        task = MSRVTTRetrieval(MSRVTTRetrievalConfig(root=str(root / "msrvtt")))
        store = VideoStore(task.config, (2048, 2048))
        clips, texts = data.pairs.clips, data.pairs.texts
        n = min(args.naive_pairs, pairs)
        started = time.perf_counter()
        with torch.inference_mode(), autocast:
            for index in range(n):  # the same sample layout, read from disk and tokenised for this pair alone
                t, c = divmod(index, len(clips))
                v2, v3 = store.features(clips[c].video_id, clips[c].window)
                dense = store.dense_tokens(tokenizer, clips[c].video_id, clips[c].window, None)
                text = tokenize_captions(tokenizer, [texts[t]], task.config.max_text_tokens)[0]
                sample = _sample(v2, v3, dense, text, {"text": t, "clip": c})
                batch = collate_with(tokenizer, [sample], model_cfg.max_video_tokens).to(device)
                model.head(model.encoder(batch), batch)
        naive_s = time.perf_counter() - started
        results["naive"] = {"pairs_timed": n, "pairs_per_s": round(n / naive_s, 1)}
        results["batched_over_naive"] = round(results["batched"]["pairs_per_s"] / results["naive"]["pairs_per_s"], 2)
        rate = results["batched"]["pairs_per_s"]
        results["extrapolation_1k_by_1k_s"] = {
            "batched": round(1e6 / rate, 1),
            "naive": round(1e6 / results["naive"]["pairs_per_s"], 1),
            "rerank": round((2000 + 1000 * args.rerank_k) / rate, 1),
        }
        results["extrapolation_note"] = (
            "seconds for 1,000 texts x 1,000 videos at this run's pairs/s; the first stage of "
            "rerank counts as 2,000 pairs (one encoding per clip and per text)"
        )
    print(json.dumps(results, indent=2))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
