#!/usr/bin/env bash
# Streams through the release CLI: wall time and peak RSS of `seal` and
# `open` for 256 MiB and 1 GiB files, next to OpenSSL's native AES-256-GCM
# on the same machine, in one run. Results go to docs/BENCHMARKS.md.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v /usr/bin/time >/dev/null || { echo "needs GNU time: apt-get install time" >&2; exit 1; }
cargo build --release -q -p backendenc
bin="${CARGO_TARGET_DIR:-target}/release/backendenc"
work=$(mktemp -d "${TMPDIR:-/tmp}/bkenc-bench.XXXXXX")
trap 'rm -rf "$work"' EXIT
echo "bench passphrase" > "$work/pw"
args=(--vault "$work/vault" --user bench --channel files --passphrase-file "$work/pw")
"$bin" --vault "$work/vault" init --user bench --channel files --passphrase-file "$work/pw" --iterations 100000 2>/dev/null

# measure MIB LABEL CLI-ARGS...: runs the CLI under GNU time and prints a table row.
measure() {
    local mib=$1 label=$2 secs kib
    shift 2
    /usr/bin/time -o "$work/t" -f "%e %M" "$bin" "$@"
    read -r secs kib < "$work/t"
    awk -v m="$mib" -v s="$secs" -v k="$kib" -v op="$label" \
        'BEGIN { printf "| %d MiB | %s | %.2f s | %.0f MiB/s | %.1f MiB |\n", m, op, s, m / s, k / 1024 }'
}

echo "| file | operation | wall time | throughput | peak RSS |"
echo "|---|---|---|---|---|"
for mib in 256 1024; do
    head -c $((mib << 20)) /dev/urandom > "$work/in"
    measure "$mib" seal seal "${args[@]}" -o "$work/sealed" "$work/in"
    measure "$mib" open open "${args[@]}" -o "$work/out" "$work/sealed"
    cmp -s "$work/in" "$work/out" || { echo "round trip differs at $mib MiB" >&2; exit 1; }
    rm -f "$work/sealed" "$work/out"
    measure "$mib" "put --asset" put "${args[@]}" --asset "file-$mib" "$work/in"
    measure "$mib" "get --asset" get "${args[@]}" --asset "file-$mib" -o "$work/out"
    cmp -s "$work/in" "$work/out" || { echo "asset round trip differs at $mib MiB" >&2; exit 1; }
    rm -f "$work/in" "$work/out"
done

echo
echo "OpenSSL $(openssl version | cut -d' ' -f2), native AES-256-GCM (AES-NI), 64 KiB blocks:"
openssl speed -evp aes-256-gcm -bytes 65536 -seconds 3 2>/dev/null | awk '/^AES-256-GCM/ { printf "  %.0f MiB/s\n", $2 * 1000 / 1048576 }'
