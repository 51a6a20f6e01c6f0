#!/bin/sh
# Type-checks the FreeBSD target against headers without what only FreeBSD 15 has
# (kernel-edge-review F6): a copy of the ziglang FreeBSD 15 header root with
# netpfil/pf/pf_nl.h removed and struct pfsync_state_1500 taken out of net/pfvar.h,
# as in 14's installed headers. Needs ziglang, /usr/bin/cargo and rust-src (see
# build-notes.md). Usage: scripts/check-older-freebsd-headers.sh [workdir]
set -eu
work=${1:-$(mktemp -d)}
zig=$(python3 -c 'import ziglang, os; print(os.path.join(os.path.dirname(ziglang.__file__), "lib", "libc", "include"))')
root="$work/include"
rm -rf "$root"
mkdir -p "$root"
cp -r "$zig/generic-freebsd" "$zig/x86_64-freebsd-none" "$zig/generic-openbsd" "$zig/x86_64-openbsd-none" "$root/"
rm -f "$root/generic-freebsd/netpfil/pf/pf_nl.h"
# Drop the 1500 record and its member of the union (14 has 1301 and 1400 only).
python3 - "$root/generic-freebsd/net/pfvar.h" <<'PY'
import re, sys
p = sys.argv[1]
s = open(p).read()
s, n = re.subn(r"struct pfsync_state_1500 \{.*?\} __packed;\n", "", s, count=1, flags=re.S)
assert n == 1, "no struct pfsync_state_1500 in pfvar.h"
s, n = re.subn(r"\n\tstruct pfsync_state_1500 pfs_1500;", "", s, count=1)
assert n == 1, "no pfs_1500 in union pfsync_state_union"
open(p, "w").write(s)
PY
if grep -rq "pfsync_state_1500" "$root/generic-freebsd"; then
    echo "pfsync_state_1500 is still in the copied headers" >&2
    exit 1
fi
test ! -e "$root/generic-freebsd/netpfil/pf/pf_nl.h"
cd "$(dirname "$0")/.."
# Only the target bindings read this root; the header oracle keeps the full 15 headers
# (it checks the 1500 record), as on a 14 machine with ziglang installed.
PFSYNCD_TARGET_HEADER_ROOT="$root" PFSYNCD_HEADER_ROOT="$zig" RUSTC=/usr/bin/rustc \
    RUSTC_BOOTSTRAP=1 CARGO_TARGET_DIR=target/bsd-check /usr/bin/cargo check --quiet \
    -Zbuild-std=std,panic_abort --all-targets --target x86_64-unknown-freebsd
echo "FreeBSD target type-checks without pf_nl.h and pfsync_state_1500 ($root)"
