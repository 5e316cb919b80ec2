# Two commands on a fresh Debian or Ubuntu machine: `make run` and `make test`.
SHELL := /bin/bash
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
VENV := .venv
PYTHON := $(VENV)/bin/python
export ORTHANC_HTTP_PORT ?= 8042
export ORTHANC_DICOM_PORT ?= 4242
export ORTHANC_STORAGE ?= $(CURDIR)/data

# Debian packages: Orthanc, its Python plugin, pydicom for the Python Orthanc embeds, and
# cryptography for it (used only with ReidentificationCertificates).
RUN_PACKAGES := orthanc orthanc-python python3-pydicom python3-cryptography
# What the tests add: two more Orthanc versions (trixie and sid, via debootstrap), a PostgreSQL server
# and the PostgreSQL index plugin for the two-node tests, dcmtk for DICOM network sends.
TEST_PACKAGES := $(RUN_PACKAGES) python3-venv debootstrap debian-archive-keyring postgresql \
	orthanc-postgresql dcmtk chromium
# What the tests without Orthanc use: the venv's Python, the system Python's pydicom (the README's
# walkthrough command) and DCMTK's dcmdump (the manual re-identification procedure).
UNIT_PACKAGES := python3-venv python3-pydicom dcmtk

.PHONY: run test test-unit test-bookworm test-trixie test-sid deps-run deps-unit deps-test venv ocr-venv clean

define apt_install
	missing=$$(for p in $(1); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then \
		echo "installing: $$missing"; \
		$(SUDO) apt-get update -q && \
		DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -q --no-install-recommends $$missing; \
	fi
endef

deps-run:
	@$(call apt_install,$(RUN_PACKAGES))
	@# Debian starts a system-wide Orthanc service on 8042/4242 when the package is installed.
	@if systemctl is-active --quiet orthanc 2>/dev/null; then $(SUDO) systemctl disable --now orthanc; fi

run: deps-run
	mkdir -p "$(ORTHANC_STORAGE)"
	python3 scripts/run_config.py "$(ORTHANC_STORAGE)/orthanc.run.json"
	exec Orthanc "$(ORTHANC_STORAGE)/orthanc.run.json"

# The packaged services are left alone: the tests start their own servers on free ports.
deps-unit:
	@$(call apt_install,$(UNIT_PACKAGES))

deps-test:
	@$(call apt_install,$(TEST_PACKAGES))

$(VENV)/.installed: tests/requirements.txt
	python3 -m venv $(VENV)
	$(PYTHON) -m pip install -q --upgrade pip
	$(PYTHON) -m pip install -q -r tests/requirements.txt
	touch $@

venv: $(VENV)/.installed

# The optional text reader of verify (ocr/): its own environment, for the tests that read text in pixels.
OCR_VENV := .venv-ocr
$(OCR_VENV)/.installed: ocr/requirements.txt
	python3 -m venv $(OCR_VENV)
	$(OCR_VENV)/bin/python -m pip install -q --no-deps -r ocr/requirements.txt
	touch $@

ocr-venv: $(OCR_VENV)/.installed

# The core first (seconds, no Orthanc), then what needs a real Orthanc on each version.
test: test-unit test-bookworm test-trixie test-sid

# The tests that need no Orthanc (the pure core, the engine against an in-memory Orthanc), on both
# cores: seconds. Starting an Orthanc is an error here (CONSISTENT_ANON_UNIT_ONLY), so a test that
# needs one but is not marked `server` fails instead of passing where Orthanc happens to be installed.
test-unit: deps-unit venv
	CONSISTENT_ANON_UNIT_ONLY=1 $(PYTHON) -m pytest tests -m "not server" -n 2 $(PYTEST_ARGS)

# Orthanc 1.10.1 + orthanc-python 4.0: the packages of this machine (Debian bookworm).
test-bookworm: deps-test venv ocr-venv
	ORTHANC_RUNTIME=host $(PYTHON) -m pytest tests -m server $(PYTEST_ARGS)

# Orthanc 1.12.7 + orthanc-python 5.0 (trixie) and 1.13.0 + orthanc-python 7.1 (sid), each in a
# Debian chroot built once and cached outside the repository.
test-trixie test-sid: test-%: deps-test venv ocr-venv
	chroot_dir=$$(scripts/debian-chroot.sh $*) && \
	ORTHANC_RUNTIME=chroot ORTHANC_CHROOT=$$chroot_dir $(PYTHON) -m pytest tests -m server $(PYTEST_ARGS)

# The benchmark (bench/run.py): the plugin against native Orthanc on this machine, not part of
# the tests, on the three versions as `make test`. Results in bench/results/<version>.json and
# bench/latest-<version>.json; native at its default and at its best (ResourceModification threads,
# 1.11.3+), anonymize-on-arrival over DICOM; BENCH_ARGS=--quick for a short smoke run, --scale to
# add a 20,000-instance study.
.PHONY: bench bench-bookworm bench-trixie bench-sid
bench: bench-bookworm bench-trixie bench-sid

bench-bookworm: deps-test venv ocr-venv
	ORTHANC_RUNTIME=host $(PYTHON) bench/run.py $(BENCH_ARGS)

bench-trixie bench-sid: bench-%: deps-test venv ocr-venv
	chroot_dir=$$(scripts/debian-chroot.sh $*) && \
	ORTHANC_RUNTIME=chroot ORTHANC_CHROOT=$$chroot_dir $(PYTHON) bench/run.py $(BENCH_ARGS)

clean:
	rm -rf $(VENV) $(OCR_VENV) .pytest_cache
