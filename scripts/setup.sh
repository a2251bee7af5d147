#!/usr/bin/env bash
# Install what chunkcube's build, tests and benchmarks need on Debian 12, as root.
# Idempotent and non-interactive: installs only what is missing, so a second run does nothing.
#   sudo bash scripts/setup.sh
set -euo pipefail

export DEBIAN_FRONTEND=noninteractive
cd "$(dirname "$0")/.."                      # the crate root: requirements path is relative to it

die() { echo "setup.sh: error: $*" >&2; exit 1; }
say() { echo "setup.sh: $*"; }

[ "$(id -u)" -eq 0 ] || die "run as root (apt-get and pip install system-wide)"
command -v dpkg >/dev/null || die "dpkg not found: this script is for Debian 12"

# --- Debian packages ------------------------------------------------------------------------
# libgdal-dev/pkg-config/clang: build the gdal crate; gdal-bin: gdal_translate for the ingest
# bench; graphviz: render --graph DOT files; time: /usr/bin/time -v in benchmarks;
# python3-pip: the Python helpers below; chromium: the dashboard's browser test (headless);
# slurm-wlm + munge: scripts/slurm-local.sh runs a real one-node Slurm for the array-job test.
pkgs=(libgdal-dev gdal-bin graphviz pkg-config clang time chromium slurm-wlm munge)
# A python3 with its own pip (pyenv, a venv) needs nothing from apt; else Debian's python3 + pip.
if ! { command -v python3 >/dev/null && python3 -m pip --version >/dev/null 2>&1; }; then
    pkgs+=(python3 python3-pip)
fi
# scripts/test-python.sh makes a venv: Debian's python3 needs python3-venv for that.
if command -v python3 >/dev/null && ! python3 -c 'import ensurepip, venv' 2>/dev/null; then
    pkgs+=(python3-venv)
fi
missing=()
for p in "${pkgs[@]}"; do
    dpkg -s "$p" 2>/dev/null | grep -q '^Status: install ok installed' || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
    say "apt-get update (missing: ${missing[*]})"
    apt-get update -q >/dev/null || die "apt-get update failed"
    say "apt-get install ${missing[*]}"
    apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null \
        || die "apt-get install ${missing[*]} failed"
else
    say "Debian packages present: ${pkgs[*]}"
fi

# --- Python helpers (scripts/check_xarray.py, bench/, S3 tests) -------------------------------
command -v python3 >/dev/null || die "python3 not found after apt-get install"
python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
    || die "python3 >= 3.11 needed (zarr 3); found $(python3 --version 2>&1)"
py_mods="xarray, zarr, rioxarray, dask, distributed, moto, maturin, pytest, nbclient, nbformat, ipykernel, matplotlib, obstore, cf_xarray, tensorstore"
if python3 -c "import $py_mods" 2>/dev/null; then
    say "Python packages present ($py_mods)"
else
    # Debian's own python3 refuses pip installs (PEP 668) unless told otherwise; this machine is
    # a build box, so install next to the system packages (pip puts them in /usr/local).
    if python3 -c 'import os, sys, sysconfig; sys.exit(not (sys.prefix == sys.base_prefix and os.path.exists(os.path.join(sysconfig.get_path("stdlib"), "EXTERNALLY-MANAGED"))))'; then
        export PIP_BREAK_SYSTEM_PACKAGES=1
    fi
    say "python3 -m pip install -r scripts/requirements.txt ($(python3 --version 2>&1))"
    python3 -m pip install -q --disable-pip-version-check --root-user-action=ignore \
        -r scripts/requirements.txt || die "pip install -r scripts/requirements.txt failed"
    python3 -c "import $py_mods" \
        || die "Python packages installed but 'import $py_mods' still fails"
fi

# --- Rust toolchain (not installed here: say so if it is missing) -----------------------------
if command -v cargo >/dev/null; then
    say "cargo present: $(cargo --version)"
else
    say "warning: cargo not found; install a Rust toolchain to build chunkcube"
fi
say "done"
