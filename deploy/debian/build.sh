#!/usr/bin/env bash
# The one command that builds busbar's Debian package (deploy/debian.md):
#
#     bash deploy/debian/build.sh
#
# builds busbar-agent, busbar-gateway and busbarctl (release profile: stripped), has each
# write its man pages and bash, zsh and fish completions from its own flags
# (--generate-manual), and packages them with the systemd units and their /etc/default
# settings with cargo-deb (installed from crates.io when missing). It prints the path of the
# .deb: $CARGO_TARGET_DIR/debian/busbar_VERSION-1_ARCH.deb (target/ by default).
#
# --profile P builds with another cargo profile; --no-build packages the binaries that profile
# already has (cargo build --workspace --bins made them); --fast compresses less (a larger
# .deb, made in seconds instead of minutes). The end-to-end test (tests/tests/package.rs)
# packages the suite's dev build with all three. Needs only Rust (cargo, a C linker) and
# Python 3.
set -euo pipefail
cd "$(dirname "$0")/../.."

profile=release
deb_args=()
build=yes
while [ $# -gt 0 ]; do
    case "$1" in
    --profile) profile=${2:?--profile needs a name}; shift 2 ;;
    --no-build) build=no; shift ;;
    --fast) deb_args+=(--fast); shift ;;
    *) echo "usage: bash deploy/debian/build.sh [--profile PROFILE] [--no-build] [--fast]" >&2; exit 64 ;;
    esac
done
case "$profile" in
dev) dir=debug ;;
*) dir=$profile ;;
esac

# cargo-deb 3 reads the package's metadata (gateway/Cargo.toml, [package.metadata.deb]).
if ! cargo deb --version 2>/dev/null | grep -q '^cargo-deb 3\.'; then
    echo "deploy/debian/build.sh: installing cargo-deb 3 (cargo install cargo-deb --locked)" >&2
    cargo install cargo-deb --locked --version '^3'
fi

if [ "$build" = yes ]; then
    cargo build --locked --profile "$profile" -p busbar-agent -p busbar-gateway -p busbar-ctl --bins
fi
target=$(cargo metadata --format-version 1 --no-deps --locked |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
bin=$target/$dir
manual=$bin/manual
rm -rf "$manual"
for b in busbar-agent busbar-gateway busbarctl; do
    if [ ! -x "$bin/$b" ]; then
        echo "deploy/debian/build.sh: $bin/$b is not built (cargo build --profile $profile --bins)" >&2
        exit 1
    fi
    "$bin/$b" --generate-manual "$manual" >/dev/null
    # bash-completion looks a command's completion up by the command's name.
    mv "$manual/completions/$b.bash" "$manual/completions/$b"
done
gzip -9n "$manual"/man/*.1

cargo deb --locked -p busbar-gateway --no-build --profile "$profile" "${deb_args[@]}"
