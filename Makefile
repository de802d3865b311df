# `make demo` and `make test` each create or update .venv with what they need.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.decembert-installed

.PHONY: demo test lint docs bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

# The demo pipeline on the built-in sample corpus: render its videos (and its downstream clips in
# msrvtt/), extract features with small random-init backbones (offline), dense-caption them with
# the sample corpus' scene oracle (the real captioner, Florence-2, needs a hub download), pre-train,
# then fine-tune and evaluate MSRVTT-QA and MSR-VTT retrieval on the clips, and write one HTML
# report of it all. Reruns reuse the corpus, features and captions; each run goes to demo/runs/TIME.
# DEMO_STEPS: pre-training steps instead of the demo preset's 400 (about 5 min on 2 cores: MLM reads the video,
# VTM is still at chance); `make demo DEMO_STEPS=3000`, about 26 min: where VTM left chance on the 320-video
# benchmark corpus.
DEMO ?= demo
DEMO_RUN := $(DEMO)/runs/$(shell date +%Y%m%d-%H%M%S)
DEMO_BACKBONES := --random-init --backbone-2d resnet18 --size-2d 112 --backbone-3d resnext3d-tiny --size-3d 64
DEMO_FINETUNE := --set task.root=$(DEMO)/corpus/msrvtt --set train.batch_size=16
demo: $(STAMP)
	$(BIN)/decembert sample-data $(DEMO)/corpus --features none
	HF_HUB_OFFLINE=1 $(BIN)/decembert extract-features $(DEMO)/corpus/videos --out $(DEMO)/corpus/features $(DEMO_BACKBONES)
	HF_HUB_OFFLINE=1 $(BIN)/decembert extract-features $(DEMO)/corpus/msrvtt/videos --out $(DEMO)/corpus/msrvtt/features $(DEMO_BACKBONES)
	$(BIN)/decembert dense-caption $(DEMO)/corpus/videos --backend oracle --out $(DEMO)/corpus/dense_captions
	$(BIN)/decembert dense-caption $(DEMO)/corpus/msrvtt/videos --backend oracle --out $(DEMO)/corpus/msrvtt/dense_captions
	HF_HUB_OFFLINE=1 $(BIN)/decembert pretrain --data sample --config demo --set data.root=$(DEMO)/corpus \
		--set model.feature_dim_2d=512 --set model.feature_dim_3d=256 $(if $(DEMO_STEPS),--set train.max_steps=$(DEMO_STEPS)) \
		--out $(DEMO_RUN)/pretrain
	HF_HUB_OFFLINE=1 $(BIN)/decembert finetune msrvtt-qa --checkpoint $(DEMO_RUN)/pretrain $(DEMO_FINETUNE) --set train.max_steps=150 --out $(DEMO_RUN)/msrvtt-qa
	HF_HUB_OFFLINE=1 $(BIN)/decembert evaluate msrvtt-qa --checkpoint $(DEMO_RUN)/msrvtt-qa
	HF_HUB_OFFLINE=1 $(BIN)/decembert finetune msrvtt-retrieval --checkpoint $(DEMO_RUN)/pretrain $(DEMO_FINETUNE) --set train.max_steps=400 --out $(DEMO_RUN)/msrvtt-retrieval
	HF_HUB_OFFLINE=1 $(BIN)/decembert evaluate msrvtt-retrieval --checkpoint $(DEMO_RUN)/msrvtt-retrieval
	@echo "report:"
	HF_HUB_OFFLINE=1 $(BIN)/decembert visualize report $(DEMO_RUN)

# Lint (ruff), formatting (ruff format) and types (mypy on decembert_cli/ and tasks/), all configured in
# pyproject.toml; `make test` runs them first and stops at a violation.
lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

# The documentation site (MkDocs; the API reference generated from decembert_cli.api's docstrings) into
# site/, in strict mode: a warning (a broken reference, a page missing from the nav) fails the build.
docs: $(STAMP)
	$(BIN)/mkdocs build --strict --quiet

test: lint docs
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -q

bench: $(STAMP)
	$(BIN)/python benchmarks/encoder_step.py
	$(BIN)/python benchmarks/pretrain_throughput.py
	$(BIN)/python benchmarks/extract.py
	$(BIN)/python benchmarks/retrieval_eval.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache site
