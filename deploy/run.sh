#!/usr/bin/env bash
# The README's "run busbar" command: builds and starts busbar-gateway in its embedded default
# (an agent in-process on the local Docker socket). Extra arguments go to busbar-gateway (see
# `busbar-gateway --help`). Building needs only cargo: no protoc, no system libraries.
set -euo pipefail
cd "$(dirname "$0")/.."
exec cargo run --release --locked --bin busbar-gateway -- "$@"
