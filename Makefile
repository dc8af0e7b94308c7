# `make run` and `make test` install whatever is missing, then do their job.
VENV    ?= .venv
PY      := $(VENV)/bin/python
STAMP   := $(VENV)/.installed
CONFIG  ?= config/node.yaml
# Debian packages the tests use as real peers: dcmtk (scanner, PACS), Orthanc (PACS), dicom3tools (validator),
# Chromium (the dashboard, headless), PostgreSQL (the store's second database, pg_dump for backups),
# systemd (systemd-analyze checks the unit files), prometheus (promtool checks the alert rules).
DEB_PEERS := dcmtk orthanc dicom3tools chromium postgresql systemd prometheus
SUDO    := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: run demo test install peers bench clean

install: $(STAMP)

$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -e '.[test]'
	touch $@

peers:
	@if ! command -v storescu >/dev/null || ! command -v dciodvfy >/dev/null || ! command -v Orthanc >/dev/null \
	      || ! command -v systemd-analyze >/dev/null || ! command -v promtool >/dev/null \
	      || ! test -x /usr/lib/chromium/chromium || ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then \
	  echo "installing $(DEB_PEERS) from Debian"; \
	  $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $(DEB_PEERS) >/dev/null; \
	fi

run: $(STAMP)
	$(VENV)/bin/neuropetrix db upgrade --config $(CONFIG)
	exec $(VENV)/bin/neuropetrix serve --config $(CONFIG)

# With the node of `make run` running (another terminal): a whole-body PET/CT through the demo route.
demo: $(STAMP)
	$(VENV)/bin/neuropetrix demo --config $(CONFIG)

test: $(STAMP) peers
	$(PY) -m pytest

bench: $(STAMP) peers
	$(PY) benchmarks/ingest.py

clean:
	rm -rf $(VENV) var .pytest_cache
