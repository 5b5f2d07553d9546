#!/usr/bin/env bash
# The whole test suite: formatting and lints, Rust unit/integration/doc tests, then the
# end-to-end tests (tests/e2e) against a real Kafka-API broker (Tansu) and a real S3-API
# server (moto) that the suite installs and starts itself on free ports.
#   LOGLAKE_SKIP_LINT=1   skip cargo fmt --check and clippy
#   PYTEST_ARGS="-k name" pass arguments to pytest
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$ROOT"
start=$SECONDS
# The Python clients and servers install while Rust compiles (pip mostly waits on the network).
ensure_python_in_background
ensure_psql
ensure_build_deps

if [ "${LOGLAKE_SKIP_LINT:-0}" != 1 ]; then
  log "cargo fmt --check"
  cargo fmt --all -- --check
  # Clippy rides on the test build instead of a `cargo clippy` of its own: cargo-clippy is
  # `cargo check` with clippy-driver as the workspace's rustc, and a check build compiles every
  # dependency a second time (metadata only), 10 of a cold run's minutes. With the same wrapper
  # and arguments, our crates are linted while they are compiled for the tests, every target
  # (libraries, tests, binaries, examples) as `cargo clippy --workspace --all-targets -- -D
  # warnings` lints them, and the dependencies are built once. The end-to-end binary below is
  # built with the same environment, so it reuses these artifacts.
  RUSTC_WORKSPACE_WRAPPER=$(rustup which clippy-driver 2>/dev/null || command -v clippy-driver)
  export RUSTC_WORKSPACE_WRAPPER
  export CLIPPY_ARGS="-D__CLIPPY_HACKERY__warnings__CLIPPY_HACKERY__"
  log "cargo test, linted by clippy (unit, integration, doc)"
else
  log "cargo test (unit, integration, doc)"
fi
# pipefail (lib.sh) makes a failing test fail the suite here; the braces keep grep's own
# status ("no line left") out of it.
cargo test --workspace --all-targets --quiet 2>&1 | { grep -v '^running 0 tests$' | grep -v '^$' || true; }
cargo test --workspace --doc --quiet 2>&1 | { grep -v '^running 0 tests$' | grep -v '^$' || true; }

build_loglake
wait_python
log "end-to-end tests (tests/e2e)"
# The end-to-end tests mostly wait on brokers, servers and clocks (a warm run uses about a
# fifth of one core), so pytest-xdist runs them on LOGLAKE_E2E_WORKERS processes (default 3),
# each with its own broker and S3 server.
"$PY" -m pytest -p no:cacheprovider -n "${LOGLAKE_E2E_WORKERS:-3}" --dist loadfile "$ROOT/tests/e2e" ${PYTEST_ARGS:--q} -rs
log "suite finished in $((SECONDS - start))s"
