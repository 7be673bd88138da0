#!/usr/bin/env bash
# test/xen/run.sh: run idcfs on real Xen, booted under QEMU's software
# emulation (TCG): Xen 4.17 with a PV dom0 and two PV domUs, all from
# Debian's packages, every root file system an initramfs. The scenarios run
# inside (test/xen/guest/scenarios.sh) and report through the serial
# console; this script prints their results and exits.
#
# Usage: test/xen/run.sh
#
# Settings (environment):
#   SCENARIOS=abcde  scenarios to run, by letter: a devices + idcfs<->idcfs,
#                    b C libxenvchan interop, c Xenstore client suite,
#                    d the daemon, e peer death; diagnostics: p raw vchan
#                    between the two domUs, m memory check of every domain
#   XT_MB=16         MiB moved by each bulk transfer
#   DOMUS=2          domUs to start (1: the scenarios that need domu2 skip)
#   TIMEOUT=900      wall-clock limit in seconds; QEMU is killed after it
#   OUT=test/xen/out binaries, images and logs (git-ignored)
#   SMP=2 QEMU_MEM=2048 DOM0_MEM=768M QEMU_CPU=qemu64
#   DOMU_MEM=256     MiB of each domU
#   QEMU_ACCEL=tcg,thread=multi   (tcg,thread=single: one host thread)
#   REBUILD=0        1: rebuild the images even if the inputs did not change
#   IDCFS_BIN=       a static idcfs to use instead of building ./cmd/idcfs
#   INTERACTIVE=1    serial console on this terminal and a dom0 shell after
#                    the scenarios (Ctrl-a x quits QEMU)
#
# Exit status: 0 every scenario run passed; 1 a scenario failed;
# 2 the environment could not be built, Xen did not boot, or time ran out.
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
OUT=$(realpath -m "${OUT:-$HERE/out}")
SCENARIOS=${SCENARIOS:-abcde}
XT_MB=${XT_MB:-16}
DOMUS=${DOMUS:-2}
TIMEOUT=${TIMEOUT:-900}
SMP=${SMP:-2}
QEMU_MEM=${QEMU_MEM:-2048}
DOM0_MEM=${DOM0_MEM:-768M}
DOMU_MEM=${DOMU_MEM:-256}
QEMU_ACCEL=${QEMU_ACCEL:-tcg,thread=multi}
INTERACTIVE=${INTERACTIVE:-0}
# qemu64, QEMU's plain 64-bit model: with -cpu max (even without SMAP,
# SMEP and FSGSBASE, with which the PV dom0 dies on its first page fault or
# processes crash on loads through %fs), guest memory was corrupted as
# soon as two domUs exchanged data (docs/xen.md); with qemu64 it was not.
QEMU_CPU=${QEMU_CPU:-qemu64}

XENVER=4.17
XENBIN=/usr/lib/xen-$XENVER/bin
PACKAGES="qemu-system-x86 xen-hypervisor-$XENVER-amd64 xen-utils-$XENVER xenstore-utils linux-image-amd64 busybox-static cpio gzip"

say() { echo "xen-test: $*"; }
fail_env() { say "$*"; exit 2; }

# --- host packages --------------------------------------------------------
have_packages() {
    command -v qemu-system-x86_64 >/dev/null &&
        ls /boot/xen-$XENVER-amd64.gz >/dev/null 2>&1 &&
        ls /boot/vmlinuz-* >/dev/null 2>&1 &&
        [ -x "$XENBIN/xl" ] && [ -x "$XENBIN/xenstored" ] && [ -x "$XENBIN/vchan-socket-proxy" ] &&
        [ -x /usr/bin/xenstore ] && [ -x /bin/busybox ] && command -v cpio >/dev/null
}
if ! have_packages; then
    say "installing $PACKAGES"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q >/dev/null && apt-get install -y -q --no-install-recommends $PACKAGES >/dev/null ||
        fail_env "apt-get install failed"
    have_packages || fail_env "packages installed, but a tool is still missing"
fi

# --- static binaries --------------------------------------------------------
GO=$(command -v go || echo /usr/local/go/bin/go)
[ -x "$GO" ] || fail_env "no Go toolchain (looked in PATH and /usr/local/go/bin)"
mkdir -p "$OUT/bin"
say "building static idcfs and test binaries"
(
    cd "$ROOT"
    export CGO_ENABLED=0
    if [ -n "${IDCFS_BIN:-}" ]; then
        file -L "$IDCFS_BIN" | grep -q 'statically linked' || { echo "$IDCFS_BIN is not static"; exit 1; }
        install -m 0755 "$IDCFS_BIN" "$OUT/bin/idcfs"
    else
        "$GO" build -trimpath -o "$OUT/bin/idcfs" ./cmd/idcfs
    fi
    "$GO" test -c -trimpath -o "$OUT/bin/xen.test" ./vchan/xen
    "$GO" test -c -trimpath -o "$OUT/bin/xenstore.test" ./linkmgr/xenstore
) || fail_env "go build failed"

