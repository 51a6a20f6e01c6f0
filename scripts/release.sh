#!/bin/sh
# Cross-builds pfsyncd for x86_64 FreeBSD and OpenBSD on Linux and packs each with its
# man page and rc.d script into dist/pfsyncd-VERSION-OS-x86_64.tar.gz.
#
# The standard library is built for the target (-Zbuild-std, Debian's rustc-web has
# its sources), bindgen reads the real headers of the ziglang wheel, and `zig cc` from
# the same wheel links against its FreeBSD and OpenBSD libc stubs. `file` must then
# say the right OS, or the script fails.
# Usage: sh scripts/release.sh [freebsd] [openbsd]
set -eu
cd "$(dirname "$0")/.."

as_root() {
    if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi
}
if [ ! -x /usr/bin/cargo ] || [ ! -d /usr/lib/rustlib/src/rust/library ]; then
    as_root apt-get update -qq
    DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq rustc-web cargo-web rust-web-src file >/dev/null
fi
command -v file >/dev/null 2>&1 || as_root apt-get install -y -qq file >/dev/null
python3 -c "import ziglang" 2>/dev/null ||
    python3 -m pip install --quiet "ziglang==0.17.1" 2>/dev/null ||
    python3 -m pip install --quiet --break-system-packages "ziglang==0.17.1"

ZIG_DIR="$(python3 -c 'import ziglang, os; print(os.path.dirname(ziglang.__file__))')"
export PFSYNCD_HEADER_ROOT="$ZIG_DIR/lib/libc/include"
VERSION="$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n 1)"
WORK="$(pwd)/target/release-tools"
mkdir -p "$WORK" dist

systems="${*:-freebsd openbsd}"
for os in $systems; do
    case "$os" in
    freebsd) expect="for FreeBSD" ;;
    openbsd) expect="for OpenBSD" ;;
    *) echo "release: unknown system '$os' (freebsd or openbsd)" >&2; exit 64 ;;
    esac
    triple="x86_64-unknown-$os"
    # The libc crate names FreeBSD base libraries pfsyncd does not call (kvm, procstat,
    # devstat, memstat) that zig's libc stubs lack: empty stand-ins satisfy the link,
    # and --as-needed leaves them out of the executable.
    stubs="$WORK/stubs-$os"
    mkdir -p "$stubs"
    : >"$stubs/empty.c"
    for lib in kvm procstat devstat memstat; do
        [ -f "$stubs/lib$lib.so" ] ||
            python3 -m ziglang cc -target "x86_64-$os" -shared -o "$stubs/lib$lib.so" "$stubs/empty.c"
    done
    # The linker: zig cc for the target, behind a wrapper cargo can call.
    linker="$WORK/cc-$os"
    cat >"$linker" <<WRAP
#!/bin/sh
exec python3 -m ziglang cc -target x86_64-$os -L"$stubs" -Wl,--as-needed "\$@"
WRAP
    chmod +x "$linker"
    # The C compiler and archiver for what crates build in C for the target (ring's
    # primitives under boringtun): zig's too, so no host header or glibc symbol gets in.
    ccomp="$WORK/zigcc-$os"
    # cc-rs names the target in Rust's spelling (--target=x86_64-unknown-freebsd),
    # which zig does not take: it is dropped for zig's own -target.
    cat >"$ccomp" <<WRAP
#!/bin/sh
for arg do
    shift
    case "\$arg" in
    --target=*) ;;
    *) set -- "\$@" "\$arg" ;;
    esac
done
exec python3 -m ziglang cc -target x86_64-$os "\$@"
WRAP
    archiver="$WORK/zigar-$os"
    cat >"$archiver" <<WRAP
#!/bin/sh
exec python3 -m ziglang ar "\$@"
WRAP
    chmod +x "$ccomp" "$archiver"
    var="CARGO_TARGET_$(echo "$triple" | tr 'a-z-' 'A-Z_')_LINKER"
    cc_var="CC_$(echo "$triple" | tr '-' '_')"
    ar_var="AR_$(echo "$triple" | tr '-' '_')"
    echo "== $triple"
    env "$var=$linker" "$cc_var=$ccomp" "$ar_var=$archiver" RUSTC=/usr/bin/rustc RUSTC_BOOTSTRAP=1 CARGO_TARGET_DIR=target/release-build \
        /usr/bin/cargo build --quiet --release -Zbuild-std=std,panic_abort \
        --target "$triple" --bin pfsyncd
    bin="target/release-build/$triple/release/pfsyncd"
    what="$(file -b "$bin")"
    echo "$what"
    case "$what" in
    *"$expect"*) ;;
    *) echo "release: $bin is not a $os executable" >&2; exit 1 ;;
    esac
    stage="$WORK/pfsyncd-$VERSION-$os-x86_64"
    rm -rf "$stage"
    mkdir -p "$stage/sbin" "$stage/man/man8" "$stage/rc.d"
    cp "$bin" "$stage/sbin/pfsyncd"
    cp man/pfsyncd.8 "$stage/man/man8/"
    cp "rc.d/$os/pfsyncd" "$stage/rc.d/pfsyncd"
    tar -C "$WORK" -czf "dist/pfsyncd-$VERSION-$os-x86_64.tar.gz" "pfsyncd-$VERSION-$os-x86_64"
    echo "dist/pfsyncd-$VERSION-$os-x86_64.tar.gz"
done
