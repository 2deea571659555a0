#!/usr/bin/env bash
# Token endpoint throughput (ES256, keep-alive, 2 connections per core) next to the
# raw ES256 sign rate of the same backend, measured in the same run.
#
#   bench/token-endpoint.sh [seconds]
#
# Needs wrk (apt-get install -y wrk). Prints tokens/s, raw signs/s and the ratio.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-10}
command -v wrk >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk; }
cargo build --release --quiet
work=$(mktemp -d)
trap 'kill $daemon 2>/dev/null || true; rm -rf "$work"' EXIT
hash=$(printf 'bench-secret' | target/release/jwkd hash-secret)
cat >"$work/jwkd.toml" <<TOML
[server]
listen = "127.0.0.1:0"
[store]
path = "keyset.json"
[issuer]
issuer = "https://auth.bench.example"
[[clients]]
id = "bench"
secret_hash = "$hash"
audiences = ["api"]
TOML
JWKD_LOG=warn,jwkd::commands=info target/release/jwkd serve --config "$work/jwkd.toml" 2>"$work/log" &
daemon=$!
for _ in $(seq 100); do grep -q 'listening on' "$work/log" && break; sleep 0.1; done
address=$(grep -o 'http://[0-9.:]*' "$work/log" | head -1)
cat >"$work/post.lua" <<'LUA'
wrk.method = "POST"
wrk.body = "grant_type=client_credentials"
wrk.headers["Content-Type"] = "application/x-www-form-urlencoded"
wrk.headers["Authorization"] = "Basic YmVuY2g6YmVuY2gtc2VjcmV0"
LUA
# Warm the secret cache, check one answer, then load.
curl -sf -u bench:bench-secret -d grant_type=client_credentials "$address/oauth2/token" >/dev/null
cores=$(nproc)
wrk -t"$cores" -c$((2 * cores)) -d"${seconds}s" --latency -s "$work/post.lua" "$address/oauth2/token" | tee "$work/wrk"
tokens=$(awk '/Requests\/sec/ {print $2}' "$work/wrk")
non2xx=$(awk '/Non-2xx/ {print $NF}' "$work/wrk")
kill $daemon
cargo bench --quiet --bench signing -- --warm-up-time 1 --measurement-time 3 2>/dev/null | tee "$work/bench" | grep -E 'time:|sign'
raw_ns=$(awk '/raw ES256 sign/ {getline; print}' "$work/bench" | sed -E 's/.*\[[^ ]+ [^ ]+ ([0-9.]+) ([nµu]s).*/\1 \2/')
raw_per_s=$(echo "$raw_ns" | awk '{v=$1; if ($2=="ns") v=v/1000; print int(1000000/v)}')
echo
echo "token endpoint: ${tokens} tokens/s (${cores} cores shared with wrk; non-2xx: ${non2xx:-0})"
echo "raw ES256 sign: ${raw_per_s} signs/s on one core"
awk -v t="$tokens" -v r="$raw_per_s" 'BEGIN { printf "ratio: %.2f of one core'"'"'s raw sign rate\n", t / r }'
