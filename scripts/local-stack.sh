#!/usr/bin/env bash
# Entry point of the local stack (scripts/local-stack/local-stack.sh).
exec "$(dirname "$0")/local-stack/local-stack.sh" "$@"
