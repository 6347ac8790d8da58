#!/usr/bin/env bash
# Entry point of the benchmark (scripts/bench/bench.sh).
exec "$(dirname "$0")/bench/bench.sh" "$@"