# --- boot images ------------------------------------------------------------
KVER=$(basename "$(ls /boot/vmlinuz-* | sort -V | tail -n 1)")
KVER=${KVER#vmlinuz-}
MODDIR=/lib/modules/$KVER
IMG=$OUT/img
STAGE=$OUT/stage

# put_bin ROOT SRC [DEST]: a program and the shared libraries it loads.
put_bin() {
    local root=$1 src=$2 dest=${3:-$2} lib
    install -D -m 0755 "$(readlink -f "$src")" "$root$dest"
    for lib in $(ldd "$src" 2>/dev/null | grep -o '/[^ )]*'); do
        [ -e "$root$lib" ] || install -D -m 0755 "$(readlink -f "$lib")" "$root$lib"
    done
}

# put_base ROOT: busybox with its applets, directories, and the glibc
# helper library that xl needs at run time (loaded with dlopen, so ldd
# does not list it).
put_base() {
    local root=$1 applet gcc_s
    install -D -m 0755 /bin/busybox "$root/bin/busybox"
    for applet in $(/bin/busybox --list-full); do
        [ -e "$root/$applet" ] || { mkdir -p "$root/$(dirname "$applet")"; ln -s /bin/busybox "$root/$applet"; }
    done
    mkdir -p "$root"/{proc,sys,dev,run,tmp,etc,root,var/log,xt/bin,lib/modules}
    ln -sfn /run "$root/var/run"
    gcc_s=$(ldconfig -p | awk '!f && /libgcc_s\.so\.1 .*x86-64/ {print $NF; f = 1}') # reads to the end: no SIGPIPE under pipefail
    [ -n "$gcc_s" ] && install -D -m 0644 "$(readlink -f "$gcc_s")" "$root$gcc_s"
}

# put_modules ROOT MODULE...: kernel modules, uncompressed, by name.
put_modules() {
    local root=$1 m f
    shift
    for m in "$@"; do
        f=$(find "$MODDIR" -name "$m.ko*" | head -n 1)
        [ -n "$f" ] || fail_env "module $m not in $MODDIR"
        case $f in
            *.ko) cp "$f" "$root/lib/modules/$m.ko" ;;
            *.ko.xz) xz -dc "$f" >"$root/lib/modules/$m.ko" ;;
            *.ko.zst) zstd -qdc "$f" >"$root/lib/modules/$m.ko" ;;
            *) fail_env "cannot unpack $f" ;;
        esac
    done
}

# put_common ROOT: what both kinds of guest need.
put_common() {
    local root=$1 n
    put_base "$root"
    put_bin "$root" /usr/bin/xenstore
    for n in read write exists rm ls list chmod watch; do ln -sf xenstore "$root/usr/bin/xenstore-$n"; done
    put_bin "$root" "$XENBIN/vchan-socket-proxy" /usr/bin/vchan-socket-proxy
    install -m 0755 "$OUT/bin/idcfs" "$OUT/bin/xen.test" "$root/xt/bin/"
    install -m 0644 "$HERE/guest/common.sh" "$root/xt/common.sh"
}

mkcpio() { (cd "$1" && find . | LC_ALL=C sort | cpio -o -H newc --quiet) | gzip -1 >"$2"; }

