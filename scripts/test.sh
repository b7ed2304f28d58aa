#!/usr/bin/env bash
# The whole test suite, runnable on a fresh machine with only rustup's
# stable toolchain: installs what the tests need, then runs every check.
set -euo pipefail
cd "$(dirname "$0")/.."

# The guest component is built for wasm32-wasip2 (host/build.rs would also
# install it, or fail naming this exact command).
rustup target add wasm32-wasip2 >/dev/null

# Formatting and lints first: they fail in seconds, the build takes minutes.
if cargo fmt --version >/dev/null 2>&1; then
    cargo fmt --all --check
fi
if cargo clippy --version >/dev/null 2>&1; then
    cargo clippy --workspace --all-targets --locked -- -D warnings
fi

cargo test --workspace --locked
