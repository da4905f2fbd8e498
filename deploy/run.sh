#!/usr/bin/env bash
# The README's "run busbar" command: builds and starts busbar-gateway in its embedded default
# (an agent in-process on the local Docker socket, serving tcp://127.0.0.1:2375). Extra
# arguments go to busbar-gateway (see `busbar-gateway --help`).
#
# Building needs protoc (etcd-client's build script runs it): installed here from Debian's
# protobuf-compiler when missing and we are root.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v protoc >/dev/null; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        echo "deploy/run.sh: installing protobuf-compiler (needed to build busbar)" >&2
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends protobuf-compiler >/dev/null
    else
        echo "deploy/run.sh: protoc is missing: install protobuf-compiler (apt-get install protobuf-compiler) and run again" >&2
        exit 1
    fi
fi
exec cargo run --release --bin busbar-gateway -- "$@"
