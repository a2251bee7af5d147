#!/usr/bin/env bash
# The main job on the embedded default: install what is missing (GDAL), build, ingest the
# committed fixtures into a local cube (./demo-cube) and describe it. Safe to run twice.
set -euo pipefail
cd "$(dirname "$0")/.."
export DEBIAN_FRONTEND=noninteractive

missing=()
for p in libgdal-dev gdal-bin pkg-config clang graphviz; do
    dpkg -s "$p" 2>/dev/null | grep -q '^Status: install ok installed' || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
    echo "demo.sh: apt-get install ${missing[*]}"
    apt-get update -q >/dev/null
    apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
fi

cargo build --release --quiet
bin=./target/release/chunkcube
cube=${1:-demo-cube}
$bin ingest --manifest fixtures/manifest.csv --out "$cube" --chunks time=1,y=64,x=64
$bin info "$cube"
echo
echo "demo.sh: NDVI over a lon/lat box, lazily, chunk by chunk:"
$bin calc "$cube" --expr 'ndvi=(nir-red)/(nir+red)' --lon 24.01,24.02 --lat=-20.0,-19.995 --time 2019/2019 --explain
