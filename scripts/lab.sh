#!/bin/sh
# Runs `pfsyncd lab` from a fresh clone on Debian in one command: installs what the lab
# needs (iproute2 for the network namespaces, nftables when --loss is asked for, a C
# linker and a Rust toolchain if none is there), builds the release binary as the
# calling user, and runs the lab as root (through sudo when not root), passing every
# argument on.
# Usage: sh scripts/lab.sh [lab options]    e.g. sh scripts/lab.sh -n 4 --mixed --loss 5
# (`target/release/pfsyncd lab --help` lists the options.)
set -eu
cd "$(dirname "$0")/.."

as_root() {
    if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi
}

# A program, also where a non-root PATH does not look (ip and nft live in /usr/sbin).
have() {
    command -v "$1" >/dev/null 2>&1 || [ -x "/usr/sbin/$1" ] || [ -x "/sbin/$1" ]
}

apt_updated=no
apt_install() {
    if ! command -v apt-get >/dev/null 2>&1; then
        echo "lab.sh: missing $*; this script installs on Debian only, install it and run again" >&2
        exit 1
    fi
    if [ "$apt_updated" = no ]; then
        as_root apt-get update -qq
        apt_updated=yes
    fi
    echo "lab.sh: installing $*"
    DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq "$@" >/dev/null
}

have ip || apt_install iproute2
for arg in "$@"; do
    case "$arg" in
    --loss | --loss=*) have nft || apt_install nftables ;;
    esac
done

# A rustup toolchain may be installed without being on this shell's PATH (sudo, su).
if ! command -v cargo >/dev/null 2>&1 && [ -x "$HOME/.cargo/bin/cargo" ]; then
    PATH="$HOME/.cargo/bin:$PATH"
fi
# Else Debian's current toolchain (rustc-web), as scripts/test.sh installs it.
command -v cargo >/dev/null 2>&1 || apt_install rustc-web cargo-web
# rustc links through cc.
have cc || apt_install gcc libc6-dev
# With the ziglang wheel installed, the build also generates the header oracle of the
# tests from its BSD headers, through libclang; without the wheel it leaves it out.
if python3 -c 'import ziglang' >/dev/null 2>&1; then
    dpkg -s libclang-dev >/dev/null 2>&1 || apt_install libclang-dev
fi

cargo build --release
as_root target/release/pfsyncd lab "$@"
