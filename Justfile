# Developer recipes. `just` itself: `pip install rust-just` (or cargo install just).
# The README's two commands need none of this.

# List the recipes.
default:
    @just --list

# Build the CLI (and, through host/build.rs, the guest component).
build:
    cargo build --workspace

# Build the release CLI.
release:
    cargo build --release -p backendenc

# The whole test suite, as CI runs it.
test:
    bash scripts/test.sh

# Only the fast native unit tests of the guest's key hierarchy.
test-guest:
    cargo test -p backendenc-guest

# The guided tour in a temporary vault.
demo:
    cargo run -p backendenc -- demo

# Benchmarks (criterion); record the figures in docs/BENCHMARKS.md.
bench:
    cargo bench -p backendenc --bench vault

# Large-file streaming: time and peak RSS of seal/open, next to OpenSSL.
bench-stream:
    bash scripts/bench-stream.sh

# Formatting and lints.
lint:
    cargo fmt --all --check
    cargo clippy --workspace --all-targets -- -D warnings

# The component's imports: must show no wasi:sockets or wasi:http.
imports:
    cargo build -p backendenc
    cargo run -q -p backendenc -- demo | sed -n '2,9p'
