#!/usr/bin/env bash
# The whole test suite: formatting and lints, Rust unit/integration/doc tests, then the
# end-to-end tests (tests/e2e) against a real Kafka-API broker (Tansu) and a real S3-API
# server (moto) that the suite installs and starts itself on free ports.
#   LOGLAKE_SKIP_LINT=1   skip cargo fmt --check and clippy
#   PYTEST_ARGS="-k name" pass arguments to pytest
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$ROOT"
start=$SECONDS
ensure_python
ensure_psql
ensure_build_deps

if [ "${LOGLAKE_SKIP_LINT:-0}" != 1 ]; then
  log "cargo fmt --check"
  cargo fmt --all -- --check
  log "cargo clippy"
  cargo clippy --quiet --workspace --all-targets -- -D warnings
fi

log "cargo test (unit, integration, doc)"
# pipefail (lib.sh) makes a failing test fail the suite here; the braces keep grep's own
# status ("no line left") out of it.
cargo test --workspace --quiet 2>&1 | { grep -v '^running 0 tests$' | grep -v '^$' || true; }

build_loglake
log "end-to-end tests (tests/e2e)"
"$PY" -m pytest -p no:cacheprovider "$ROOT/tests/e2e" ${PYTEST_ARGS:--q} -rs
log "suite finished in $((SECONDS - start))s"
