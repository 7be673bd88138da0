package xen

import (
	"context"
	"errors"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"idcfs/vchan"
	"idcfs/vchan/xen/internal/xendev"
)

// fakeDir returns a directory whose evtchn, gntalloc and gntdev are
// symlinks to /dev/null (names listed in present): opening works, every
// ioctl fails with ENOTTY.
func fakeDir(t *testing.T, present ...string) string {
	t.Helper()
	dir := t.TempDir()
	for _, n := range present {
		if err := os.Symlink(os.DevNull, filepath.Join(dir, n)); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func openFDs(t *testing.T) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Skipf("cannot count open files: %v", err)
	}
	return len(ents)
}

func TestOpenNamesMissingDevice(t *testing.T) {
	for _, tc := range []struct {
		present []string
		missing string
	}{
		{nil, "evtchn"},
		{[]string{"evtchn"}, "gntalloc"},
		{[]string{"evtchn", "gntalloc"}, "gntdev"},
	} {
		t.Run(tc.missing, func(t *testing.T) {
			before := openFDs(t)
			b, err := openDir(fakeDir(t, tc.present...))
			if err == nil {
				b.Close()
				t.Fatal("openDir succeeded")
			}
			var de *DeviceError
			if !errors.As(err, &de) || filepath.Base(de.Path) != tc.missing || !errors.Is(err, fs.ErrNotExist) {
				t.Errorf("error %q (%T) does not name missing %s", err, err, tc.missing)
			}
			if !strings.Contains(err.Error(), "xen-"+tc.missing) {
				t.Errorf("error %q does not name the module xen-%s", err, tc.missing)
			}
			if after := openFDs(t); after != before {
				t.Errorf("%d files open before, %d after", before, after)
			}
		})
	}
}

func openFake(t *testing.T) *Backend {
	t.Helper()
	b, err := openDir(fakeDir(t, "evtchn", "gntalloc", "gntdev"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := b.Close(); err != nil {
			t.Error(err)
		}
	})
	return b
}

func TestArgumentValidation(t *testing.T) {
	b := openFake(t)
	for _, tc := range []struct {
		name string
		call func() error
	}{
		{"share reserved domain", func() error { _, err := b.Share(0x7ff0, 1); return err }},
		{"share 0 pages", func() error { _, err := b.Share(1, 0); return err }},
		{"share negative pages", func() error { _, err := b.Share(1, -1); return err }},
		{"share too many pages", func() error { _, err := b.Share(1, MaxSharePages+1); return err }},
		{"map reserved domain", func() error { _, err := b.Map(0xffff, []uint32{8}, true); return err }},
		{"map no refs", func() error { _, err := b.Map(1, nil, true); return err }},
		{"map ref 0", func() error { _, err := b.Map(1, []uint32{8, 0}, true); return err }},
		{"map too many", func() error { _, err := b.Map(1, make([]uint32, MaxMapPages+1), true); return err }},
		{"alloc unbound reserved domain", func() error { _, err := b.AllocUnbound(0x7ff1); return err }},
		{"bind reserved domain", func() error { _, err := b.Bind(0x7ff2, 5); return err }},
		{"bind port 0", func() error { _, err := b.Bind(1, 0); return err }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := tc.call(); !errors.Is(err, ErrInvalid) {
				t.Errorf("got %v, want ErrInvalid", err)
			}
		})
	}
}

// With devices that refuse every ioctl, each call must fail with the
// kernel's error and leave no file open.
func TestKernelErrorsReleaseEverything(t *testing.T) {
	b := openFake(t)
	for _, tc := range []struct {
		name string
		op   string
		call func() error
	}{
		{"share", "gntalloc ALLOC_GREF", func() error { _, err := b.Share(1, 2); return err }},
		{"map", "gntdev MAP_GRANT_REF", func() error { _, err := b.Map(1, []uint32{8, 9}, true); return err }},
		{"alloc unbound", "evtchn BIND_UNBOUND_PORT", func() error { _, err := b.AllocUnbound(1); return err }},
		{"bind", "evtchn BIND_INTERDOMAIN", func() error { _, err := b.Bind(1, 5); return err }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := openFDs(t)
			err := tc.call()
			var oe *OpError
			if !errors.As(err, &oe) || oe.Op != tc.op || oe.Peer != 1 || !errors.Is(err, unix.ENOTTY) {
				t.Errorf("got %v, want an OpError %q wrapping ENOTTY", err, tc.op)
			}
			if after := openFDs(t); after != before {
				t.Errorf("%d files open before, %d after", before, after)
			}
		})
	}
}

// socketChannel is an eventChannel whose file is one end of a socket pair:
// the test writes port numbers into the other end as the evtchn driver
// would, and reads the unmask writes back from it.
func socketChannel(t *testing.T, port uint32) (*eventChannel, *os.File) {
	t.Helper()
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	f := os.NewFile(uintptr(fds[0]), "evtchn-fake")
	rc, err := f.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	if err := unix.SetNonblock(fds[1], false); err != nil {
		t.Fatal(err)
	}
	peer := os.NewFile(uintptr(fds[1]), "evtchn-driver")
	t.Cleanup(func() { peer.Close(); f.Close() })
	return &eventChannel{dev: &device{path: "fake", f: f, rc: rc}, peer: 1, port: port}, peer
}

