#!/usr/bin/env bash
# Entry point of the fault suite (tests/fault-suite/fault-suite.sh).
exec "$(dirname "$0")/../tests/fault-suite/fault-suite.sh" "$@"
