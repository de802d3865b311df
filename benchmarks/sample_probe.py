"""Does the sample corpus' planted signal survive rendering and feature extraction? A linear probe.

For every second of every sample video inside a segment, the label is the segment's object (for
the 2D features) or action (for the 3D features), from the corpus' plan. A ridge-regression
classifier is fitted on the even-numbered videos and scored on the odd ones, against the chance
rate (1 / number of labels); features are L2-normalised, then standardised per dimension.

    python benchmarks/sample_probe.py demo/corpus                # after `make demo`
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np


def probe_data(root: Path) -> dict[str, np.ndarray]:
    """Per labelled second: 2D and 3D features, object and action labels, video index."""
    from decembert_cli.data.sample import corpus as sc

    meta = sc.read_meta(root)
    if meta is None:
        raise SystemExit(f"{root} is not a sample corpus")
    args = meta["arguments"]
    rows: dict[str, list] = {"x2": [], "x3": [], "object": [], "action": [], "video": []}
    for i in range(args["videos"]):
        plan = sc._plan_video(i, args["seed"], args["misaligned"], args["irrelevant"])
        f2 = np.load(root / "features" / "2d" / f"{plan['id']}.npy").astype(np.float32)
        f3 = np.load(root / "features" / "3d" / f"{plan['id']}.npy").astype(np.float32)
        seconds = min(len(f2), len(f3))  # the 1 s grid (layout decembert)
        segments = sc._segment_at(np.arange(seconds) + 0.5, plan["segments"])
        for t, s in enumerate(segments):
            if s >= 0:
                rows["x2"].append(f2[t])
                rows["x3"].append(f3[t])
                rows["object"].append(sc.OBJECTS.index(plan["segments"][s][2]))
                rows["action"].append(sc.ACTIONS.index(plan["segments"][s][3]))
                rows["video"].append(i)
    return {k: np.asarray(v) for k, v in rows.items()}


def ridge_probe(x: np.ndarray, y: np.ndarray, video: np.ndarray, lam: float = 1e-2) -> tuple[float, float]:
    """(accuracy on odd videos of a ridge classifier fitted on even videos, chance rate)."""
    x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    x = (x - x.mean(0)) / (x.std(0) + 1e-6)
    train, test = video % 2 == 0, video % 2 == 1
    labels = np.unique(y)
    targets = (y[train, None] == labels[None]).astype(np.float64)
    a = x[train].astype(np.float64)
    w = np.linalg.solve(a.T @ a + lam * len(a) * np.eye(a.shape[1]), a.T @ targets)
    predicted = labels[(x[test] @ w).argmax(1)]
    return float((predicted == y[test]).mean()), 1.0 / len(labels)


def probe(root: Path) -> dict[str, dict[str, float]]:
    data = probe_data(Path(root))
    out = {}
    for name, x, y in (
        ("2d_object", data["x2"], data["object"]),
        ("3d_action", data["x3"], data["action"]),
        ("3d_object", data["x3"], data["object"]),
    ):
        accuracy, chance = ridge_probe(x, y, data["video"])
        out[name] = {"accuracy": round(accuracy, 4), "chance": round(chance, 4), "ratio": round(accuracy / chance, 2)}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("root", type=Path)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    result = probe(args.root)
    print(json.dumps(result, indent=2))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
