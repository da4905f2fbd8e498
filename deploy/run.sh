#!/usr/bin/env bash
# The README's "run busbar" command: builds and starts busbar-gateway in its embedded default
# (an agent in-process on the local Docker socket). Extra arguments go to busbar-gateway (see
# `busbar-gateway --help`). Building needs only cargo: no protoc, no system libraries.
#
# As root it serves busbar's default, the unix socket /run/busbar.sock for root and the docker
# group (mode 0660, as dockerd's own socket). Another user cannot create that socket: unless a
# --listen is given, it serves $XDG_RUNTIME_DIR/busbar.sock (or ~/busbar.sock) instead, which
# only that user can use.
set -euo pipefail
cd "$(dirname "$0")/.."
args=("$@")
if [ "$(id -u)" != 0 ] && [ -z "${BUSBAR_LISTEN:-}" ] && [[ " $* " != *" --listen"* ]]; then
    sock="${XDG_RUNTIME_DIR:-$HOME}/busbar.sock"
    echo "deploy/run.sh: not root: serving unix://$sock (for this user only); use DOCKER_HOST=unix://$sock" >&2
    args+=(--listen "unix://$sock")
fi
exec cargo run --release --locked --bin busbar-gateway -- "${args[@]}"
