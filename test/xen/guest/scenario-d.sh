# Scenarios d (the daemon over files) and e (peer death) of test/xen,
# sourced by scenarios.sh in dom0 (busybox sh). Needs D1, D2 (empty with
# one domU), MB, and the helpers of scenarios.sh and common.sh.
#
# Every check runs a command on each side of a connection, in dom0 directly
# and in a domU through its agent (data/xt/cmd), and looks at both results.
# Ports: d uses 7000 + 100 x pair + n, e uses 8000 + n.

IDC=/idc

# d_start DOM COMMAND: start COMMAND in domain DOM (0: here, in the
# background; others through their agent), in /tmp, with /xt/common.sh
# loaded. Sets D_H, the handle for d_wait.
d_start() {
    if [ "$1" = 0 ]; then
        _k=$(cat /tmp/d-next 2>/dev/null || echo 1)
        echo $((_k + 1)) >/tmp/d-next
        rm -f "/tmp/d-rc.$_k"
        (
            cd /tmp
            sh -c ". /xt/common.sh; $2" >"/tmp/d-out.$_k" 2>&1 &
            echo $! >"/tmp/d-pid.$_k"
            wait $!
            echo $? >"/tmp/d-rc.$_k"
        ) &
        D_H=0:$_k
    else
        # In base64: the agent reads its commands back through
        # xenstore-read, which escapes newlines and backslashes.
        D_H=$1:$(du_start "$1" ". /xt/common.sh; eval \"\$(echo $(printf '%s' "$2" | base64 -w 0) | base64 -d)\"")
    fi
}

# d_wait HANDLE SECONDS: wait for a command of d_start; its output (tail)
# goes to /tmp/xt-du.out; returns its exit status (124: still running at the
# deadline; a local one is then killed).
d_wait() {
    _d=${1%%:*} _k=${1#*:}
    if [ "$_d" != 0 ]; then
        du_wait "$_d" "$_k" "$2"
        return
    fi
    _i=0
    until [ -s "/tmp/d-rc.$_k" ]; do
        _i=$((_i + 1))
        if [ $_i -gt $(($2 * 5)) ]; then
            kill "$(cat "/tmp/d-pid.$_k")" 2>/dev/null
            { tail -c 3000 "/tmp/d-out.$_k"; echo "(still running after $2 s; killed)"; } >/tmp/xt-du.out
            return 124
        fi
        sleep 0.2
    done
    tail -c 3000 "/tmp/d-out.$_k" >/tmp/xt-du.out
    return "$(cat "/tmp/d-rc.$_k")"
}

# d_run DOM SECONDS COMMAND: d_start and d_wait.
d_run() {
    d_start "$1" "$3"
    d_wait "$D_H" "$2"
}

# d_name DOM: dom0, domu1, domu2, domu3 (for result names).
d_name() {
    case $1 in
        0) echo dom0 ;;
        "$D1") echo domu1 ;;
        "$D2") echo domu2 ;;
        "$D3") echo domu3 ;;
        *) echo "dom$1" ;;
    esac
}

# d_sha DOM: the sha256 of /tmp/xt-data in domain DOM.
d_sha() {
    if [ "$1" = 0 ]; then xt_sha /tmp/xt-data; else xenstore-read "/local/domain/$1/data/xt/sha"; fi
}

# d_since T0: seconds since uptime T0, one decimal.
d_since() { awk -v a="$1" -v b="$(xt_uptime)" 'BEGIN{printf "%.1f", b-a}'; }

# d_show NAME WHAT: the last output of a command, prefixed, for a failure.
d_show() { xt_show "$1 $2" /tmp/xt-du.out; }

# d_daemon_log NAME DOM...: the daemon's last warnings and errors in each
# domain, for a failure.
d_daemon_log() {
    _n=$1
    shift
    for _dom in "$@"; do
        d_run "$_dom" 20 "grep -E 'level=(warning|error|fatal|panic)|panic:|fatal error|dial failed' /tmp/idcfs-mount.log | tail -n 8"
        xt_show "$_n daemon-$(d_name "$_dom")" /tmp/xt-du.out
    done
}

# --- set-up ---------------------------------------------------------------------

