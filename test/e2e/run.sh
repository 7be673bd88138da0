#!/usr/bin/env bash
# End-to-end tests of idcfs on a simulated Xen host: real FUSE mounts, one
# real `idcfs mount` process per domain, driven from the shell the way users
# drive it (cat, echo, dd, exec 3<>).
#
#   test/e2e/run.sh            build idcfs, run every case, exit 1 on any FAIL
#   IDCFS_BIN=path run.sh      use an existing binary instead of building
#   E2E_ONLY="oneshot bulk"    run only these cases (names as printed)
#   E2E_KEEP=1                 keep the work directory (logs) after the run
#
# With an idcfs built with -race, a data race reported by any daemon fails the
# run (case data_races).
#
# Needs root and /dev/fuse; anywhere else it prints SKIP and exits 0. It
# starts `idcfs sim` with domains 1, 2 and 3 in a temporary directory and
# always stops it (and lazily unmounts leftovers) on exit. Every blocking
# command runs under `timeout`, so a bug fails a case instead of hanging the
# suite. The whole run takes well under three minutes.
set -u

HERE=$(cd "$(dirname "$0")" && pwd)
TOP=$(cd "$HERE/../.." && pwd)

if [ "$(id -u)" != 0 ]; then
	echo "SKIP: test/e2e needs root (it mounts FUSE filesystems directly); run it as root"
	exit 0
fi
if [ ! -c /dev/fuse ]; then
	echo "SKIP: test/e2e needs /dev/fuse (try: modprobe fuse)"
	exit 0
fi
for tool in timeout sha256sum head env awk; do
	command -v "$tool" >/dev/null || { echo "SKIP: test/e2e needs $tool"; exit 0; }
done

WORK=$(mktemp -d /tmp/idcfs-e2e.XXXXXX)
SIM=$WORK/host
SIM_PID=
SUITE_START=$(date +%s)

log() { printf '%s\n' "$*" >&2; }

unmount_leftovers() {
	local m
	# Mount points are the second field of /proc/mounts (octal-escaped).
	awk -v w="$WORK/" 'index($2, w) == 1 { print $2 }' /proc/mounts | sort -r | while read -r m; do
		umount -l "$m" 2>/dev/null || true
	done
}

