# Every target bootstraps itself: a fresh clone needs only `make demo` or `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.xprompt-installed
ARCH := $(shell uname -m)
ifeq ($(ARCH),x86_64)
TORCH_PINS := torch==2.14.1 torchvision==0.29.1
else
TORCH_PINS := torch==2.9.1 torchvision==0.24.1
endif
export HF_HUB_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false
export TORCH_EXTENSIONS_DIR ?= $(CURDIR)/.cache/torch_extensions

.PHONY: setup demo test test-slow bench lint clean campaign-leg campaign-ab photos

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q $(TORCH_PINS)
	$(PY) -m pip install -q -e ".[dev]"
	touch $(STAMP)

demo: $(STAMP)
	$(PY) -m xprompt demo --out outputs/demo

# the web app on the shipped model at http://127.0.0.1:7860 (HOST/PORT to change; docs/serve.md)
HOST ?= 127.0.0.1
PORT ?= 7860
.PHONY: serve test-browser
serve: $(STAMP)
	$(PY) -m xprompt serve --host $(HOST) --port $(PORT)

test: lint
	$(PY) -m pytest -q -m "not slow" -n 2 --dist loadfile

test-slow: $(STAMP)
	$(PY) -m pytest -q -m slow

# the web app in headless Debian Chromium (apt-get install -y chromium chromium-driver; .ci/run does it)
test-browser: $(STAMP)
	$(PY) -m pytest -q -m slow tests/test_serve_browser.py

bench: $(STAMP)
	for b in bench/*.py; do $(PY) $$b || exit 1; done

LINT_PATHS := xprompt tokenizer retrieval train eval tests bench

lint: $(STAMP)
	$(PY) -m ruff check $(LINT_PATHS)
	$(PY) -m ruff format --check $(LINT_PATHS)

# One leg of the long training run (docs/experiments.md, checkpoints/campaign/README.md): build the leg's own
# seeded data, train from the committed weights for at most MINUTES, then overwrite them with the result.
# SETS adds --set overrides: the last leg decays with SETS="--set steps=N --set decay_steps=M".
LEG ?= 1
MINUTES ?= 150
LEG_SAMPLES ?= 100000
# The Debian photograph pool (train/photo_pool.py): install its packages unless they are present and unchanged.
PHOTO_PACKAGES := opencv-doc plasma-workspace-wallpapers mate-backgrounds ukui-wallpapers
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
APT_INSTALL := $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends
photos: $(STAMP)
	$(PY) -m xprompt data photos > /dev/null 2>&1 || $(APT_INSTALL) $(PHOTO_PACKAGES) \
		|| { $(SUDO) apt-get update -q && $(APT_INSTALL) $(PHOTO_PACKAGES); }
	$(PY) -m xprompt data photos

campaign-leg: $(STAMP) photos
	test -d data/leg$(LEG) || $(PY) -m xprompt data build --split train --n $(LEG_SAMPLES) --size 64 --seed $$((100 + $(LEG))) \
		--out data/leg$(LEG) --workers 2 --shard-size 10000 --mix configs/data_mix_campaign.json --quiet
	test -d data/val64-noinstr || $(PY) -m xprompt data build --split train --n 1000 --size 64 --seed 1 \
		--out data/val64-noinstr --mix configs/data_mix_probe.json --quiet
	$(VENV)/bin/deepspeed --num_gpus 2 --module xprompt.train --config configs/campaign.json --data data/leg$(LEG) \
		--val-data data/val64-noinstr --out runs/leg$(LEG) --zero-stage 0 --no-progress \
		--set 'init_from="checkpoints/campaign"' --set max_minutes=$(MINUTES) $(SETS)
	cp checkpoints/campaign/README.md runs/leg$(LEG)/campaign_README.md  # the export replaces the folder
	$(PY) -m xprompt export --checkpoint runs/leg$(LEG)/model --out checkpoints/campaign --dtype fp32 \
		--vq checkpoints/vq-64 --bpe checkpoints/bpe/tokenizer.json
	cp runs/leg$(LEG)/campaign_README.md checkpoints/campaign/README.md

# One arm of an equal-budget A/B from the campaign's weights (docs/experiments.md): ARM names the run, SETS adds
# --set overrides, AB_MIX picks the data mix and AB_BUILD adds build options, e.g. "--split full --include-unseen"
# (each mix gets its own data, same seed, so arms differ only in it; the folder name carries a hash of the mix
# file and AB_BUILD, so data built before either changed is never reused). AB_INIT is the weights both arms start
# from (a leg's run folder, e.g. runs/leg7/model, to branch before the campaign's decay).
ARM ?= base
AB_INIT ?= checkpoints/campaign
SETS ?=
AB_MIX ?= configs/data_mix_campaign.json
AB_BUILD ?=
AB_DATA = data/ab-$(basename $(notdir $(AB_MIX)))-$(shell (cat $(AB_MIX); echo "$(AB_BUILD)") | sha256sum | cut -c1-8)
campaign-ab: $(STAMP) photos
	test -d $(AB_DATA) || $(PY) -m xprompt data build --split train --n 20000 --size 64 --seed 200 \
		--out $(AB_DATA) --workers 2 --shard-size 10000 --mix $(AB_MIX) --quiet $(AB_BUILD)
	test -d data/val64-noinstr || $(PY) -m xprompt data build --split train --n 1000 --size 64 --seed 1 \
		--out data/val64-noinstr --mix configs/data_mix_probe.json --quiet
	$(VENV)/bin/deepspeed --num_gpus 2 --module xprompt.train --config configs/campaign.json --data $(AB_DATA) \
		--val-data data/val64-noinstr --out runs/ab-$(ARM) --zero-stage 0 --no-progress \
		--set 'init_from="$(AB_INIT)"' --set max_minutes=$(MINUTES) $(SETS)
	for m in xp full; do $(PY) -m xprompt eval probe --checkpoint runs/ab-$(ARM)/model --data data/val64-noinstr \
		--limit 200 --example-mode $$m --out runs/ab-$(ARM)/probe_$$m.json --quiet; done

clean:
	rm -rf $(VENV) outputs .pytest_cache .cache