# d_mount DOM: start idcfs mount in DOM (once) and wait until $IDC/self
# answers with DOM. Prints a result line only on failure.
d_mount() {
    [ -e "/tmp/d-mounted.$1" ] && return 0
    d_start "$1" "mkdir -p $IDC; exec idcfs mount --log-level debug $IDC >/tmp/idcfs-mount.log 2>&1"
    if d_run "$1" 60 "xt_wait_mount 50 && cat $IDC/self" && [ "$(cat /tmp/xt-du.out)" = "$1" ]; then
        touch "/tmp/d-mounted.$1"
        return 0
    fi
    _n=d-mount-$(d_name "$1")
    xt_result "$_n" FAIL "idcfs mount in domain $1: self is not $1"
    d_show "$_n" self
    d_run "$1" 20 "tail -n 30 /tmp/idcfs-mount.log"
    d_show "$_n" log
    return 1
}

# d_prepare DOM...: idcfs setup of 0 and the given domains, then idcfs
# mount in each. Returns 1 (after a FAIL line) if any of that failed.
d_prepare() {
    if ! idcfs setup 0 "$@" >/tmp/d-setup.log 2>&1; then
        xt_result "d-setup-$*" FAIL "idcfs setup 0 $*"
        xt_show d-setup /tmp/d-setup.log
        return 1
    fi
    _ok=0
    for _dom in 0 "$@"; do d_mount "$_dom" || _ok=1; done
    return $_ok
}

# d_bound DOM PORT: wait until PORT is bound in DOM.
d_bound() { d_run "$1" 40 "xt_wait_bound $2 30"; }

# --- checks between a server domain A and a client domain B -------------------

# d_echo NAME A B PORT: B sends one line to A's listening port.
d_echo() {
    _n=$1 _a=$2 _b=$3 _p=$4
    d_start "$_a" "timeout 60 cat $IDC/listen/$_p"
    _hs=$D_H
    if ! d_bound "$_a" "$_p"; then
        xt_result "$_n" FAIL "port $_p not bound in domain $_a"
        d_show "$_n" bind
        return
    fi
    d_run "$_b" 60 "echo hello-from-$_b-to-$_a >$IDC/connect/$_a/$_p"
    _crc=$?
    cp /tmp/xt-du.out /tmp/d-client.out
    # A client that failed leaves the server waiting: do not wait long.
    _w=60
    [ $_crc = 0 ] || _w=5
    d_wait "$_hs" $_w
    _src=$?
    _got=$(cat /tmp/xt-du.out)
    if [ $_crc = 0 ] && [ $_src = 0 ] && [ "$_got" = "hello-from-$_b-to-$_a" ]; then
        xt_result "$_n" PASS "echo >connect/$_a/$_p in domain $_b, cat listen/$_p in domain $_a got the line"
    else
        xt_result "$_n" FAIL "client exit $_crc, server exit $_src, server got '$_got'"
        xt_show "$_n client" /tmp/d-client.out
        d_show "$_n" server
        d_daemon_log "$_n" "$_a" "$_b"
    fi
}