cleanup() {
	local i
	if [ -n "$SIM_PID" ] && kill -0 "$SIM_PID" 2>/dev/null; then
		kill -TERM "$SIM_PID" 2>/dev/null
		for i in $(seq 100); do kill -0 "$SIM_PID" 2>/dev/null || break; sleep 0.1; done
		kill -KILL "$SIM_PID" 2>/dev/null
	fi
	# Anything this script started and left behind.
	for i in $(jobs -p); do kill -KILL "$i" 2>/dev/null; done
	unmount_leftovers
	if [ "${E2E_KEEP:-0}" = 1 ]; then
		log "work directory kept: $WORK"
	else
		rm -rf --one-file-system "$WORK"
	fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- build and start -------------------------------------------------------

if [ -n "${IDCFS_BIN:-}" ]; then
	IDCFS=$IDCFS_BIN
else
	IDCFS=$WORK/idcfs
	GO=$(command -v go || echo /usr/local/go/bin/go)
	log "building idcfs"
	if ! (cd "$TOP" && "$GO" build -o "$IDCFS" ./cmd/idcfs); then
		echo "FAIL build: go build ./cmd/idcfs failed"
		exit 1
	fi
fi

log "starting: idcfs sim --dir $SIM 1 2 3"
"$IDCFS" sim --dir "$SIM" 1 2 3 >"$WORK/sim.out" 2>"$WORK/sim.err" &
SIM_PID=$!
ready=0
for _ in $(seq 300); do
	if grep -q '^ready' "$WORK/sim.out" 2>/dev/null; then ready=1; break; fi
	kill -0 "$SIM_PID" 2>/dev/null || break
	sleep 0.1
done
if [ "$ready" != 1 ]; then
	echo "FAIL sim: 'idcfs sim' did not print ready within 30 s"
	sed 's/^/    sim: /' "$WORK/sim.out" "$WORK/sim.err" | tail -n 40
	for f in "$SIM"/dom*.log; do [ -f "$f" ] && sed "s|^|    $(basename "$f"): |" "$f" | tail -n 20; done
	exit 1
fi
D1=$SIM/dom1
D2=$SIM/dom2
D3=$SIM/dom3

# --- helpers ----------------------------------------------------------------

# fail prints its message and ends the case (cases run in subshells).
fail() { echo "$*"; exit 1; }

# listed DIR NAME: DIR has an entry NAME (readdir, as ls does).
listed() {
	# shellcheck disable=SC2010 # names here are numbers; ls runs under timeout
	timeout 5 ls -1 -- "$1" 2>/dev/null | grep -qxF -- "$2"
}

# wait_bound DIR PORT: until PORT appears in DIR/listen (the accept that
# binds it is running), at most 5 s.
wait_bound() {
	local _
	for _ in $(seq 100); do
		listed "$1/listen" "$2" && return 0
		sleep 0.05
	done
	fail "port $2 never showed up in $1/listen"
}

# send FILE DATA: echo DATA > FILE with a timeout; stderr is kept in $WORK/send.err.
send() {
	timeout 10 bash -c 'printf "%s\n" "$2" > "$1"' _ "$1" "$2" 2>"$CASE_DIR/send.err"
}

# state PID: the process state letter (R, S, D, ...) or "gone".
state() {
	local s
	s=$(awk '{ print $3 }' "/proc/$1/stat" 2>/dev/null) || s=
	[ -n "$s" ] && [ "$s" != Z ] && echo "$s" || echo gone
}

# interrupt_within PID WHAT: SIGINT PID and demand that it is gone within a
# second, and that it never sleeps uninterruptibly: no D state while it is
# blocked before the signal (sampled every 10 ms). Between the signal and the
# daemon's answer to the kernel's FUSE INTERRUPT the kernel waits killably,
# which /proc shows as D; that wait must end within $D_LIMIT_MS (a daemon
# that ignores interrupts leaves it there until the request completes).
D_LIMIT_MS=200
interrupt_within() {
	local pid=$1 what=$2 i s t0 now d_since=
	for i in $(seq 20); do
		s=$(state "$pid")
		[ "$s" = gone ] && fail "$what: ended before the signal (it should block)"
		[ "$s" = D ] && fail "$what: in D state while blocked, before any signal"
		sleep 0.01
	done
	t0=$(date +%s%N)
	kill -INT "$pid"
	while :; do
		s=$(state "$pid")
		now=$((($(date +%s%N) - t0) / 1000000))
		if [ "$s" = gone ]; then
			echo "$what: ended $now ms after SIGINT"
			[ "$now" -le 1000 ] || fail "$what: took $now ms to end after SIGINT"
			return 0
		fi
		if [ "$s" = D ]; then
			[ -n "$d_since" ] || d_since=$now
			[ $((now - d_since)) -le "$D_LIMIT_MS" ] ||
				fail "$what: in D state for over $D_LIMIT_MS ms after SIGINT (the daemon did not answer the interrupt)"
		else
			d_since=
		fi
		[ "$now" -gt 1000 ] && fail "$what: still running (state $s) a second after SIGINT"
		sleep 0.005
	done
}

# conn_with DIR PATTERN: the id of a connection in DIR/conn whose status
# matches the extended regex PATTERN.
conn_with() {
	local id
	for id in $(timeout 5 ls -1 -- "$1/conn" 2>/dev/null); do
		if timeout 5 cat "$1/conn/$id/status" 2>/dev/null | grep -Eq "$2"; then
			echo "$id"
			return 0
		fi
	done
	return 1
}

# --- cases ------------------------------------------------------------------

case_oneshot() {
	timeout 10 cat "$D1/listen/80" >"$CASE_DIR/out" &
	local reader=$!
	wait_bound "$D1" 80
	send "$D2/connect/1/80" hello || fail "echo hello > connect/1/80 failed: $(cat "$CASE_DIR/send.err")"
	wait "$reader" || fail "cat listen/80 exited with $?"
	[ "$(cat "$CASE_DIR/out")" = hello ] || fail "dom1 received '$(cat "$CASE_DIR/out")', want 'hello'"
}

case_stays_bound() {
	timeout 10 cat "$D1/listen/82" >"$CASE_DIR/one" &
	local reader=$!
	wait_bound "$D1" 82
	send "$D2/connect/1/82" one || fail "first connect failed: $(cat "$CASE_DIR/send.err")"
	wait "$reader" || fail "first accept exited with $?"
	[ "$(cat "$CASE_DIR/one")" = one ] || fail "first connection carried '$(cat "$CASE_DIR/one")'"
	listed "$D1/listen" 82 || fail "port 82 no longer listed in listen/ after the accept returned"
	# Nobody is accepting now, but the port is bound: the connect is queued.
	send "$D2/connect/1/82" two || fail "connect between accepts failed: $(cat "$CASE_DIR/send.err")"
	timeout 10 cat "$D1/listen/82" >"$CASE_DIR/two" || fail "second accept exited with $?"
	[ "$(cat "$CASE_DIR/two")" = two ] || fail "queued connection carried '$(cat "$CASE_DIR/two")', want 'two'"
	timeout 5 rm "$D1/listen/82" || fail "rm listen/82 failed"
}

case_refused() {
	if send "$D2/connect/1/81" x; then fail "connect to an unbound port succeeded"; fi
	grep -q "Connection refused" "$CASE_DIR/send.err" ||
		fail "want 'Connection refused', shell said: $(cat "$CASE_DIR/send.err")"
}

case_unreachable() {
	if send "$D2/connect/9/80" x; then fail "connect to missing domain 9 succeeded"; fi
	grep -q "No route to host" "$CASE_DIR/send.err" ||
		fail "want 'No route to host', shell said: $(cat "$CASE_DIR/send.err")"
}

case_request_response() {
	timeout 10 bash -c 'exec 3<>"$1"; read -r line <&3; printf "re: %s\n" "$line" >&3; read -r more <&3; printf "re: %s\n" "$more" >&3' \
		_ "$D1/listen/83" &
	local server=$!
	wait_bound "$D1" 83
	local reply
	reply=$(timeout 10 bash -c 'exec 3<>"$1"; echo ping >&3; read -r r <&3; echo "$r"; echo again >&3; read -r r <&3; echo "$r"' \
		_ "$D2/connect/1/83") || fail "client exited with $?"
	wait "$server" || fail "server exited with $?"
	[ "$reply" = "re: ping
re: again" ] || fail "client got '$reply'"
}

case_bulk_64mib_both_ways() {
	local n=$((64 << 20))
	head -c "$n" /dev/urandom >"$CASE_DIR/a" || fail "no random data"
	head -c "$n" /dev/urandom >"$CASE_DIR/b" || fail "no random data"
	# Each side sends its file and reads the other's at the same time, on
	# one connection; it closes only after both directions are done.
	local side='exec 3<>"$1"; cat "$2" >&3 & w=$!; head -c '$n' <&3 >"$3"; wait $w'
	timeout 60 bash -c "$side" _ "$D1/listen/84" "$CASE_DIR/a" "$CASE_DIR/b.got" &
	local server=$!
	wait_bound "$D1" 84
	local t0
	t0=$(date +%s%N)
	timeout 60 bash -c "$side" _ "$D2/connect/1/84" "$CASE_DIR/b" "$CASE_DIR/a.got" || fail "dom2 side exited with $?"
	wait "$server" || fail "dom1 side exited with $?"
	local ms=$((($(date +%s%N) - t0) / 1000000))
	[ "$(sha256sum <"$CASE_DIR/a" | cut -c1-64)" = "$(sha256sum <"$CASE_DIR/a.got" | cut -c1-64)" ] ||
		fail "dom1 -> dom2 corrupted ($(stat -c %s "$CASE_DIR/a.got") bytes arrived)"
	[ "$(sha256sum <"$CASE_DIR/b" | cut -c1-64)" = "$(sha256sum <"$CASE_DIR/b.got" | cut -c1-64)" ] ||
		fail "dom2 -> dom1 corrupted ($(stat -c %s "$CASE_DIR/b.got") bytes arrived)"
	echo "2 x 64 MiB intact in $ms ms"
	rm -f "$CASE_DIR"/a* "$CASE_DIR"/b*
}

case_concurrent_40() {
	local i pids=()
	for i in $(seq 40); do
		head -c $((256 << 10)) /dev/urandom >"$CASE_DIR/src.$i"
	done
	for i in $(seq 40); do
		timeout 30 cat "$D1/listen/85" >"$CASE_DIR/dst.$i" &
		pids+=($!)
	done
	wait_bound "$D1" 85
	local senders=()
	for i in $(seq 40); do
		# Odd ones from dom2, even ones from dom3: two links at once.
		local from=$D2
		[ $((i % 2)) = 0 ] && from=$D3
		timeout 30 bash -c 'cat "$2" > "$1"' _ "$from/connect/1/85" "$CASE_DIR/src.$i" &
		senders+=($!)
	done
	local bad=0
	for i in "${senders[@]}"; do wait "$i" || bad=$((bad + 1)); done
	[ "$bad" = 0 ] || fail "$bad of 40 senders failed"
	for i in "${pids[@]}"; do wait "$i" || bad=$((bad + 1)); done
	[ "$bad" = 0 ] || fail "$bad of 40 accepting readers failed"
	local want got
	want=$(for i in $(seq 40); do sha256sum <"$CASE_DIR/src.$i" | cut -c1-64; done | sort)
	got=$(for i in $(seq 40); do sha256sum <"$CASE_DIR/dst.$i" | cut -c1-64; done | sort)
	[ "$want" = "$got" ] || fail "the 40 received streams differ from the 40 sent ($(echo "$want" "$got" | tr ' ' '\n' | sort | uniq -u | wc -l) mismatches)"
	timeout 5 rm "$D1/listen/85"
}

case_eof_on_peer_close() {
	timeout 10 bash -c 'printf "bye\n" > "$1"' _ "$D1/listen/86" &
	local server=$!
	wait_bound "$D1" 86
	local got
	got=$(timeout 10 cat "$D2/connect/1/86")
	local rc=$?
	[ "$rc" = 0 ] || fail "reader did not see EOF after the peer closed (cat exited $rc)"
	[ "$got" = bye ] || fail "reader got '$got'"
	wait "$server" || fail "writer exited with $?"
}

case_epipe_after_peer_hangup() {
	timeout 10 head -c 5 "$D1/listen/87" >"$CASE_DIR/got" &
	local reader=$!
	wait_bound "$D1" 87
	timeout 15 bash -c '
		exec 3>"$1" || exit 3
		printf hello >&3 || exit 4
		for i in $(seq 50); do
			sleep 0.1
			if ! printf x >&3 2>"$2"; then
				grep -q "Broken pipe" "$2" && exit 0
				cat "$2"; exit 5
			fi
		done
		exit 6' _ "$D2/connect/1/87" "$CASE_DIR/werr"
	local rc=$?
	case $rc in
	0) ;;
	6) fail "writes kept succeeding for 5 s after the peer closed" ;;
	5) fail "write failed, but not with EPIPE: $(cat "$CASE_DIR/werr")" ;;
	*) fail "writer exited with $rc" ;;
	esac
	wait "$reader" || fail "reader exited with $?"
	[ "$(cat "$CASE_DIR/got")" = hello ] || fail "reader got '$(cat "$CASE_DIR/got")'"
	timeout 5 rm "$D1/listen/87"
}

