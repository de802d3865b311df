# `make demo` and `make test` each create or update .venv with what they need.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.decembert-installed

.PHONY: demo test bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

# The demo pipeline on the built-in sample corpus: render its videos, extract features with small
# random-init backbones (offline), dense-caption them with the sample corpus' scene oracle (the real
# captioner, Florence-2, needs a hub download), pre-train. Reruns reuse the corpus, features and captions.
DEMO ?= demo
DEMO_BACKBONES := --random-init --backbone-2d resnet18 --size-2d 112 --backbone-3d resnext3d-tiny --size-3d 64
demo: $(STAMP)
	$(BIN)/decembert sample-data $(DEMO)/corpus --features none
	HF_HUB_OFFLINE=1 $(BIN)/decembert extract-features $(DEMO)/corpus/videos --out $(DEMO)/corpus/features $(DEMO_BACKBONES)
	$(BIN)/decembert dense-caption $(DEMO)/corpus/videos --backend oracle --out $(DEMO)/corpus/dense_captions
	HF_HUB_OFFLINE=1 $(BIN)/decembert pretrain --data sample --config demo --set data.root=$(DEMO)/corpus \
		--set model.feature_dim_2d=512 --set model.feature_dim_3d=256

test: $(STAMP)
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -q

bench: $(STAMP)
	$(BIN)/python benchmarks/encoder_step.py
	$(BIN)/python benchmarks/pretrain_throughput.py
	$(BIN)/python benchmarks/extract.py

clean:
	rm -rf $(VENV) .pytest_cache
