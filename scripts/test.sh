#!/bin/sh
# Runs every test of pfsyncd on a fresh Debian 12 machine, installing what it needs:
# libclang (bindgen), the ziglang wheel (the real FreeBSD 15 and OpenBSD headers the
# header-oracle tests compare our codec against), iproute2 (network namespaces for the
# transport tests, which need root), and a Rust toolchain if none is there.
# Usage: sh scripts/test.sh
set -eu
cd "$(dirname "$0")/.."

as_root() {
    if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi
}

apt_updated=no
apt_install() {
    if [ "$apt_updated" = no ]; then
        as_root apt-get update -qq
        apt_updated=yes
    fi
    DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq "$@" >/dev/null
}

# bindgen needs libclang; pip and python3 fetch the headers.
dpkg -s libclang-dev >/dev/null 2>&1 || apt_install libclang-dev
command -v python3 >/dev/null 2>&1 || apt_install python3
# The transport tests build network namespaces with ip(8).
command -v ip >/dev/null 2>&1 || apt_install iproute2
# The cluster tests make 10 % loss with an nftables rule.
command -v nft >/dev/null 2>&1 || apt_install nftables
# The secure link's keys are checked against wireguard-tools' own (tests/secure.rs).
command -v wg >/dev/null 2>&1 || apt_install wireguard-tools
python3 -m pip --version >/dev/null 2>&1 || apt_install python3-pip

# A Rust toolchain: the machine's rustup one, else Debian's current one (rustc-web).
if ! command -v cargo >/dev/null 2>&1; then
    apt_install rustc-web cargo-web
fi

# The real BSD headers, pinned.
ZIG_VERSION=0.17.1
if ! python3 -c "import importlib.metadata as m, sys; sys.exit(m.version('ziglang') != '$ZIG_VERSION')" 2>/dev/null; then
    python3 -m pip install --quiet "ziglang==$ZIG_VERSION" 2>/dev/null ||
        python3 -m pip install --quiet --break-system-packages "ziglang==$ZIG_VERSION"
fi
PFSYNCD_HEADER_ROOT="$(python3 -c 'import ziglang, os; print(os.path.join(os.path.dirname(ziglang.__file__), "lib", "libc", "include"))')"
export PFSYNCD_HEADER_ROOT
echo "header oracle: $PFSYNCD_HEADER_ROOT"

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --all-targets -- -D warnings
echo "== fuzz target compiles"
cargo check --quiet --manifest-path fuzz/Cargo.toml
echo "== BSD type-check (FreeBSD and OpenBSD, bindgen on the real headers)"
# Debian's rustc-web ships the standard library's sources, so -Zbuild-std builds std for
# targets that have no prebuilt one (OpenBSD has none anywhere). A type error in
# BSD-only code fails here.
if [ ! -x /usr/bin/cargo ] || [ ! -d /usr/lib/rustlib/src/rust/library ]; then
    apt_install rustc-web cargo-web rust-web-src
fi
for target in x86_64-unknown-freebsd x86_64-unknown-openbsd; do
    echo "-- $target"
    RUSTC=/usr/bin/rustc RUSTC_BOOTSTRAP=1 CARGO_TARGET_DIR=target/bsd-check \
        /usr/bin/cargo check --quiet -Zbuild-std=std,panic_abort --all-targets --target "$target"
done
echo "-- x86_64-unknown-freebsd against headers without what only 15 has (pf_nl.h, pfsync_state_1500)"
sh scripts/check-older-freebsd-headers.sh "$(mktemp -d)"

echo "== service files: rc.d scripts and the man page"
command -v shellcheck >/dev/null 2>&1 || apt_install shellcheck
command -v mandoc >/dev/null 2>&1 || apt_install mandoc
sh -n rc.d/freebsd/pfsyncd
sh -n rc.d/openbsd/pfsyncd
shellcheck -s sh rc.d/freebsd/pfsyncd scripts/bsd-verify.sh scripts/check-older-freebsd-headers.sh scripts/lab.sh
shellcheck -s ksh rc.d/openbsd/pfsyncd
# Warnings and errors fail; style notes remain about the BSD manuals cross-referenced
# (pf(4), pfsync(4), ...), which a Linux machine does not have.
mandoc -Tlint -Wwarning man/pfsyncd.8
if [ "${PFSYNCD_RELEASE_CHECK:-0}" = 1 ]; then
    echo "== release binaries"
    sh scripts/release.sh
fi

echo "== cargo test"
log="$(mktemp)"
trap 'rm -f "$log"' EXIT
# Keep cargo's own exit status through the pipe.
status_file="$(mktemp)"
{ cargo test --all-targets 2>&1 && echo 0 >"$status_file" || echo $? >"$status_file"; } | tee "$log"
status="$(cat "$status_file")"
rm -f "$status_file"
# One closing line over every test binary, so the total is not hidden behind the last
# binary's count.
awk '/^test result:/ { p += $4; f += $6 } END { printf "tests: %d passed, %d failed\n", p, f }' "$log"
exit "$status"