# Half-close through ctl: the peer reads EOF after what was sent, the answer
# still comes back, and a later write here fails with EPIPE.
case_half_close() {
	timeout 10 bash -c 'exec 3<>"$1"; n=$(cat <&3 | wc -c); echo "got $n" >&3' _ "$D1/listen/94" &
	local server=$!
	wait_bound "$D1" 94
	local out
	out=$(timeout 10 bash -c '
		exec 3<>"$1"
		printf abcdef >&3
		for c in $(ls "$2"); do
			grep -qx "remote dom(1):94" "$2/$c/status" && id=$c
		done
		[ -n "${id:-}" ] || { echo "no conn for port 94"; exit 3; }
		echo shutdown >"$2/$id/ctl" || exit 4
		read -r reply <&3 || exit 5
		echo "$reply"
		printf x >&3 2>"$3" && { echo "write after shutdown succeeded"; exit 6; }
		grep -q "Broken pipe" "$3" || { cat "$3"; exit 7; }
		exit 0' _ "$D2/connect/1/94" "$D2/conn" "$CASE_DIR/w.err")
	local rc=$?
	[ "$rc" = 0 ] || fail "client exited $rc: $out"
	[ "$out" = "got 6" ] || fail "client got '$out', want 'got 6'"
	wait "$server" || fail "server exited with $?"
	timeout 5 rm "$D1/listen/94"
}

case_sigint_blocked_accept() {
	env --default-signal=INT cat "$D1/listen/88" >/dev/null &
	local pid=$!
	wait_bound "$D1" 88
	interrupt_within "$pid" "cat listen/88 (blocked in accept)"
	timeout 5 rm "$D1/listen/88"
}

case_sigint_blocked_read() {
	# dom1 accepts and holds the connection open without writing.
	timeout 15 bash -c 'exec 3<>"$1"; sleep 10' _ "$D1/listen/89" &
	local holder=$!
	wait_bound "$D1" 89
	env --default-signal=INT cat "$D2/connect/1/89" >/dev/null &
	local pid=$!
	sleep 0.3 # let the connect finish and the read block
	interrupt_within "$pid" "cat connect/1/89 (blocked in read)"
	kill "$holder" 2>/dev/null
	wait "$holder" 2>/dev/null
	timeout 5 rm "$D1/listen/89"
}

case_rm_unbinds() {
	listed "$D1/listen" 80 || fail "port 80 (bound by the first case) not listed"
	timeout 5 rm "$D1/listen/80" || fail "rm listen/80 failed"
	if listed "$D1/listen" 80; then fail "port 80 still listed after rm"; fi
	if send "$D2/connect/1/80" x; then fail "connect to the unbound port 80 succeeded"; fi
	grep -q "Connection refused" "$CASE_DIR/send.err" ||
		fail "after rm: want 'Connection refused', shell said: $(cat "$CASE_DIR/send.err")"
	# rm also ends an accept that is waiting on the port.
	timeout 10 cat "$D1/listen/92" >/dev/null 2>"$CASE_DIR/acc.err" &
	local acc=$!
	wait_bound "$D1" 92
	timeout 5 rm "$D1/listen/92" || fail "rm listen/92 failed"
	local i
	for i in $(seq 50); do [ "$(state "$acc")" = gone ] && break; sleep 0.1; done
	[ "$(state "$acc")" = gone ] || fail "an accept blocked on listen/92 still waits 5 s after rm"
	wait "$acc" && fail "the accept interrupted by rm reported success"
	echo "blocked accept ended by rm: $(cat "$CASE_DIR/acc.err")"
}

case_status_files() {
	[ "$(timeout 5 cat "$D1/self")" = 1 ] || fail "dom1/self says '$(timeout 5 cat "$D1/self")'"
	[ "$(timeout 5 cat "$D3/self")" = 3 ] || fail "dom3/self says '$(timeout 5 cat "$D3/self")'"
	timeout 15 bash -c 'exec 3<>"$1"; printf abc >&3; head -c 5 <&3 >"$2"; sleep 8' _ "$D1/listen/90" "$CASE_DIR/got1" &
	local server=$!
	wait_bound "$D1" 90
	# The client then blocks reading until the server hangs up.
	timeout 15 bash -c 'exec 3<>"$1"; head -c 3 <&3 >"$2"; printf defgh >&3; cat <&3 >/dev/null 2>"$3"; echo $? >"$4"' \
		_ "$D2/connect/1/90" "$CASE_DIR/got" "$CASE_DIR/hup.err" "$CASE_DIR/hup.rc" &
	local client=$!
	local i
	for i in $(seq 50); do [ -s "$CASE_DIR/got" ] && break; sleep 0.1; done
	[ "$(cat "$CASE_DIR/got")" = abc ] || fail "client got '$(cat "$CASE_DIR/got")'"
	for i in $(seq 50); do [ -s "$CASE_DIR/got1" ] && break; sleep 0.1; done
	[ "$(cat "$CASE_DIR/got1")" = defgh ] || fail "server got '$(cat "$CASE_DIR/got1")'"
	local id1 id2
	id1=$(conn_with "$D1" '(^|[^0-9])90([^0-9]|$)') || fail "no connection in dom1/conn mentions port 90: $(timeout 5 ls "$D1/conn")"
	id2=$(conn_with "$D2" '(^|[^0-9])90([^0-9]|$)') || fail "no connection in dom2/conn mentions port 90: $(timeout 5 ls "$D2/conn")"
	local s1 s2
	s1=$(timeout 5 cat "$D1/conn/$id1/status")
	s2=$(timeout 5 cat "$D2/conn/$id2/status")
	echo "dom1/conn/$id1/status:"; echo "$s1" | sed 's/^/    /'
	echo "dom2/conn/$id2/status:"; echo "$s2" | sed 's/^/    /'
	# The status names both ends and counts the bytes each way.
	local want
	for want in 'state established' 'local dom\(1\):90' 'remote dom\(2\):[0-9]+' 'bytes_in 5' 'bytes_out 3'; do
		echo "$s1" | grep -Eqx "$want" || fail "dom1's status lacks a line '$want'"
	done
	for want in 'state established' 'local dom\(2\):[0-9]+' 'remote dom\(1\):90' 'bytes_in 3' 'bytes_out 5'; do
		echo "$s2" | grep -Eqx "$want" || fail "dom2's status lacks a line '$want'"
	done
	# The links each side sees.
	listed "$D1/links" 2 || fail "dom1/links does not list domain 2: $(timeout 5 ls "$D1/links")"
	local l2
	l2=$(timeout 5 cat "$D2/links/1") || fail "cat dom2/links/1 failed"
	echo "dom2/links/1:"; echo "$l2" | sed 's/^/    /'
	for want in 'peer 1' 'state up' 'conns [1-9][0-9]*'; do
		echo "$l2" | grep -Eqx "$want" || fail "dom2/links/1 lacks a line '$want'"
	done
	# ctl: hang up from dom1; dom2's connection must go away.
	timeout 5 bash -c 'echo hangup > "$1"' _ "$D1/conn/$id1/ctl" || fail "writing hangup to conn/$id1/ctl failed"
	for i in $(seq 50); do
		timeout 5 cat "$D2/conn/$id2/status" 2>/dev/null | grep -qx 'state established' || break
		sleep 0.1
	done
	timeout 5 cat "$D2/conn/$id2/status" 2>/dev/null | grep -qx 'state established' &&
		fail "dom2's connection still established 5 s after dom1 hung up"
	echo "after hangup, dom2/conn/$id2/status: $(timeout 5 cat "$D2/conn/$id2/status" 2>&1 | grep state || echo gone)"
	for i in $(seq 50); do [ -s "$CASE_DIR/hup.rc" ] && break; sleep 0.1; done
	[ -s "$CASE_DIR/hup.rc" ] || fail "dom2's read still blocked 5 s after dom1 hung up"
	[ "$(cat "$CASE_DIR/hup.rc")" != 0 ] || fail "dom2's read ended with EOF after a hangup; want ECONNRESET"
	grep -q "Connection reset by peer" "$CASE_DIR/hup.err" || fail "dom2's read after hangup: $(cat "$CASE_DIR/hup.err")"
	echo "dom2's blocked read after the hangup: $(cat "$CASE_DIR/hup.err")"
	kill "$server" "$client" 2>/dev/null
	wait "$server" "$client" 2>/dev/null
	timeout 5 rm "$D1/listen/90"
	return 0
}

case_killed_domain() {
	timeout 30 cat "$D1/listen/91" >"$CASE_DIR/out" 2>"$CASE_DIR/err" &
	local reader=$!
	wait_bound "$D1" 91
	timeout 60 bash -c 'exec 3>"$1"; echo before >&3; sleep 50' _ "$D3/connect/1/91" &
	local writer=$!
	local i
	for i in $(seq 50); do grep -q before "$CASE_DIR/out" && break; sleep 0.1; done
	grep -q before "$CASE_DIR/out" || fail "no data from dom3 before the kill"
	local pid3
	pid3=$(cat "$SIM/dom3.pid") || fail "no $SIM/dom3.pid"
	local t0
	t0=$(date +%s%N)
	kill -KILL "$pid3"
	for i in $(seq 100); do [ "$(state "$reader")" = gone ] && break; sleep 0.1; done
	local ms=$((($(date +%s%N) - t0) / 1000000))
	[ "$(state "$reader")" = gone ] || fail "dom1's read still blocked 10 s after dom3's daemon was killed"
	wait "$reader"
	local rc=$?
	echo "dom1's read ended ${ms} ms after the kill, cat exit $rc: $(cat "$CASE_DIR/err")"
	[ "$rc" != 124 ] || fail "dom1's read only ended by timeout"
	[ "$rc" != 0 ] || fail "dom1's read ended with a clean EOF; a dead peer must be an error"
	kill -KILL "$writer" 2>/dev/null
	wait "$writer" 2>/dev/null
	# The others keep talking.
	kill -0 "$SIM_PID" 2>/dev/null || fail "idcfs sim died with domain 3"
	timeout 10 cat "$D1/listen/93" >"$CASE_DIR/after" &
	local r2=$!
	wait_bound "$D1" 93
	send "$D2/connect/1/93" still-here || fail "dom2 -> dom1 after the kill failed: $(cat "$CASE_DIR/send.err")"
	wait "$r2" || fail "dom1's accept after the kill exited with $?"
	[ "$(cat "$CASE_DIR/after")" = still-here ] || fail "dom1 got '$(cat "$CASE_DIR/after")' after the kill"
	timeout 5 rm "$D1/listen/93" "$D1/listen/91" 2>/dev/null
	return 0
}

# The other subcommands on their own: the embedded Xenstore, setup, and a
# single domain's daemon that reads its domain id from Xenstore. Killed with
# SIGKILL it leaves a stale mount, which a plain umount clears, and so does a
# daemon restarted over it; SIGTERM unmounts and exits 0.
case_standalone_mount() {
	local x=$CASE_DIR
	timeout 60 "$IDCFS" xenstored --socket "$x/xs0" --domain "5=$x/xs5" >"$x/xsd.out" 2>"$x/xsd.err" &
	local xsd=$! i
	for i in $(seq 50); do grep -q '^ready' "$x/xsd.out" 2>/dev/null && break; sleep 0.1; done
	grep -q '^ready' "$x/xsd.out" || fail "idcfs xenstored not ready: $(cat "$x/xsd.err")"
	timeout 10 "$IDCFS" setup --xenstore "$x/xs0" 5 >"$x/setup.out" 2>&1 || fail "idcfs setup 5 failed: $(cat "$x/setup.out")"
	local m=$x/mnt
	timeout 60 "$IDCFS" mount --backend shm --shm-dir "$x/shm" --xenstore "$x/xs5" "$m" >"$x/m1.out" 2>"$x/m1.err" &
	local d1=$!
	for i in $(seq 100); do grep -q '^ready' "$x/m1.out" 2>/dev/null && break; sleep 0.1; done
	grep -q '^ready' "$x/m1.out" || fail "first idcfs mount not ready: $(tail -n 5 "$x/m1.err")"
	[ "$(timeout 5 cat "$m/self")" = 5 ] || fail "self says '$(timeout 5 cat "$m/self")', want 5 (read from Xenstore)"
	# timeout's child is the daemon.
	local pid
	pid=$(pgrep -P "$d1") || fail "no daemon under timeout $d1"
	kill -KILL "$pid"
	wait "$d1" 2>/dev/null
	timeout 5 stat "$m/self" >/dev/null 2>"$x/stale.err" && fail "the mount still answers after its daemon was killed"
	grep -q "not connected" "$x/stale.err" || fail "want a stale mount (ENOTCONN), got: $(cat "$x/stale.err")"
	echo "after SIGKILL: $(cat "$x/stale.err")"
	# A plain umount clears the stale mount...
	timeout 10 umount "$m" || fail "umount of the stale mount failed"
	awk -v w="$m" '$2 == w' /proc/mounts | grep -q . && fail "$m still mounted after umount"
	# ...and so does a daemon started over it.
	timeout 60 "$IDCFS" mount --backend shm --shm-dir "$x/shm" --xenstore "$x/xs5" "$m" >"$x/m1b.out" 2>"$x/m1b.err" &
	d1=$!
	for i in $(seq 100); do grep -q '^ready' "$x/m1b.out" 2>/dev/null && break; sleep 0.1; done
	grep -q '^ready' "$x/m1b.out" || fail "idcfs mount not ready after umount: $(tail -n 5 "$x/m1b.err")"
	pid=$(pgrep -P "$d1") || fail "no daemon under timeout $d1"
	kill -KILL "$pid"
	wait "$d1" 2>/dev/null
	timeout 5 stat "$m/self" >/dev/null 2>&1 && fail "the mount still answers after its daemon was killed (twice)"
	timeout 60 "$IDCFS" mount --backend shm --shm-dir "$x/shm" --xenstore "$x/xs5" "$m" >"$x/m2.out" 2>"$x/m2.err" &
	local d2=$!
	for i in $(seq 100); do grep -q '^ready' "$x/m2.out" 2>/dev/null && break; sleep 0.1; done
	grep -q '^ready' "$x/m2.out" || fail "restarted idcfs mount not ready over the stale mount: $(tail -n 5 "$x/m2.err")"
	[ "$(timeout 5 cat "$m/self")" = 5 ] || fail "restarted daemon: self says '$(timeout 5 cat "$m/self")'"
	pid=$(pgrep -P "$d2") || fail "no daemon under timeout $d2"
	local t0
	t0=$(date +%s%N)
	kill -TERM "$pid"
	wait "$d2"
	local rc=$?
	echo "restarted daemon stopped $((($(date +%s%N) - t0) / 1000000)) ms after SIGTERM, exit $rc"
	[ "$rc" = 0 ] || fail "idcfs mount exited with $rc after SIGTERM"
	awk -v w="$m" '$2 == w' /proc/mounts | grep -q . && fail "$m still mounted after SIGTERM"
	kill -INT "$xsd"
	wait "$xsd" || fail "idcfs xenstored exited with $? after SIGINT"
	return 0
}

case_sim_stops_cleanly() {
	local t0 i
	t0=$(date +%s%N)
	kill -INT "$SIM_PID"
	for i in $(seq 150); do kill -0 "$SIM_PID" 2>/dev/null || break; sleep 0.1; done
	kill -0 "$SIM_PID" 2>/dev/null && fail "idcfs sim still running 15 s after SIGINT"
	echo "idcfs sim stopped in $((($(date +%s%N) - t0) / 1000000)) ms (its exit status is checked by the main script)"
	awk -v w="$SIM/" 'index($2, w) == 1' /proc/mounts | grep -q . && fail "mounts left under $SIM: $(awk -v w="$SIM/" 'index($2, w) == 1 { print $2 }' /proc/mounts)"
	for i in xs shm dom1 dom2 dom3 dom1.pid dom2.pid dom3.pid; do
		[ -e "$SIM/$i" ] && fail "$SIM/$i left behind"
	done
	for i in $(pgrep -f -- "--shm-dir $SIM/shm"); do
		fail "a domain's daemon (pid $i) is still running"
	done
	return 0
}

# --- run ----------------------------------------------------------------------

CASES="oneshot stays_bound refused unreachable request_response bulk_64mib_both_ways concurrent_40
eof_on_peer_close epipe_after_peer_hangup half_close sigint_blocked_accept sigint_blocked_read rm_unbinds
status_files killed_domain standalone_mount sim_stops_cleanly"
PASSED=0
FAILED=()
for c in $CASES; do
	if [ -n "${E2E_ONLY:-}" ] && ! printf ' %s ' "$E2E_ONLY" | grep -q " $c "; then
		continue
	fi
	CASE_DIR=$WORK/case.$c
	mkdir -p "$CASE_DIR"
	t0=$(date +%s%N)
	(
		export CASE_DIR
		# A case that fails early leaves its helpers running: stop them
		# (timeout passes SIGTERM on to the command it runs).
		trap 'kill -TERM $(jobs -p) 2>/dev/null' EXIT
		"case_$c"
	) >"$CASE_DIR/log" 2>&1
	rc=$?
	ms=$((($(date +%s%N) - t0) / 1000000))
	if [ "$rc" = 0 ]; then
		echo "PASS $c (${ms} ms)"
		PASSED=$((PASSED + 1))
	else
		echo "FAIL $c (${ms} ms)"
		FAILED+=("$c")
	fi
	sed 's/^/    /' "$CASE_DIR/log"
done

# The case above stopped the simulated host from a subshell; only this shell
# can collect its exit status.
if [ -n "${SIM_PID:-}" ] && ! kill -0 "$SIM_PID" 2>/dev/null; then
	wait "$SIM_PID"
	rc=$?
	if [ "$rc" = 0 ]; then
		echo "PASS sim_exit_status (0 after SIGINT)"
		PASSED=$((PASSED + 1))
	else
		echo "FAIL sim_exit_status: idcfs sim exited with $rc after SIGINT"
		FAILED+=(sim_exit_status)
	fi
fi

# A binary built with -race reports data races on stderr, which the daemons
# and the sim send to their logs.
races=$(grep -l "WARNING: DATA RACE" "$SIM"/*.log "$WORK/sim.err" "$WORK"/case.*/*.err 2>/dev/null)
if [ -n "$races" ]; then
	echo "FAIL data_races: the race detector fired in: $races"
	for f in $races; do
		grep -A 30 -m 1 "WARNING: DATA RACE" "$f" | sed 's/^/    /'
	done
	FAILED+=(data_races)
fi

echo
echo "e2e: $PASSED passed, ${#FAILED[@]} failed in $(($(date +%s) - SUITE_START)) s"
if [ "${#FAILED[@]}" -gt 0 ]; then
	echo "failed: ${FAILED[*]}"
	for f in "$SIM"/dom*.log "$WORK/sim.err"; do
		[ -f "$f" ] || continue
		echo "--- last lines of $(basename "$f")"
		tail -n 25 "$f" | sed 's/^/    /'
	done
	exit 1
fi
exit 0
