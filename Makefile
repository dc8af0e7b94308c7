# `make run` and `make test` install whatever is missing, then do their job.
VENV    ?= .venv
PY      := $(VENV)/bin/python
STAMP   := $(VENV)/.installed
# npm packages the tests read our objects with; installed once, again only when the lock file changes.
NODE_STAMP := tests/node_modules/.installed
CONFIG  ?= config/node.yaml
# Debian packages the tests use as real peers: dcmtk (scanner, PACS), Orthanc (PACS), dicom3tools (validator),
# Chromium (the dashboard, headless), PostgreSQL (the store's second database, pg_dump for backups), Node.js
# and npm (the readers OHIF and FHIR/HL7 tools use, pinned in tests/package.json, read our SEG/SR/FHIR/HL7),
# Ghostscript (PDF pages as images), systemd (systemd-analyze checks the unit files), prometheus (promtool
# checks the alert rules).
DEB_PEERS := dcmtk orthanc orthanc-dicomweb dicom3tools chromium postgresql nodejs npm ghostscript systemd prometheus
SUDO    := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: run demo test test-unit lint install peers bench clean

install: $(STAMP)

$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -e '.[test]'
	touch $@

peers:
	@if ! command -v storescu >/dev/null || ! command -v dciodvfy >/dev/null || ! command -v Orthanc >/dev/null \
	      || ! test -f /usr/share/orthanc/plugins/libOrthancDicomWeb.so \
	      || ! command -v npm >/dev/null \
	      || ! command -v systemd-analyze >/dev/null || ! command -v promtool >/dev/null \
	      || ! test -x /usr/lib/chromium/chromium || ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then \
	  echo "installing $(DEB_PEERS) from Debian"; \
	  $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $(DEB_PEERS) >/dev/null; \
	fi

run: $(STAMP)
	$(VENV)/bin/neuropetrix db upgrade --config $(CONFIG)
	exec $(VENV)/bin/neuropetrix serve --config $(CONFIG)

$(NODE_STAMP): tests/package.json tests/package-lock.json | peers
	cd tests && npm ci --no-audit --no-fund --loglevel=error
	touch $@

# With the node of `make run` running (another terminal): a whole-body PET/CT through the demo route.
demo: $(STAMP)
	$(VENV)/bin/neuropetrix demo --config $(CONFIG)

# The whole suite, lint first, its files spread over TEST_WORKERS processes (most tests wait on a peer or
# a node process, so two workers keep two cores busy; each file stays on one worker with its fixtures).
# `make test-unit` is the fast loop: no external programs, faults or slow tests.
TEST_WORKERS ?= 2
test: $(STAMP) peers $(NODE_STAMP) lint
	$(PY) -m pytest -n $(TEST_WORKERS) --dist loadfile --durations=25

test-unit: $(STAMP)
	$(PY) -m pytest -m "not peers and not slow and not faults"

lint: $(STAMP)
	$(VENV)/bin/ruff check neuropetrix tests benchmarks

bench: $(STAMP) peers
	$(PY) benchmarks/ingest.py

clean:
	rm -rf $(VENV) var .pytest_cache tests/node_modules
