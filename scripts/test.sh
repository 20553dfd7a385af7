#!/usr/bin/env bash
# What CI runs, and what a developer runs before pushing: formatting, lints,
# and every test (unit, integration, end-to-end) against the real local
# PostgreSQL, Redis and RabbitMQ, which are started if they are stopped.
set -euo pipefail
cd "$(dirname "$0")/.."

export CARGO_TERM_COLOR=${CARGO_TERM_COLOR:-never}
# Two cores and a 90-minute budget: keep debug info small, build in parallel.
export CARGO_INCREMENTAL=${CARGO_INCREMENTAL:-0}

step() { printf '\n==> %s\n' "$*"; }

step "toolchain"
if ! cargo fmt --version >/dev/null 2>&1 || ! cargo clippy --version >/dev/null 2>&1; then
  rustup component add rustfmt clippy
fi
cargo --version

step "services"
scripts/dev-services.sh

step "test clients"
# A gRPC client we did not write, for the reflection test.
if ! python3 -c "import grpc_reflection, google.protobuf" 2>/dev/null; then
  python3 -m pip install --quiet --disable-pip-version-check grpcio grpcio-reflection protobuf
fi

# Debian's packages: a browser we did not write, for the HTML report's
# test, and promtool (package prometheus), which checks the shipped alert
# rules and runs their unit tests, and openssl, which makes the TLS tests'
# certificate authority.
packages=()
command -v chromium >/dev/null 2>&1 || packages+=(chromium)
command -v chromedriver >/dev/null 2>&1 || packages+=(chromium-driver)
command -v promtool >/dev/null 2>&1 || packages+=(prometheus)
command -v openssl >/dev/null 2>&1 || packages+=(openssl)
if [ "${#packages[@]}" -gt 0 ]; then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${packages[@]}" >/dev/null
fi

step "deployment files"
# Kubernetes manifests, compose files, Prometheus config, Dockerfile, scripts.
scripts/check-deploy.sh

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy -D warnings"
cargo clippy --workspace --all-targets --locked -- -D warnings

step "cargo test"
# Test binaries run one after another; tests inside a binary in parallel.
cargo test --workspace --locked --no-fail-fast -- --test-threads "${GAUNTLET_TEST_THREADS:-4}"