func TestWaitReadsAndUnmasks(t *testing.T) {
	c, drv := socketChannel(t, 42)
	if _, err := drv.Write(xendev.PortsBytes(42)); err != nil {
		t.Fatal(err)
	}
	if err := c.Wait(context.Background()); err != nil {
		t.Fatalf("Wait: %v", err)
	}
	got := make([]byte, 4)
	if _, err := drv.Read(got); err != nil {
		t.Fatal(err)
	}
	if ps := xendev.ParsePorts(got); ps[0] != 42 {
		t.Errorf("unmasked port %d, want 42", ps[0])
	}
}

func TestWaitHonoursContext(t *testing.T) {
	c, drv := socketChannel(t, 7)
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	start := time.Now()
	if err := c.Wait(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Wait = %v, want context.DeadlineExceeded", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("Wait took %v after its context ended", d)
	}
	if err := c.Wait(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Wait on a done context = %v", err)
	}
	// The read deadline the cancelled Wait left must not break the next.
	if _, err := drv.Write(xendev.PortsBytes(7)); err != nil {
		t.Fatal(err)
	}
	if err := c.Wait(context.Background()); err != nil {
		t.Errorf("Wait after a cancelled Wait: %v", err)
	}
}

func TestCloseWakesWait(t *testing.T) {
	c, _ := socketChannel(t, 7)
	errc := make(chan error, 1)
	go func() { errc <- c.Wait(context.Background()) }()
	time.Sleep(20 * time.Millisecond) // let Wait block on the poller
	if err := c.Close(); !errors.Is(err, unix.ENOTTY) {
		t.Errorf("Close = %v, want the UNBIND error ENOTTY of the fake", err)
	}
	select {
	case err := <-errc:
		if !errors.Is(err, net.ErrClosed) {
			t.Errorf("Wait = %v, want net.ErrClosed", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Close did not wake Wait")
	}
	if err := c.Close(); err != nil {
		t.Errorf("second Close = %v", err)
	}
	if err := c.Notify(); !errors.Is(err, net.ErrClosed) {
		t.Errorf("Notify after Close = %v", err)
	}
	if err := c.Wait(context.Background()); !errors.Is(err, net.ErrClosed) {
		t.Errorf("Wait after Close = %v", err)
	}
}

type otherChannel struct{ vchan.EventChannel }

func TestSetUnmapNotifyValidation(t *testing.T) {
	b := openFake(t)
	open, _ := socketChannel(t, 3)
	closed, _ := socketChannel(t, 4)
	closed.Close()
	mem := make([]byte, vchan.PageSize)
	for _, tc := range []struct {
		name     string
		m        *mapping
		offset   int
		ch       vchan.EventChannel
		want     error
		wantErrn syscall.Errno
	}{
		{"foreign channel", &mapping{dev: b.gntdev, mem: mem, writable: true}, 20, otherChannel{}, ErrForeignChannel, 0},
		{"nil channel", &mapping{dev: b.gntdev, mem: mem, writable: true}, 20, nil, ErrForeignChannel, 0},
		{"negative offset", &mapping{dev: b.gntdev, mem: mem, writable: true}, -1, open, ErrInvalid, 0},
		{"offset past end", &mapping{dev: b.gntdev, mem: mem, writable: true}, vchan.PageSize, open, ErrInvalid, 0},
		{"read-only", &mapping{dev: b.gntdev, mem: mem}, 20, open, ErrInvalid, 0},
		{"closed channel", &mapping{dev: b.gntdev, mem: mem, writable: true}, 20, closed, net.ErrClosed, 0},
		{"closed mapping", &mapping{dev: b.gntdev, mem: mem, writable: true, closed: true}, 20, open, net.ErrClosed, 0},
		{"already set", &mapping{dev: b.gntdev, mem: mem, writable: true, notifySet: true}, 20, open, ErrNotifySet, 0},
		{"gntdev kernel", &mapping{dev: b.gntdev, mem: mem, writable: true}, 20, open, nil, unix.ENOTTY},
		{"gntalloc kernel", &mapping{dev: b.gntalloc, shared: true, mem: mem, writable: true}, 21, open, nil, unix.ENOTTY},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.m.SetUnmapNotify(tc.offset, tc.ch)
			switch {
			case tc.want != nil && !errors.Is(err, tc.want):
				t.Errorf("got %v, want %v", err, tc.want)
			case tc.wantErrn != 0 && !errors.Is(err, tc.wantErrn):
				t.Errorf("got %v, want %v", err, tc.wantErrn)
			case tc.m.notifySet && tc.name != "already set":
				t.Errorf("notify recorded as set after %v", err)
			}
		})
	}
}
