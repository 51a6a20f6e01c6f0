#!/bin/sh
#
# bsd-verify.sh: verify pfsyncd on a real FreeBSD or OpenBSD machine, and print a
# report an admin can paste into an issue.
#
# FreeBSD (root, vnet jails; modelled on FreeBSD's own tests/sys/netpfil/pf/pfsync.sh
# and tests/sys/common/vnet.subr): two vnet jails, "one" and "two", joined by an
# epair (the sync link, 192.0.2.0/24), each with pf enabled and pfsyncd running on
# pf; a second epair joins jail one to this host (198.51.100.0/24). Then:
#   1. `pfsyncd check --import-test` in both jails;
#   2. a TCP connection from this host to jail one (nc): its state must appear in
#      jail two's `pfctl -ss -v` with the same sequence numbers;
#   3. data on the connection: jail two's copy must follow (an update);
#   4. `pfctl -k` in jail one: jail two's copy must go (a delete).
# Everything it creates is removed at the end, also on failure or Ctrl-C.
#
# OpenBSD (pf is global, no vnet): only `pfsyncd check --import-test` on this host,
# on the sync interface given with -i. For the two-host test, see usage below.
#
# Usage: bsd-verify.sh [-b PFSYNCD] [-i SYNCDEV] [-k]
#   -b PFSYNCD  the pfsyncd binary (default: pfsyncd from PATH)
#   -i SYNCDEV  OpenBSD: the sync interface for the check
#   -k          keep the jails and logs for inspection (FreeBSD)

set -u

usage()
{
	cat <<'EOF'
usage: bsd-verify.sh [-b PFSYNCD] [-i SYNCDEV] [-k]

FreeBSD: builds two vnet jails with pf and pfsyncd, syncs a TCP connection's
state between them, and prints a report. Needs root, pf.ko, pfsync.ko, nc(1).

OpenBSD: runs `pfsyncd check --import-test syncdev SYNCDEV up` here. The
two-host test, by hand, on two firewalls A and B joined on em1:
  both:  useradd -d /var/empty -s /sbin/nologin _pfsyncd   (once)
         ifconfig em1 up; pfctl -e; echo 'set skip on em1' | pfctl -mf -
         pfsyncd check --import-test syncdev em1 up
         pfsyncd -d --log-level debug version openbsd syncdev em1 up
  A:     open a TCP connection through A (e.g. ssh to a host behind it)
  B:     pfctl -ss -v   # the connection's state, same [seqlo + seqhi]
  A:     pfctl -k <client address>
  B:     pfctl -ss      # the state is gone
Paste both hosts' output of `pfsyncd ctl stats` and the daemons' logs.
EOF
}

bin=pfsyncd
syncdev=""
keep=no
while getopts b:i:kh opt; do
	case "$opt" in
	b) bin=$OPTARG ;;
	i) syncdev=$OPTARG ;;
	k) keep=yes ;;
	h) usage; exit 0 ;;
	*) usage >&2; exit 64 ;;
	esac
done

if ! command -v "$bin" >/dev/null 2>&1; then
	echo "bsd-verify.sh: $bin: not found (give the binary with -b)" >&2
	exit 1
