# Shell helpers shared by the dom0 and domU images of test/xen (busybox sh).
# Every line the host looks for starts with "XT-".

xt_uptime() { cut -d' ' -f1 /proc/uptime; }

# xt_mark TEXT: a progress line on the console.
xt_mark() { echo "XT-MARK $* t=$(xt_uptime)"; }

# xt_arg NAME DEFAULT: value of NAME=... on the kernel command line.
xt_arg() {
    for a in $(cat /proc/cmdline); do
        case $a in "$1="*) echo "${a#*=}"; return ;; esac
    done
    echo "$2"
}

# xt_insmod MODULE...: load Debian's xen and fuse modules (no dependencies
# between them, so busybox insmod does).
# xen-gntalloc gets limit=8192: its default, 1024 pages per domain, holds
# one link with the daemon's 1 MiB rings (513 pages); further links would
# fall back to smaller rings. The raised limit keeps every link at full size
# in the scenarios; scenario e sets the default back to check the fallback.
xt_insmod() {
    for m in "$@"; do
        p=
        [ "$m" = xen-gntalloc ] && p=limit=8192
        insmod "/lib/modules/$m.ko" $p || echo "XT-WARN insmod $m failed"
    done
}

# xt_base_mounts: the file systems every image needs.
xt_base_mounts() {
    mount -t proc proc /proc
    mount -t sysfs sysfs /sys
    mount -t devtmpfs devtmpfs /dev
    mkdir -p /dev/pts /dev/shm
    mount -t devpts devpts /dev/pts
    mount -t tmpfs tmpfs /run
    mount -t tmpfs tmpfs /tmp
}

# xt_make_data MIB: /tmp/xt-data, MIB MiB of random bytes, and
# /tmp/xt-small, its first XT_SMALL_MB (at most MIB) MiB for transfers over
# libxenvchan's 1 and 2 KiB default rings, which cost an event round trip
# per KiB.
XT_SMALL_MB=4
xt_make_data() {
    dd if=/dev/urandom of=/tmp/xt-data bs=1048576 count="$1" 2>/dev/null
    [ "$1" -lt "$XT_SMALL_MB" ] && XT_SMALL_MB=$1
    dd if=/tmp/xt-data of=/tmp/xt-small bs=1048576 count="$XT_SMALL_MB" 2>/dev/null
}

# xt_sha FILE: the sha256 of FILE, hex only.
xt_sha() { sha256sum "$1" | cut -d' ' -f1; }

# --- the idcfs mount (/idc) -------------------------------------------------

# xt_wait_mount SECONDS: wait until /idc/self answers.
xt_wait_mount() {
    _i=0
    until [ -e /idc/self ]; do
        _i=$((_i + 1)); [ $_i -gt $(($1 * 5)) ] && return 1; sleep 0.2
    done
}

# xt_wait_bound PORT SECONDS: wait until /idc/listen lists PORT.
xt_wait_bound() {
    _i=0
    until ls /idc/listen 2>/dev/null | grep -qx "$1"; do
        _i=$((_i + 1)); [ $_i -gt $(($2 * 5)) ] && return 1; sleep 0.2
    done
}

# xt_conn_id ADDR: the id of the connection this shell ($$) opened with
# ADDR ("remote dom(1):7000" for a connect, "local dom(1):7000" for an
# accept), as in docs/files.md.
xt_conn_id() {
    for _s in /idc/conn/*/status; do
        if grep -qx "pid $$" "$_s" && grep -qxF "$1" "$_s"; then
            _s=${_s#/idc/conn/}; echo "${_s%/status}"; return 0
        fi
    done
    return 1
}
