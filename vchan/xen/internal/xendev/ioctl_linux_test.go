package xendev

import (
	"errors"
	"os"
	"testing"

	"golang.org/x/sys/unix"
)

func TestIoctlArgumentChecks(t *testing.T) {
	f, err := os.Open(os.DevNull)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	rc, err := f.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	run := func(fn func(fd uintptr) error) (err error) {
		if cerr := rc.Control(func(fd uintptr) { err = fn(fd) }); cerr != nil {
			t.Fatal(cerr)
		}
		return err
	}
	for _, tc := range []struct {
		name   string
		fn     func(fd uintptr) error
		kernel bool // reaches the kernel, which answers ENOTTY for /dev/null
	}{
		{"alloc 0 pages", func(fd uintptr) error { _, _, err := AllocGref(fd, 1, true, 0); return err }, false},
		{"alloc too many", func(fd uintptr) error { _, _, err := AllocGref(fd, 1, true, MaxGntallocPages+1); return err }, false},
		{"map no refs", func(fd uintptr) error { _, err := MapGrantRef(fd, 1, nil); return err }, false},
		{"short argument", func(fd uintptr) error { _, err := ioctl(fd, GntallocAllocGref, make([]byte, 20)); return err }, false},
		{"alloc 1 page", func(fd uintptr) error { _, _, err := AllocGref(fd, 1, true, 1); return err }, true},
		{"map 1 ref", func(fd uintptr) error { _, err := MapGrantRef(fd, 1, []uint32{8}); return err }, true},
		{"notify", func(fd uintptr) error { return Notify(fd, 3) }, true},
		{"reset", func(fd uintptr) error { return Reset(fd) }, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := run(tc.fn)
			var errno unix.Errno
			switch {
			case err == nil:
				t.Fatal("no error")
			case tc.kernel && !errors.Is(err, unix.ENOTTY):
				t.Errorf("got %v, want ENOTTY from the kernel", err)
			case !tc.kernel && errors.As(err, &errno):
				t.Errorf("got %v from the kernel, want the call rejected before it", err)
			}
		})
	}
}
