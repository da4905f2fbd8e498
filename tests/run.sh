#!/usr/bin/env bash
# busbar's test command (the README's, and CI's through .ci/run).
#
# Installs what the suite needs when it is missing (as root, from Debian's packages), checks
# formatting and lints, builds the workspace, and runs every test: unit and in-process tests,
# then the end-to-end tests, which start their own private Docker engines (in network
# namespaces) and etcd through the test bed (tests/src), and stop them when they finish, pass
# or fail. Building needs no protoc: generated code is committed. Extra arguments go to
# `cargo test` (e.g. `tests/run.sh -p busbar-tests --test proxy`).
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
command -v dockerd >/dev/null || missing+=(docker.io)
command -v etcd >/dev/null || missing+=(etcd-server)
command -v etcdctl >/dev/null || missing+=(etcd-client)
dpkg -s busybox-static >/dev/null 2>&1 || missing+=(busybox-static)
command -v script >/dev/null || missing+=(bsdutils)
command -v nsenter >/dev/null || missing+=(util-linux)
command -v ip >/dev/null || missing+=(iproute2)
command -v iptables >/dev/null || missing+=(iptables)
# python3: docker-py (below), and the Python hello-world adapter (adapter-kit/examples/hello.py).
command -v python3 >/dev/null || missing+=(python3 python3-pip)
# Debian's docker-compose 1.29: the compose project of tests/tests/faithful.rs.
command -v docker-compose >/dev/null || missing+=(docker-compose)
# HAProxy: the load balancer in front of two gateways (tests/tests/deploy_cluster.rs).
command -v haproxy >/dev/null || missing+=(haproxy)
# The Debian package's test (tests/tests/package.rs): systemd-analyze verify on its units, man
# on its pages (deploy/debian/build.sh installs cargo-deb itself when it is missing).
command -v systemd-analyze >/dev/null || missing+=(systemd)
command -v man >/dev/null || missing+=(man-db)
# The status page's test (tests/tests/status.rs): headless Chromium, driven over the DevTools
# protocol by a Python script on Debian's websocket client.
command -v chromium >/dev/null || missing+=(chromium)
/usr/bin/python3 -c 'import websocket' 2>/dev/null || missing+=(python3-websocket)
if [ ${#missing[@]} -gt 0 ]; then
    if [ "$(id -u)" != 0 ]; then
        echo "tests/run.sh: missing ${missing[*]}; run as root to install them" >&2
        exit 1
    fi
    echo "tests/run.sh: installing ${missing[*]}" >&2
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
if [ "$(id -u)" != 0 ]; then
    echo "tests/run.sh: the end-to-end tests start Docker engines in network namespaces: run as root" >&2
    exit 1
fi
command -v docker >/dev/null || { echo "tests/run.sh: no docker CLI found" >&2; exit 1; }
# docker-py, the Python client the docker-py scenarios (tests/py) run through the gateway.
if ! python3 -c 'import docker' >/dev/null 2>&1; then
    echo "tests/run.sh: installing docker-py (docker==7.1.0)" >&2
    python3 -m pip install --quiet 'docker==7.1.0'
fi
# prometheus-client: its OpenMetrics parser reads /metrics in tests/tests/metrics.rs.
if ! python3 -c 'import prometheus_client' >/dev/null 2>&1; then
    echo "tests/run.sh: installing prometheus-client (0.26.0)" >&2
    python3 -m pip install --quiet 'prometheus-client==0.26.0'
fi

# Gates: formatting and lints, before anything slow.
cargo fmt --all --check
cargo clippy --workspace --all-targets --locked -- -D warnings
cargo clippy -p busbar-agent --no-default-features --all-targets --locked -- -D warnings

cargo build --workspace --bins --tests --locked
# Leftovers of a run that was killed (its supervisor died with it) are removed first.
./target/debug/busbar-testbed --cleanup-stale || true
# The end-to-end tests must run here: a missing engine or root is a failure, not a skip.
export BUSBAR_E2E=require
cargo test --workspace --locked --no-fail-fast "$@"
