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

echo "| file | operation | wall time | throughput | peak RSS |"
echo "|---|---|---|---|---|"
for mib in 256 1024; do
    head -c $((mib << 20)) /dev/urandom > "$work/in"
    for op in seal open; do
        if [ "$op" = seal ]; then src="$work/in" dst="$work/sealed"; else src="$work/sealed" dst="$work/out"; fi
        /usr/bin/time -o "$work/t" -f "%e %M" "$bin" "$op" "${args[@]}" -o "$dst" "$src"
        read -r secs kib < "$work/t"
        awk -v m="$mib" -v s="$secs" -v k="$kib" -v op="$op" \
            'BEGIN { printf "| %d MiB | %s | %.2f s | %.0f MiB/s | %.1f MiB |\n", m, op, s, m / s, k / 1024 }'
    done
    cmp -s "$work/in" "$work/out" || { echo "round trip differs at $mib MiB" >&2; exit 1; }
    rm -f "$work/sealed" "$work/out"
    for op in put get; do
        if [ "$op" = put ]; then
            /usr/bin/time -o "$work/t" -f "%e %M" "$bin" put "${args[@]}" --asset "file-$mib" "$work/in"
        else
            /usr/bin/time -o "$work/t" -f "%e %M" "$bin" get "${args[@]}" --asset "file-$mib" -o "$work/out"
        fi
        read -r secs kib < "$work/t"
        awk -v m="$mib" -v s="$secs" -v k="$kib" -v op="$op --asset" \
            'BEGIN { printf "| %d MiB | %s | %.2f s | %.0f MiB/s | %.1f MiB |\n", m, op, s, m / s, k / 1024 }'
    done
    cmp -s "$work/in" "$work/out" || { echo "asset round trip differs at $mib MiB" >&2; exit 1; }
    rm -f "$work/in" "$work/out"
done

echo
echo "OpenSSL $(openssl version | cut -d' ' -f2), native AES-256-GCM (AES-NI), 64 KiB blocks:"
openssl speed -evp aes-256-gcm -bytes 65536 -seconds 3 2>/dev/null | awk '/^AES-256-GCM/ { printf "  %.0f MiB/s\n", $2 * 1000 / 1048576 }'
