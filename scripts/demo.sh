#!/usr/bin/env bash
# Entry point of the demo (scripts/demo/demo.sh).
exec "$(dirname "$0")/demo/demo.sh" "$@"