fi
# Absolute: jexec runs it from the jail's working directory.
case "$bin" in
/*) ;;
*) bin=$(command -v "$bin") ;;
esac
case "$bin" in
/*) ;;
*) bin="$(pwd)/$bin" ;;
esac

if [ "$(id -u)" -ne 0 ]; then
	echo "bsd-verify.sh: must run as root" >&2
	exit 1
fi

work=$(mktemp -d /tmp/bsd-verify.XXXXXX) || exit 1
results="$work/results"
: >"$results"
failed=0

# One result line: ok or FAIL, then what.
result()
{
	echo "$1 $2" | tee -a "$results"
	if [ "$1" = FAIL ]; then
		failed=$((failed + 1))
	fi
}

section()
{
	printf '\n===== %s\n' "$1"
}

header()
{
	section "system"
	uname -a
	if command -v freebsd-version >/dev/null 2>&1; then
		echo "freebsd-version -ku: $(freebsd-version -ku | tr '\n' ' ')"
	fi
	echo "pfsyncd: $bin ($("$bin" --version 2>&1))"
}

report()
{
	section "results"
	cat "$results"
	if [ "$failed" -eq 0 ]; then
		echo "bsd-verify: every step passed"
	else
		echo "bsd-verify: $failed step(s) failed"
	fi
}

# --- OpenBSD: the check on this host ---------------------------------------------

if [ "$(uname -s)" = OpenBSD ]; then
	header
	if [ -z "$syncdev" ]; then
		echo "bsd-verify.sh: on OpenBSD give the sync interface with -i" >&2
		usage >&2
		rm -rf "$work"
		exit 64
	fi
	section "pfsyncd check --import-test syncdev $syncdev up"
	if "$bin" check --import-test syncdev "$syncdev" up; then
		result ok "pfsyncd check --import-test"
	else
		result FAIL "pfsyncd check --import-test"
	fi
	section "pfctl -s info"
	pfctl -s info 2>&1
	report
	rm -rf "$work"
	[ "$failed" -eq 0 ]
	exit
fi

if [ "$(uname -s)" != FreeBSD ]; then
	echo "bsd-verify.sh: FreeBSD or OpenBSD only" >&2
	rm -rf "$work"
	exit 1
fi

# --- FreeBSD: two vnet jails -----------------------------------------------------

prefix="pfsv$$"
jails=""
epairs=""
pids=""

cleanup()
{
	trap - EXIT INT TERM
	for pid in $pids; do
		kill "$pid" 2>/dev/null
	done
	if [ "$keep" = yes ]; then
		echo "kept: jails ($jails), epairs ($epairs), logs in $work"
		return
	fi
	for j in $jails; do
		jail -r "$j" >/dev/null 2>&1
	done
	for e in $epairs; do
		ifconfig "${e}a" destroy >/dev/null 2>&1
	done
	rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

die()
{
	result FAIL "$1"
	report
	exit 1
}

# As vnet.subr's vnet_mkepair: the pair's name without its a/b.
mkepair()
{
	e=$(ifconfig epair create) || die "ifconfig epair create"
	e=${e%a}
	epairs="$epairs $e"
	echo "$e"
}

# As vnet.subr's vnet_mkjail: a persistent vnet jail holding the given interfaces.
mkjail()
{
	name=$1
	shift
	jail -c -n "$name" vnet persist >/dev/null || die "jail -c $name"
	jails="$jails $name"
	for i in "$@"; do
		ifconfig "$i" vnet "$name" || die "ifconfig $i vnet $name"
	done
}

header
kldload -n pf pfsync || die "kldload pf pfsync"
command -v nc >/dev/null 2>&1 || die "nc(1) is missing"

epair_sync=$(mkepair)
epair_one=$(mkepair)
one="${prefix}one"
two="${prefix}two"
mkjail "$one" "${epair_one}a" "${epair_sync}a"
mkjail "$two" "${epair_sync}b"

jexec "$one" ifconfig lo0 up
jexec "$two" ifconfig lo0 up
jexec "$one" ifconfig "${epair_sync}a" 192.0.2.1/24 up
jexec "$two" ifconfig "${epair_sync}b" 192.0.2.2/24 up
jexec "$one" ifconfig "${epair_one}a" 198.51.100.1/24 up
ifconfig "${epair_one}b" 198.51.100.254/24 up

# pfsync0 as the pfsyncd rc script leaves it: up (DIOCADDSTATE needs it), no syncdev.
for j in "$one" "$two"; do
	jexec "$j" ifconfig pfsync0 -syncdev -syncpeer up || die "$j: ifconfig pfsync0 up"
done
# pf as in pfsync.sh: nothing filtered on the sync link, state on everything else.
printf 'set skip on %s\npass keep state\n' "${epair_sync}a" |
	jexec "$one" pfctl -f - || die "$one: pfctl -f"
printf 'set skip on %s\npass keep state\n' "${epair_sync}b" |
	jexec "$two" pfctl -f - || die "$two: pfctl -f"
jexec "$one" pfctl -q -e
jexec "$two" pfctl -q -e

# 1. The check, in both jails, before the daemons run (its test state is announced
#    by a running daemon for the second it lives).
for j in "$one" "$two"; do
	dev="${epair_sync}a"
	[ "$j" = "$two" ] && dev="${epair_sync}b"
	section "$j: pfsyncd check --import-test"
	if jexec "$j" "$bin" check --import-test --user nobody --chroot /var/empty \
		syncdev "$dev" up; then
		result ok "$j: pfsyncd check --import-test"
	else
		result FAIL "$j: pfsyncd check --import-test"
	fi
done

# The daemons, on pf, in the foreground (their logs go to files).
jexec "$one" "$bin" -d -c "$work/one.sock" --user nobody --chroot /var/empty \
	--log-level debug syncdev "${epair_sync}a" up >"$work/one.log" 2>&1 &
pids="$pids $!"
jexec "$two" "$bin" -d -c "$work/two.sock" --user nobody --chroot /var/empty \
	--log-level debug syncdev "${epair_sync}b" up >"$work/two.log" 2>&1 &
pids="$pids $!"
sleep 3
for j in one two; do
	if "$bin" ctl -c "$work/$j.sock" status >/dev/null 2>&1; then
		result ok "$j: pfsyncd runs"
	else
		result FAIL "$j: pfsyncd does not answer on its control socket"
	fi
done

# The [seqlo + seqhi] of the test connection's state in jail $1 (empty if none).
seqs()
{
	jexec "$1" pfctl -ss -v 2>/dev/null |
		awk '/198\.51\.100\.1:7777/ { found = 1; next }
		     found && /\[/ { print; exit }
		     found { found = 0 }' |
		grep -o '\[[0-9]* + [0-9]*\]' | tr '\n' ' '
}

# Waits up to $2 seconds for the state in jail two to be as in jail one ($1: what).
follows()
{
	n=0
	while [ "$n" -lt "$2" ]; do
		a=$(seqs "$one")
		b=$(seqs "$two")
		if [ -n "$a" ] && [ "$a" = "$b" ]; then
			result ok "$1: jail two has the state with jail one's sequence numbers ($a)"
			return 0
		fi
		sleep 1
		n=$((n + 1))
	done
	result FAIL "$1: jail one has '$a', jail two has '$b'"
}

# 2. A TCP connection from this host to jail one, kept open through a fifo.
jexec "$one" sh -c 'nc -l 198.51.100.1 7777 >/dev/null' &
pids="$pids $!"
sleep 1
mkfifo "$work/to_server"
nc 198.51.100.1 7777 <"$work/to_server" &
pids="$pids $!"
exec 3>"$work/to_server"
echo hello >&3
follows "insert" 10

# 3. More data: the state's sequence numbers move in jail one, and jail two follows.
before=$(seqs "$one")
i=0
while [ "$i" -lt 20 ]; do
	echo "data line $i" >&3
	i=$((i + 1))
done
sleep 1
if [ "$(seqs "$one")" = "$before" ]; then
	result FAIL "update: jail one's state did not move ($before)"
else
	follows "update" 10
fi

# 4. Kill the state in jail one: jail two's copy goes too.
jexec "$one" pfctl -q -k 198.51.100.254
n=0
while [ "$n" -lt 10 ] && jexec "$two" pfctl -ss | grep -q '198\.51\.100\.1:7777'; do
	sleep 1
	n=$((n + 1))
done
if jexec "$two" pfctl -ss | grep -q '198\.51\.100\.1:7777'; then
	result FAIL "delete: jail two still holds the killed state"
else
	result ok "delete: jail two dropped the state jail one killed"
fi
exec 3>&-

for j in one two; do
	jn="$one"
	[ "$j" = two ] && jn="$two"
	section "jail $j: pfctl -s info"
	jexec "$jn" pfctl -s info 2>&1
	section "jail $j: pfctl -ss -v"
	jexec "$jn" pfctl -ss -v 2>&1
	section "jail $j: pfsyncd ctl stats"
	"$bin" ctl -c "$work/$j.sock" stats 2>&1
	section "jail $j: pfsyncd log (last 30 lines)"
	tail -n 30 "$work/$j.log"
done
report
[ "$failed" -eq 0 ]
