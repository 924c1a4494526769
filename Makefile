# Two entry points for a fresh machine (root, Debian 12, Python >= 3.11):
#   make run   - install, then run the hello sandbox
#   make test  - install everything the tests need, then lint, type-check and test
VENV     ?= .venv
# The venv is made from the distribution's interpreter when it is new enough,
# else from python3 on PATH. Debian builds /usr/bin/python3 with PGO and LTO, links
# libpython statically and compiles _struct, fcntl, _sha256 and others in (no
# dlopen each): every `vbdecl run` and `vb` starts ~3 ms faster (README,
# Performance). Its python3-seccomp and python3-nftables are built for it, too.
SYSTEM_PYTHON ?= /usr/bin/python3
PYTHON   ?= python3
PY       := $(VENV)/bin/python
# What vbdecl itself needs at run time (seccomp and nftables through their
# official bindings, uidmap for id ranges), then what only the tests need
# (bubblewrap and crun to compare against, dpkg-dev for bubblewrap's test suite).
# Building vbdecl's C extension (vbdecl/sys/_linux.c, raw syscalls) needs a C
# compiler and the Python headers.
BUILDPKGS := gcc libc6-dev python3-dev
RUNPKGS  := python3-seccomp libseccomp2 nftables python3-nftables iproute2 uidmap
SYSPKGS  := $(RUNPKGS) bubblewrap crun dpkg-dev gcc libcap2-bin
# A plain .pth entry instead of the import-hook finder: interpreter start-up
# is ~10 ms faster, which the run path (vbdecl run, exec, vb) pays every time.
EDITABLE := --config-settings editable_mode=compat
# The C extension's sources: a change to any of them builds it again.
CSOURCES := $(wildcard vbdecl/sys/*.c vbdecl/sys/*.h)
PYTEST_ARGS ?=

.PHONY: run test lint typecheck unit integration sysdeps bench schema clean

run: $(VENV)/.installed
	@$(MAKE) --no-print-directory sysdeps SYSPKGS="$(RUNPKGS)"
	$(VENV)/bin/vbdecl run manifests/hello.yaml

test: sysdeps $(VENV)/.installed-dev lint typecheck
	$(PY) -m pytest -n 2 $(PYTEST_ARGS)

lint: $(VENV)/.installed-dev
	$(VENV)/bin/ruff check vbdecl tests benchmarks

typecheck: $(VENV)/.installed-dev
	$(VENV)/bin/mypy

unit: $(VENV)/.installed-dev
	$(PY) -m pytest -n 2 tests/unit $(PYTEST_ARGS)

# System packages, installed only when one is missing (needs root).
sysdeps:
	@missing=""; for p in $(SYSPKGS); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
		echo "installing system packages:$$missing"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	fi

# A venv from SYSTEM_PYTHON (>= 3.11, with venv and ensurepip), else from PYTHON;
# one without pip (a half-made one) is made again. A directory that exists but
# is no venv is left alone.
define make_venv
	@[ -x $(PY) ] && [ -x $(VENV)/bin/pip ] || { \
		[ ! -e $(VENV) ] || [ -f $(VENV)/pyvenv.cfg ] || [ -z "$$(ls -A $(VENV))" ] \
			|| { echo "$(VENV) exists and is not a venv: remove it or set VENV" >&2; exit 1; }; \
		{ $(SYSTEM_PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null \
			&& $(SYSTEM_PYTHON) -m venv --clear $(VENV) 2>/dev/null; } || $(PYTHON) -m venv --clear $(VENV); }
endef
# After the install, so that nothing brings it back: pip builds vbdecl in an
# isolated environment, and the .pth file setuptools puts in a venv is read by
# every start of the interpreter.
define drop_setuptools
	@$(PY) -m pip uninstall -q -y setuptools >/dev/null 2>&1 || true
endef
# The console scripts run on a link to the venv's interpreter whose ._pth file
# (CPython's own override of sys.path, 3.11+) holds the path the venv's `site`
# computes, the entries that exist: that interpreter starts without `site` and
# never reads PYTHONPATH, ~0.6 ms less for every `vb`, `vbdecl run` and
# `vbdecl exec` (docs/performance.md). The checkout vbdecl is installed from
# (editable) comes first, where `import vbdecl` finds it without listing the
# directories before it (0.16 ms); vbdecl is its only importable module.
# pip writes the scripts' first line; it is pointed at that link here.
define fast_start
	@ln -sfn python $(VENV)/bin/vbdecl-python
	@$(PY) -I -c 'import os, sys, sysconfig, vbdecl; \
		found = [p for p in sys.path if p and os.path.exists(p)]; \
		own = os.path.dirname(vbdecl.__path__[0]); \
		shared = {sysconfig.get_path(k) for k in ("stdlib", "platstdlib", "purelib", "platlib")}; \
		first = [own] if own in found and own not in shared else []; \
		print(*first, *(p for p in found if p not in first), sep="\n")' > $(VENV)/bin/vbdecl-python._pth
	@sed -i '1s|^#!.*|#!$(abspath $(VENV))/bin/vbdecl-python|' $(VENV)/bin/vb $(VENV)/bin/vbdecl
endef

# (The Makefile is a prerequisite: it says how the venv is made, fast_start included.)
$(VENV)/.installed: pyproject.toml Makefile $(CSOURCES) bin/vb bin/vbdecl
	@$(MAKE) --no-print-directory sysdeps SYSPKGS="$(BUILDPKGS)"
	$(make_venv)
	$(PY) -m pip install -q --disable-pip-version-check -e . $(EDITABLE)
	$(drop_setuptools)
	$(fast_start)
	@touch $@

$(VENV)/.installed-dev: pyproject.toml Makefile $(CSOURCES) bin/vb bin/vbdecl
	@$(MAKE) --no-print-directory sysdeps SYSPKGS="$(BUILDPKGS)"
	$(make_venv)
	$(PY) -m pip install -q --disable-pip-version-check -e '.[dev]' $(EDITABLE)
	$(drop_setuptools)
	$(fast_start)
	@touch $@ $(VENV)/.installed

schema: $(VENV)/.installed
	$(VENV)/bin/vbdecl schema > schema/vbdecl.schema.json

bench: $(VENV)/.installed-dev sysdeps
	$(PY) benchmarks/run.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache vbdecl/sys/_linux.*.so
