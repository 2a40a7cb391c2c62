# Two commands do everything on a fresh machine: `make run` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
ARGS   ?=
TORCH_VERSION ?= 2.13.0
export PIP_DISABLE_PIP_VERSION_CHECK := 1

WEB_SOURCES := $(shell find web_client/src web_client/index.html web_client/vite.config.ts web_client/tsconfig.json -type f 2>/dev/null)

.PHONY: run test install web interop browser lint typecheck pytest bench clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# torch first, pinned: the CPU build lies on this disk; an open range would pull a multi-GB CUDA build.
	$(BIN)/pip install -q 'torch==$(TORCH_VERSION)'
	$(BIN)/pip install -q -e '.[test,bench]'
	# basic-pitch pins TensorFlow on Linux; we run its shipped ONNX model, so install it without its pins
	# (its runtime dependencies are ours, in pyproject.toml).
	$(BIN)/pip install -q --no-deps 'basic-pitch==0.4.0'
	touch $@

web: web_client/dist/index.html

web_client/dist/index.html: web_client/package.json web_client/package-lock.json $(WEB_SOURCES)
	cd web_client && npm ci --no-audit --no-fund --loglevel=error && npm run build

interop: tests/interop/node_modules/.installed

tests/interop/node_modules/.installed: tests/interop/package.json tests/interop/package-lock.json
	cd tests/interop && npm ci --no-audit --no-fund --loglevel=error
	touch $@

# Debian's Chromium for tests/test_browser.py (Playwright drives it; it never downloads a browser).
# Debian's Firefox ESR for tests/test_browser_firefox.py (driven over WebDriver BiDi by tests/bidi_firefox.py),
# and PulseAudio, run by that test as a private null sink: Firefox's only audio output on a headless machine.
browser:
	command -v chromium >/dev/null || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium)
	command -v firefox-esr >/dev/null || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq firefox-esr)
	command -v pulseaudio >/dev/null || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends pulseaudio)

run: install web
	$(BIN)/escenario serve $(ARGS)

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: install
	$(BIN)/mypy

pytest: install web interop browser
	$(BIN)/pytest $(ARGS)

test: install web interop browser lint typecheck
	cd web_client && npm test --silent
	$(BIN)/pytest -q -p no:cacheprovider $(ARGS)

bench: install interop
	$(BIN)/python benchmarks/sync_fanout.py $(ARGS)

clean:
	rm -rf $(VENV) web_client/node_modules web_client/dist tests/interop/node_modules