# d_reqresp NAME A B PORT: B sends a request on a read-write file, shuts
# its sending side down through conn/<id>/ctl and reads the reply to EOF; A
# upper-cases what it reads until EOF, on one read-write file.
d_reqresp() {
    _n=$1 _a=$2 _b=$3 _p=$4
    d_start "$_a" "exec 3<>$IDC/listen/$_p || exit 3; timeout 60 tr a-z A-Z <&3 >&3; echo XT-SERVED=\$?"
    _hs=$D_H
    if ! d_bound "$_a" "$_p"; then
        xt_result "$_n" FAIL "port $_p not bound in domain $_a"
        d_show "$_n" bind
        return
    fi
    d_run "$_b" 60 "exec 3<>$IDC/connect/$_a/$_p || exit 3
        echo 'where is the ring, $_b?' >&3 || exit 4
        id=\$(xt_conn_id 'remote dom($_a):$_p') || { echo no conn id; cat $IDC/conn/*/status; exit 5; }
        echo shutdown >$IDC/conn/\$id/ctl || exit 6
        timeout 60 cat <&3"
    _crc=$?
    _got=$(cat /tmp/xt-du.out)
    cp /tmp/xt-du.out /tmp/d-client.out
    d_wait "$_hs" 60
    _src=$?
    if [ $_crc = 0 ] && [ $_src = 0 ] && grep -q XT-SERVED=0 /tmp/xt-du.out && [ "$_got" = "WHERE IS THE RING, $_b?" ]; then
        xt_result "$_n" PASS "request, shutdown via ctl, reply '$_got' read to EOF"
    else
        xt_result "$_n" FAIL "client exit $_crc got '$_got', server exit $_src"
        xt_show "$_n client" /tmp/d-client.out
        d_show "$_n" server
        d_daemon_log "$_n" "$_a" "$_b"
    fi
}

# d_bulk NAME A B PORT: B sends its /tmp/xt-data (MB MiB) to A; sha256 of
# what A received against B's.
d_bulk() {
    _n=$1 _a=$2 _b=$3 _p=$4
    _want=$(d_sha "$_b")
    d_start "$_a" "timeout 200 cat $IDC/listen/$_p >/tmp/d-rx; rc=\$?; echo XT-SHA=\$(xt_sha /tmp/d-rx) XT-BYTES=\$(wc -c </tmp/d-rx); rm -f /tmp/d-rx; exit \$rc"
    _hs=$D_H
    if ! d_bound "$_a" "$_p"; then
        xt_result "$_n" FAIL "port $_p not bound in domain $_a"
        d_show "$_n" bind
        return
    fi
    _t0=$(xt_uptime)
    d_run "$_b" 240 "timeout 200 cat /tmp/xt-data >$IDC/connect/$_a/$_p"
    _crc=$?
    cp /tmp/xt-du.out /tmp/d-client.out
    d_wait "$_hs" 120
    _src=$?
    _secs=$(d_since "$_t0")
    _got=$(sed -n 's/.*XT-SHA=\([0-9a-f]*\).*/\1/p' /tmp/xt-du.out)
    if [ $_crc = 0 ] && [ $_src = 0 ] && [ -n "$_want" ] && [ "$_got" = "$_want" ]; then
        xt_result "$_n" PASS "$MB MiB from domain $_b to $_a, sha256 ${_want%"${_want#????????????}"}.. equal, ${_secs}s"
        echo "XT-FIGURE $_n $(awk -v m="$MB" -v s="$_secs" 'BEGIN{printf "%.2f", m/s}') MiB/s over files (cat to cat, $MB MiB, ${_secs}s incl. the agents' overhead)"
    else
        xt_result "$_n" FAIL "client exit $_crc, server exit $_src, want ${_want:-?} got ${_got:-none} (${_secs}s)"
        xt_show "$_n client" /tmp/d-client.out
        d_show "$_n" server
        d_daemon_log "$_n" "$_a" "$_b"
    fi
}

# d_conc NAME A B PORT: 20 connections from B to A open at the same time,
# each carrying a tag and 64 KiB; A accepts them with 20 readers; the sorted
# sha256 of the 20 streams must agree on both sides.
d_conc() {
    _n=$1 _a=$2 _b=$3 _p=$4
    d_start "$_a" "rm -f /tmp/d-cc.*
        for i in \$(seq 20); do timeout 150 cat $IDC/listen/$_p >/tmp/d-cc.\$i & done
        wait
        echo XT-AGG=\$(for i in \$(seq 20); do sha256sum </tmp/d-cc.\$i | cut -c1-64; done | sort | sha256sum | cut -c1-16)
        rm -f /tmp/d-cc.*"
    _hs=$D_H
    if ! d_bound "$_a" "$_p"; then
        xt_result "$_n" FAIL "port $_p not bound in domain $_a"
        d_show "$_n" bind
        return
    fi
    d_run "$_b" 200 "rm -f /tmp/d-cc-go /tmp/d-cc-bad.*
        for i in \$(seq 20); do
            (
                exec 3>$IDC/connect/$_a/$_p || { touch /tmp/d-cc-bad.\$i; exit 1; }
                { echo conn \$i; dd if=/tmp/xt-data bs=65536 skip=\$i count=1 2>/dev/null; } >&3 || touch /tmp/d-cc-bad.\$i
                i=0; while [ ! -e /tmp/d-cc-go ] && [ \$i -lt 600 ]; do sleep 0.2; i=\$((i + 1)); done
            ) &
        done
        n=0 i=0
        while [ \$i -lt 600 ]; do
            n=\$(ls $IDC/conn | wc -l)
            [ \$n -ge 20 ] && break
            sleep 0.2; i=\$((i + 1))
        done
        echo XT-OPEN=\$n
        touch /tmp/d-cc-go
        wait
        echo XT-BAD=\$(ls /tmp/d-cc-bad.* 2>/dev/null | wc -l)
        echo XT-AGG=\$(for i in \$(seq 20); do { echo conn \$i; dd if=/tmp/xt-data bs=65536 skip=\$i count=1 2>/dev/null; } | sha256sum | cut -c1-64; done | sort | sha256sum | cut -c1-16)"
    _crc=$?
    cp /tmp/xt-du.out /tmp/d-client.out
    d_wait "$_hs" 120
    _src=$?
    _open=$(sed -n 's/^XT-OPEN=//p' /tmp/d-client.out)
    _bad=$(sed -n 's/^XT-BAD=//p' /tmp/d-client.out)
    _want=$(sed -n 's/^XT-AGG=//p' /tmp/d-client.out)
    _got=$(sed -n 's/^XT-AGG=//p' /tmp/xt-du.out)
    if [ $_crc = 0 ] && [ $_src = 0 ] && [ "${_open:-0}" -ge 20 ] && [ "$_bad" = 0 ] && [ -n "$_want" ] && [ "$_got" = "$_want" ]; then
        xt_result "$_n" PASS "20 connections open at once in domain $_b, 20 streams of 64 KiB intact in $_a"
    else
        xt_result "$_n" FAIL "client exit $_crc (open at once: ${_open:-?}, failed: ${_bad:-?}), server exit $_src, streams want ${_want:-?} got ${_got:-none}"
        xt_show "$_n client" /tmp/d-client.out
        d_show "$_n" server
        d_daemon_log "$_n" "$_a" "$_b"
    fi
}

# d_errors NAME A B PORT: from B, a connect to an unbound port of A is
# refused, and one to a domain that does not exist is unreachable, at once.
d_errors() {
    _n=$1 _a=$2 _b=$3 _p=$4
    d_run "$_b" 60 "t0=\$(xt_uptime)
        if echo x >$IDC/connect/$_a/$_p; then echo XT-REFUSED=connected; else echo XT-REFUSED=\$?; fi
        echo XT-T1=\$(xt_uptime)
        if echo x >$IDC/connect/77/$_p; then echo XT-UNREACH=connected; else echo XT-UNREACH=\$?; fi
        echo XT-T0=\$t0 XT-T2=\$(xt_uptime)"
    _t0=$(sed -n 's/.*XT-T0=\([0-9.]*\).*/\1/p' /tmp/xt-du.out)
    _t1=$(sed -n 's/^XT-T1=//p' /tmp/xt-du.out)
    _t2=$(sed -n 's/.*XT-T2=\([0-9.]*\).*/\1/p' /tmp/xt-du.out)
    _s1=$(awk -v a="$_t0" -v b="$_t1" 'BEGIN{printf "%.1f", b-a}')
    _s2=$(awk -v a="$_t1" -v b="$_t2" 'BEGIN{printf "%.1f", b-a}')
    if grep -q 'connect/'"$_a/$_p"': Connection refused' /tmp/xt-du.out && ! grep -q XT-REFUSED=connected /tmp/xt-du.out; then
        xt_result "$_n-refused" PASS "domain $_b: 'Connection refused' for connect/$_a/$_p in ${_s1}s"
    else
        xt_result "$_n-refused" FAIL "domain $_b: no 'Connection refused' for connect/$_a/$_p (${_s1}s)"
        d_show "$_n-refused" client
    fi
    if grep -q 'connect/77/'"$_p"': No route to host' /tmp/xt-du.out && ! grep -q XT-UNREACH=connected /tmp/xt-du.out; then
        xt_result "$_n-unreachable" PASS "domain $_b: 'No route to host' for connect/77/$_p in ${_s2}s"
    else
        xt_result "$_n-unreachable" FAIL "domain $_b: no 'No route to host' for connect/77/$_p (${_s2}s)"
        d_show "$_n-unreachable" client
    fi
}

# d_figures NAME A B PORT: for the record only: the time of one connect and
# of 50 one-line round trips through an echo server (shell read, one byte
# per read(2), so the figure includes the shell's cost).
d_figures() {
    _n=$1 _a=$2 _b=$3 _p=$4
    d_start "$_a" "exec 3<>$IDC/listen/$_p || exit 3; timeout 120 cat <&3 >&3"
    _hs=$D_H
    d_bound "$_a" "$_p" || { echo "XT-FIGURE $_n port $_p not bound"; return; }
    d_run "$_b" 150 "t0=\$(xt_uptime)
        exec 3<>$IDC/connect/$_a/$_p || exit 3
        t1=\$(xt_uptime)
        i=0
        while [ \$i -lt 50 ]; do echo ping >&3; read -r r <&3; [ \"\$r\" = ping ] || exit 4; i=\$((i + 1)); done
        t2=\$(xt_uptime)
        awk -v a=\$t0 -v b=\$t1 -v c=\$t2 'BEGIN{printf \"XT-RT connect %.0f ms, round trip %.1f ms\\n\", (b-a)*1000, (c-b)*1000/50}'"
    _crc=$?
    if [ $_crc = 0 ]; then
        echo "XT-FIGURE $_n $(sed -n 's/^XT-RT //p' /tmp/xt-du.out) (domain $_b to $_a, 50 x 5 bytes, shell read)"
    else
        echo "XT-FIGURE $_n failed (exit $_crc): $(tr '\n' ' ' </tmp/xt-du.out | tail -c 300)"
    fi
    d_wait "$_hs" 30 >/dev/null
}

# d_pair TAG A B BASE: every check with A serving and B connecting.
d_pair() {
    d_echo "$1-echo-$(d_name "$3")-to-$(d_name "$2")" "$2" "$3" $(($4 + 1))
    d_reqresp "$1-reqresp-$(d_name "$3")-to-$(d_name "$2")" "$2" "$3" $(($4 + 2))
    d_bulk "$1-bulk-$(d_name "$3")-to-$(d_name "$2")" "$2" "$3" $(($4 + 3))
    d_conc "$1-conc20-$(d_name "$3")-to-$(d_name "$2")" "$2" "$3" $(($4 + 4))
    d_errors "$1-errors-$(d_name "$3")" "$2" "$3" $(($4 + 5))
    d_figures "$1-figures-$(d_name "$3")-to-$(d_name "$2")" "$2" "$3" $(($4 + 6))
}

# d_links NAME DOM: the links file of every peer of DOM, for the record.
d_links() {
    d_run "$2" 20 "for f in $IDC/links/*; do echo \"\$f: \$(tr '\n' ' ' <\$f)\"; done"
    sed "s/^/XT-FIGURE $1 /" /tmp/xt-du.out
}

scenario_d_run() {
    if ! d_prepare $D1 $D2; then
        xt_result d-daemon FAIL "set-up failed; the file checks did not run"
        return
    fi
    xt_result d-setup-mount PASS "idcfs setup 0 $D1 $D2; idcfs mount in dom0 and domain(s) $D1 $D2"
    d_pair d 0 "$D1" 7000
    d_pair d "$D1" 0 7100
    if [ -z "$D2" ]; then
        xt_result d-domu1-domu2 SKIP "one domU only (DOMUS=1): the domU1<->domU2 checks need DOMUS=2"
    else
        d_pair d "$D1" "$D2" 7200
        d_pair d "$D2" "$D1" 7300
    fi
    # The daemons tear a link down after 30 s without connections; the
    # next connection must set up a new one, from either side.
    xt_mark "d: 35 s without connections"
    sleep 35
    d_echo d-relink-after-idle-dom0-to-domu1 "$D1" 0 7401
    sleep 35
    d_echo d-relink-after-idle-domu1-to-dom0 0 "$D1" 7402
    d_links d-links-dom0 0
}

# --- (e) peer death over files -------------------------------------------------

# e_died NAME HANDLE: wait (60 s at most) for a command that must fail
# once the victim is destroyed; PASS if it failed within 20 s of T0.
e_died() {
    d_wait "$2" 60
    _rc=$?
    _secs=$(d_since "$E_T0")
    _msg=$(grep -v '^$' /tmp/xt-du.out | tail -n 1)
    if [ $_rc != 0 ] && [ $_rc != 124 ] && [ $_rc != 143 ] &&
        awk -v s="$_secs" 'BEGIN{exit !(s <= 20)}'; then
        xt_result "$1" PASS "ended ${_secs}s after xl destroy, exit $_rc: $_msg"
    else
        xt_result "$1" FAIL "exit $_rc ${_secs}s after xl destroy: $_msg"
        d_show "$1" out
    fi
}

# e_fresh SUFFIX BASE: echo both ways between domu3 and dom0 (and domu1);
# returns 1 if one failed.
e_fresh() {
    _f0=$(cat /tmp/xt-fail)
    d_echo "e-fresh-echo-domu3-to-dom0$1" 0 "$D3" $(($2 + 1))
    d_echo "e-fresh-echo-dom0-to-domu3$1" "$D3" 0 $(($2 + 2))
    if [ -n "$S" ]; then
        d_echo "e-fresh-echo-domu3-to-domu1$1" "$S" "$D3" $(($2 + 3))
        d_echo "e-fresh-echo-domu1-to-domu3$1" "$D3" "$S" $(($2 + 4))
    fi
    [ "$(cat /tmp/xt-fail)" = "$_f0" ]
}

scenario_e_run() {
    if [ -n "$D2" ]; then V=$D2 VN=domu2 S=$D1; else V=$D1 VN=domu1 S=; fi
    if ! d_prepare $D1 $D2; then
        xt_result e-peer-death FAIL "set-up failed; nothing destroyed"
        return
    fi
    # What the victim holds: a raw vchan ring served for dom0; two
    # connections from dom0 (one dom0 reads, one dom0 writes into and the
    # victim never reads); with two domUs, one from the other domU, which
    # also keeps an echo connection with dom0 open across the destroy.
    du_start "$V" "idcfs vchan listen --domid 0 --keep-open </dev/null >/dev/null" >/dev/null
    idcfs vchan connect --domid "$V" --keep-open --timeout 120s </dev/null >/dev/null 2>/tmp/e.log &
    vpid=$!
    d_start "$V" "exec 3<>$IDC/listen/8001; exec 4<>$IDC/listen/8001; echo held; sleep 1000"
    d_bound "$V" 8001 || { xt_result e-peer-death FAIL "port 8001 not bound in $V"; return; }
    d_start 0 "timeout 200 cat $IDC/connect/$V/8001 >/dev/null"
    h_read=$D_H
    d_start 0 "timeout 200 cat /dev/zero >$IDC/connect/$V/8001"
    h_write=$D_H
    if [ -n "$S" ]; then
        d_start "$V" "exec 3<>$IDC/listen/8002; sleep 1000"
        d_bound "$V" 8002 || { xt_result e-peer-death FAIL "port 8002 not bound in $V"; return; }
        d_start "$S" "timeout 200 cat $IDC/connect/$V/8002 >/dev/null"
        h_sread=$D_H
        d_start "$S" "exec 3<>$IDC/listen/8003 || exit 3; timeout 200 cat <&3 >&3"
        h_secho=$D_H
        d_bound "$S" 8003 || { xt_result e-peer-death FAIL "port 8003 not bound in $S"; return; }
        rm -f /tmp/e-after
        d_start 0 "exec 3<>$IDC/connect/$S/8003 || exit 3; echo before >&3; read -r a <&3
            i=0; while [ ! -e /tmp/e-after ] && [ \$i -lt 600 ]; do sleep 0.2; i=\$((i + 1)); done
            echo after >&3; read -r b <&3; echo \"\$a \$b\""
        h_keep=$D_H
    fi
    # Everything in place: the vchan is connected, the victim has its
    # connections.
    want=2
    [ -n "$S" ] && want=3
    i=0
    until grep -q 'vchan connected' /tmp/e.log &&
        d_run "$V" 20 "ls $IDC/conn | wc -l" && [ "$(cat /tmp/xt-du.out)" -ge $want ]; do
        i=$((i + 1))
        if [ $i -gt 60 ]; then
            xt_result e-peer-death FAIL "the victim $V did not get its $want connections and the vchan"
            xt_show e-vchan /tmp/e.log
            d_show e-peer-death conns
            for h in "$h_read" "$h_write" $h_sread $h_keep; do
                d_wait "$h" 1
                d_show e-peer-death "client $h"
            done
            d_daemon_log e-peer-death 0 "$V" $S
            return
        fi
        sleep 1
    done
    E_T0=$(xt_uptime)
    xl destroy "$VN"
    xt_mark "xl destroy $VN ($V) done in $(d_since "$E_T0")s"

    e_died e-dom0-read-fails "$h_read"
    e_died e-dom0-write-fails "$h_write"
    xt_wait_pid $vpid 30
    rc=$?
    secs=$(d_since "$E_T0")
    if [ $rc != 0 ] && [ $rc != 124 ] && grep -q 'is gone\|peer closed' /tmp/e.log; then
        xt_result e-vchan-peer-destroyed PASS "idcfs vchan in dom0 ended (exit $rc) ${secs}s after xl destroy"
    else
        xt_result e-vchan-peer-destroyed FAIL "exit $rc after ${secs}s"
        xt_show e-vchan /tmp/e.log
    fi
    i=0
    while d_run 0 10 "ls $IDC/links" && grep -qx "$V" /tmp/xt-du.out; do
        i=$((i + 1)); [ $i -gt 20 ] && break; sleep 1
    done
    if grep -qx "$V" /tmp/xt-du.out; then
        xt_result e-dom0-link-gone FAIL "links/$V still listed in dom0 $(d_since "$E_T0")s after xl destroy"
    else
        xt_result e-dom0-link-gone PASS "links/$V gone from dom0's links/ $(d_since "$E_T0")s after xl destroy"
    fi

    if [ -n "$S" ]; then
        e_died e-domu1-read-fails "$h_sread"
        touch /tmp/e-after
        if d_wait "$h_keep" 60 && [ "$(cat /tmp/xt-du.out)" = "before after" ]; then
            xt_result e-other-link-conn-survives PASS "a dom0<->domu1 connection opened before the destroy still echoes after it"
        else
            xt_result e-other-link-conn-survives FAIL "the dom0<->domu1 connection across the destroy"
            d_show e-other-link-conn-survives dom0
            d_wait "$h_secho" 5
            d_show e-other-link-conn-survives domu1
            d_daemon_log e-other-link-conn-survives 0 "$S"
        fi
        d_echo e-other-link-echo-dom0-to-domu1 "$S" 0 8011
        d_echo e-other-link-echo-domu1-to-dom0 0 "$S" 8012
    else
        xt_result e-other-link SKIP "one domU only (DOMUS=1): no other link to watch across the destroy"
    fi

    # A fresh domain after the destroy.
    if ! xt_start_domu domu3; then
        xt_result e-fresh-domain FAIL "xl create domu3 after the destroy"
        return
    fi
    D3=$XT_NEWDOM
    if ! d_prepare $S $D3; then
        xt_result e-fresh-domain FAIL "set-up of domain $D3"
        return
    fi
    xt_result e-fresh-domain PASS "domu3 = domain $D3 created, set up and mounted after the destroy"
    # Dom0 serves the link to domu3 (the lower id serves). With gntalloc's
    # default limit of 1024 pages and its 1 MiB link to domu1 (513 pages),
    # another 1 MiB ring pair does not fit: the daemon must fall back to
    # smaller rings. The limit is writable at run time. The echo brings the
    # link to domu1 up again if its idle time (30 s) ran out while domu3
    # booted; the link to domu3 follows within seconds.
    _lim=/sys/module/xen_gntalloc/parameters/limit
    _oldlim=$(cat $_lim 2>/dev/null)
    if [ -n "$S" ]; then
        d_echo e-fresh-link-dom0-to-domu1 "$S" 0 8019
        echo 1024 >$_lim
    fi
    if ! e_fresh "" 8020; then
        # Diagnosis: who may read the daemon keys. idcfs setup sets the
        # permissions of idcfs/ but not of the daemon key a running daemon
        # created under it, which keeps the readers of its creation time.
        for x in 0 $S $D3; do
            echo "e-fresh | /local/domain/$x/idcfs: $(xenstore-ls -p "/local/domain/$x/idcfs" 2>&1 | tr '\n' ' ' | tail -c 400)"
        done
        # The same with the daemon keys readable by the new domain, as
        # setup leaves idcfs/ itself: tells a permission problem apart from
        # anything else.
        for x in 0 $S; do
            xenstore-chmod "/local/domain/$x/idcfs/daemon" "n$x" $(for y in 0 $S $D3; do [ "$y" != "$x" ] && echo "r$y"; done)
        done
        e_fresh -after-chmod-daemon 8030
    fi
    d_links e-links-dom0 0
    if [ -n "$S" ]; then
        _ring=$(sed -n 's/.*read_ring \([0-9]*\).*/\1/p' $IDC/links/$D3 2>/dev/null)
        if [ -n "$_ring" ] && [ "$_ring" -lt 1048576 ] && [ "$_ring" -ge 4096 ] &&
            grep -q 'trying a smaller one' /tmp/idcfs-mount.log; then
            xt_result e-ring-fallback PASS "gntalloc limit 1024 in dom0: the link to domain $D3 came up with ${_ring}-byte rings (1 MiB asked), fallback logged"
        else
            xt_result e-ring-fallback FAIL "gntalloc limit 1024 in dom0: link to domain $D3 read_ring '${_ring}', want 4096..524288 and a fallback warning"
            grep -E 'smaller one|cannot share' /tmp/idcfs-mount.log | tail -n 5
        fi
        e_refusal
        [ -n "$_oldlim" ] && echo "$_oldlim" >$_lim
    else
        xt_result e-ring-fallback SKIP "one domU only (DOMUS=1): dom0's ring pages fit the default limit"
    fi
}

# e_refusal: once the link between dom0 and domu3 went idle, dom0 gets a
# gntalloc limit below what it already shares (its link to domu1), so it
# cannot share a single page: a connect from domu3 must fail at once with
# "No route to host" (dom0 refuses in Xenstore rather than leaving domu3 to
# time out), and so must one from dom0.
e_refusal() {
    _w=0
    while [ -e "$IDC/links/$D3" ] && [ $_w -lt 90 ]; do sleep 1; _w=$((_w + 1)); done
    if [ -e "$IDC/links/$D3" ]; then
        xt_result e-ring-refusal FAIL "the link from dom0 to domain $D3 did not go idle in 90 s"
        return
    fi
    echo 1 >$_lim
    d_run "$D3" 60 "t0=\$(xt_uptime)
        if echo x >$IDC/connect/0/8041; then echo XT-R=connected; else echo XT-R=\$?; fi
        echo XT-T0=\$t0 XT-T1=\$(xt_uptime)"
    _t0=$(sed -n 's/.*XT-T0=\([0-9.]*\).*/\1/p' /tmp/xt-du.out)
    _t1=$(sed -n 's/.*XT-T1=\([0-9.]*\).*/\1/p' /tmp/xt-du.out)
    _s=$(awk -v a="$_t0" -v b="$_t1" 'BEGIN{printf "%.1f", b-a}')
    _t=$(xt_uptime)
    _out0=$( (echo x >$IDC/connect/$D3/8042) 2>&1)
    _s0=$(d_since "$_t")
    if grep -q 'connect/0/8041: No route to host' /tmp/xt-du.out && ! grep -q XT-R=connected /tmp/xt-du.out &&
        awk -v s="$_s" 'BEGIN{exit !(s < 3)}' && echo "$_out0" | grep -q 'No route to host' &&
        grep -q 'cannot share a ring' /tmp/idcfs-mount.log; then
        xt_result e-ring-refusal PASS "gntalloc limit 1 in dom0: 'No route to host' in domain $D3 after ${_s}s (refused, not timed out) and in dom0 after ${_s0}s"
    else
        xt_result e-ring-refusal FAIL "gntalloc limit 1 in dom0: domain $D3 ${_s}s, dom0 '${_out0}' ${_s0}s"
        d_show e-ring-refusal domu3
        d_run "$D3" 20 "grep -E 'refused|dial failed' /tmp/idcfs-mount.log | tail -n 3"
        d_show e-ring-refusal domu3-log
    fi
}
