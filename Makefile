# pfx build and test entry points.  See README.md.

PYTHON   ?= python3.11
VENV     := .venv
VPY      := $(VENV)/bin/python
STAMP    := $(VENV)/.installed
# Debian packages the build and the tests need (libcap-dev for python-prctl;
# swaks is a client in the smtpd tests).
DEB_PKGS := libcap-dev gcc python3-dev python3-venv swaks

.PHONY: all deps venv compile test run bench man clean install uninstall

all: venv

# System packages: installed only when missing, and only when we are root.
deps:
	@missing=""; for p in $(DEB_PKGS); do \
	    dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	    if [ "$$(id -u)" = 0 ]; then \
	        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	    else echo "make: please install:$$missing" >&2; exit 1; fi; \
	fi

$(STAMP): pyproject.toml
	$(MAKE) deps
	command -v $(PYTHON) >/dev/null 2>&1 || { echo "make: $(PYTHON) not found" >&2; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(VPY) -m pip install -q --upgrade pip
	$(VPY) -m pip install -q --config-settings editable_mode=compat -e '.[test]'
	touch $@

# Byte-compile the sources: commands start faster, even where the
# environment sets PYTHONDONTWRITEBYTECODE.
compile: $(STAMP)
	@$(VPY) -m compileall -q libpfx daemons tools

venv: $(STAMP) compile

test: $(STAMP) compile
	$(VPY) -m pytest -n auto -q tests

# A self-contained instance under ./run/ (configuration, queue and tables).
run: $(STAMP) compile
	$(VPY) -m tools.runinstance --start $(CURDIR)/run

bench: $(STAMP) compile
	$(VPY) bench/run.py

man: $(STAMP)
	$(VPY) -m tools.mkman man

# Installation (tools/install.sh): commands in $(DESTDIR)$(PREFIX)/sbin,
# the code in $(PREFIX)/lib/pfx, configuration in /etc/postfix (kept when
# present), a set-gid postdrop and postqueue built with $(CC).  PFX_PYTHON
# is the interpreter that has pfx's dependencies: by default this
# checkout's; a package would name the system's.  Without DESTDIR the
# postfix user and postdrop group are created when missing
# (CREATE_ACCOUNTS=no prevents it).
PREFIX     ?= /usr
PFX_PYTHON ?= $(abspath $(VPY))
CC         ?= gcc

install:
	DESTDIR="$(DESTDIR)" PREFIX="$(PREFIX)" PFX_PYTHON="$(PFX_PYTHON)" CC="$(CC)" \
	    $(if $(CREATE_ACCOUNTS),CREATE_ACCOUNTS="$(CREATE_ACCOUNTS)") \
	    $(if $(CONFIG_DIR),CONFIG_DIR="$(CONFIG_DIR)") \
	    $(if $(ALIASES_FILE),ALIASES_FILE="$(ALIASES_FILE)") sh tools/install.sh install

# Removes what the manifest written by install lists, nothing else.
uninstall:
	DESTDIR="$(DESTDIR)" PREFIX="$(PREFIX)" sh tools/install.sh uninstall

clean:
	rm -rf $(VENV) build *.egg-info man