# The images depend on the binaries, the guest scripts and this file.
stamp=$(cat "$OUT/bin/idcfs" "$OUT/bin/xen.test" "$OUT/bin/xenstore.test" "$HERE"/guest/* "$0" |
    sha256sum | cut -c1-16)-$KVER
if [ "${REBUILD:-0}" = 1 ] || [ "$(cat "$IMG/stamp" 2>/dev/null)" != "$stamp" ]; then
    say "building boot images in $IMG"
    rm -rf "$STAGE" "$IMG"
    mkdir -p "$STAGE" "$IMG"
    zcat "/boot/xen-$XENVER-amd64.gz" >"$IMG/xen" # QEMU's multiboot loader wants the plain ELF
    cp "/boot/vmlinuz-$KVER" "$IMG/vmlinuz"

    du=$STAGE/domU
    put_common "$du"
    put_modules "$du" xen-evtchn xen-gntdev xen-gntalloc xen-privcmd fuse
    install -m 0755 "$HERE/guest/domu-init" "$du/init"
    mkcpio "$du" "$IMG/domU.cpio.gz"

    d0=$STAGE/dom0
    put_common "$d0"
    put_modules "$d0" xen-evtchn xen-gntdev xen-gntalloc xen-privcmd xenfs fuse
    for b in xl xenstored xenconsoled xen-init-dom0 libxl-save-helper; do
        put_bin "$d0" "$XENBIN/$b"
    done
    install -m 0755 "$OUT/bin/xenstore.test" "$d0/xt/bin/"
    install -m 0644 "$HERE/guest/scenarios.sh" "$d0/xt/scenarios.sh"
    [ -f "$HERE/guest/scenario-d.sh" ] && install -m 0644 "$HERE/guest/scenario-d.sh" "$d0/xt/scenario-d.sh"
    install -m 0755 "$HERE/guest/dom0-init" "$d0/init"
    mkdir -p "$d0/etc/xen" "$d0/boot"
    cp /etc/xen/xl.conf "$d0/etc/xen/" 2>/dev/null || true
    cp "/boot/vmlinuz-$KVER" "$d0/boot/vmlinuz-domU"
    cp "$IMG/domU.cpio.gz" "$d0/boot/domU.cpio.gz"
    mkcpio "$d0" "$IMG/dom0.cpio.gz"
    rm -rf "$STAGE"
    echo "$stamp" >"$IMG/stamp"
fi

# --- boot --------------------------------------------------------------------
# bootscrub=0: with Xen's default background scrubbing of free memory,
# guests under TCG saw pages in use turn to zeros (random crashes, corrupt
# files).
XEN_ARGS="console=com1 com1=115200,8n1 dom0_mem=$DOM0_MEM,max:$DOM0_MEM dom0_max_vcpus=1 bootscrub=0 loglvl=all guest_loglvl=all noreboot"
DOM0_ARGS="console=hvc0 earlyprintk=xen xt_scen=$SCENARIOS xt_mb=$XT_MB xt_domus=$DOMUS xt_domu_mem=$DOMU_MEM xt_timeout=$((TIMEOUT - 30))"
case $SCENARIOS in *,*) fail_env "SCENARIOS is a string of letters, e.g. abc" ;; esac
QEMU=(qemu-system-x86_64 -accel "$QEMU_ACCEL" -cpu "$QEMU_CPU" -smp "$SMP" -m "$QEMU_MEM" -no-reboot
    -kernel "$IMG/xen" -append "$XEN_ARGS")

if [ "$INTERACTIVE" = 1 ]; then
    exec "${QEMU[@]}" -nographic -initrd "$IMG/vmlinuz $DOM0_ARGS xt_shell=1,$IMG/dom0.cpio.gz"
fi

LOG=$OUT/serial.log
: >"$LOG"
start=$(date +%s.%N)
elapsed() { awk -v s="$start" -v n="$(date +%s.%N)" 'BEGIN { printf "%.1f", n - s }'; }

"${QEMU[@]}" -display none -monitor none -serial "file:$LOG" \
    -initrd "$IMG/vmlinuz $DOM0_ARGS,$IMG/dom0.cpio.gz" </dev/null >"$OUT/qemu.out" 2>&1 &
QPID=$!
stop_qemu() {
    local i
    for i in $(seq 1 "${1:-0}"); do kill -0 "$QPID" 2>/dev/null || break; sleep 1; done
    if kill -0 "$QPID" 2>/dev/null; then
        kill "$QPID" 2>/dev/null || true
        sleep 2
        kill -9 "$QPID" 2>/dev/null || true
    fi
    wait "$QPID" 2>/dev/null || true
}
trap 'stop_qemu 0' EXIT
trap 'say "interrupted"; exit 2' INT TERM
say "QEMU pid $QPID, serial log $LOG, timeout ${TIMEOUT}s"

PATTERN='XT-(MARK|RESULT|FIGURE|DONE|ABORT|WARN)|Hardware Dom0 crashed|Kernel panic'
seen=0
outcome=
while :; do
    n=$(grep -a -c -E "$PATTERN" "$LOG" || true)
    if [ "$n" -gt "$seen" ]; then
        grep -a -E "$PATTERN" "$LOG" | tail -n "+$((seen + 1))" | tr -d '\r' |
            while IFS= read -r line; do echo "[+$(elapsed)s] ${line#*XT-}"; done
        seen=$n
    fi
    if grep -a -q 'XT-DONE' "$LOG"; then outcome=done; break; fi
    if grep -a -q -E 'XT-ABORT|Hardware Dom0 crashed|Kernel panic' "$LOG"; then outcome=abort; break; fi
    if ! kill -0 "$QPID" 2>/dev/null; then outcome=exited; break; fi
    if awk -v s="$start" -v n="$(date +%s.%N)" -v t="$TIMEOUT" 'BEGIN { exit !(n - s > t) }'; then
        outcome=timeout
        break
    fi
    sleep 1
done
stop_qemu 30 # dom0 powers off by itself after XT-DONE
total=$(elapsed)

pass=$(grep -a -c 'XT-RESULT [^ ]* PASS' "$LOG" || true)
failed=$(grep -a -c 'XT-RESULT [^ ]* FAIL' "$LOG" || true)
skipped=$(grep -a -c 'XT-RESULT [^ ]* SKIP' "$LOG" || true)
case $outcome in
    done)
        if [ "$failed" = 0 ] && [ "$pass" -gt 0 ]; then
            say "PASS: $pass passed, $skipped skipped, wall ${total}s"
            exit 0
        fi
        say "FAIL: $pass passed, $failed failed, $skipped skipped, wall ${total}s (log: $LOG)"
        exit 1
        ;;
    abort) say "FAIL: boot or set-up aborted after ${total}s; last lines of $LOG:" ;;
    exited) say "FAIL: QEMU exited without a result after ${total}s; last lines of $LOG:" ;;
    timeout) say "FAIL: no result within ${TIMEOUT}s; last lines of $LOG:" ;;
esac
tail -n 40 "$LOG" | tr -d '\r'
exit 2
