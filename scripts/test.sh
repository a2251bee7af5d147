#!/usr/bin/env bash
# The whole test suite, as CI runs it (.ci/run calls exactly this). Safe to run twice.
#   1. installs what is missing (scripts/setup.sh: GDAL, Graphviz, Python helpers, moto)
#   2. checks formatting, lints and the module layering (scripts/module_graph.py), the deploy/
#      manifests (scripts/check_deploy.py), and runs an ingest as a real Slurm array job
#      (scripts/slurm-local.sh: a one-node Slurm on 127.0.0.1, stopped after)
#   3. starts a local S3 server (moto) on 127.0.0.1 for the s3:// tests, stopped on exit
#   4. builds and runs every test once, in release mode (shares the build with the demo),
#      then the Python package's tests (scripts/test-python.sh)
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/setup.sh

echo "test.sh: cargo fmt --check"
cargo fmt --all -- --check
echo "test.sh: module layering (no import circle, no file over 800 lines)"
python3 scripts/module_graph.py
echo "test.sh: cargo clippy"
cargo clippy --release --workspace --all-targets --quiet -- -D warnings
cargo build --release --quiet --bin chunkcube
echo "test.sh: deploy/ manifests (YAML/JSON parse, shard counts, chunkcube command lines)"
python3 scripts/check_deploy.py target/release/chunkcube
echo "test.sh: a 3-task Slurm array job and its commit on a local one-node Slurm"
CI=true bash scripts/slurm-local.sh fixtures/manifest.csv target/slurm-local-cube 3 </dev/null

export CHUNKCUBE_REQUIRE_PYTHON=1 CHUNKCUBE_REQUIRE_S3=1 CHUNKCUBE_REQUIRE_BROWSER=1

# A real S3-compatible server on loopback for the s3 tests, started and stopped by with-s3.sh.
run_tests() {
    # bash -c does not inherit set -e: without it a failing cargo test would not fail CI.
    set -euo pipefail
    echo "test.sh: cargo test --release (S3 server at $CHUNKCUBE_TEST_S3_ENDPOINT)"
    cargo test --release --all-targets --no-fail-fast -- --test-threads=2
    cargo test --release --doc
    # The Python package (python/): built into a venv under target/, pytest beside the same S3 server.
    bash scripts/test-python.sh
}
export -f run_tests
bash scripts/with-s3.sh bash -c run_tests
echo "test.sh: all tests passed"
