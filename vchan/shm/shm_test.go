//go:build linux

package shm

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"idcfs/vchan"
)

// hostDir returns a fresh host directory, on tmpfs when there is one so that
// page writes never reach a disk.
func hostDir(t testing.TB) string {
	t.Helper()
	if st, err := os.Stat("/dev/shm"); err == nil && st.IsDir() {
		d, err := os.MkdirTemp("/dev/shm", "shmtest-")
		if err == nil {
			t.Cleanup(func() { os.RemoveAll(d) })
			return d
		}
	}
	return t.TempDir()
}

// portAndPage allocates, in domain 1 of the host in dir, an unbound port
// and a one-page grant for domain 2; both are closed when the test ends.
func portAndPage(t *testing.T, dir string) (vchan.EventChannel, vchan.Mapping) {
	t.Helper()
	srv := openDom(t, dir, 1)
	s, err := srv.AllocUnbound(2)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	sh, err := srv.Share(2, 1)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sh.Close() })
	return s, sh
}

func openDom(t testing.TB, dir string, dom vchan.DomID) *Backend {
	t.Helper()
	b, err := Open(dir, dom)
	if err != nil {
		t.Fatalf("Open(%d): %v", dom, err)
	}
	t.Cleanup(func() { b.Close() })
	return b
}

func TestShareMapSameBytesBothWays(t *testing.T) {
	dir := hostDir(t)
	srv, cli := openDom(t, dir, 1), openDom(t, dir, 2)

	sh, err := srv.Share(2, 3)
	if err != nil {
		t.Fatal(err)
	}
	defer sh.Close()
	if len(sh.Bytes()) != 3*vchan.PageSize || len(sh.Refs()) != 3 {
		t.Fatalf("share: %d bytes, %d refs", len(sh.Bytes()), len(sh.Refs()))
	}
	if !bytes.Equal(sh.Bytes(), make([]byte, 3*vchan.PageSize)) {
		t.Fatal("shared pages are not zeroed")
	}
	mp, err := cli.Map(1, sh.Refs(), true)
	if err != nil {
		t.Fatal(err)
	}
	defer mp.Close()

	s, m := sh.Bytes(), mp.Bytes()
	for i := range 3 {
		s[i*vchan.PageSize+7] = byte(0x10 + i)
		m[i*vchan.PageSize+4095] = byte(0x20 + i)
	}
	for i := range 3 {
		if got := m[i*vchan.PageSize+7]; got != byte(0x10+i) {
			t.Errorf("page %d: mapper sees %#x, want %#x", i, got, 0x10+i)
		}
		if got := s[i*vchan.PageSize+4095]; got != byte(0x20+i) {
			t.Errorf("page %d: sharer sees %#x, want %#x", i, got, 0x20+i)
		}
	}

	// Pages mapped in another order land in that order.
	refs := sh.Refs()
	rev, err := cli.Map(1, []uint32{refs[2], refs[0]}, false)
	if err != nil {
		t.Fatal(err)
	}
	defer rev.Close()
	if rev.Bytes()[7] != 0x12 || rev.Bytes()[vchan.PageSize+7] != 0x10 {
		t.Errorf("reordered map: got %#x %#x", rev.Bytes()[7], rev.Bytes()[vchan.PageSize+7])
	}
}

func TestRefsAreSmallAndReused(t *testing.T) {
	dir := hostDir(t)
	b := openDom(t, dir, 1)
	a, err := b.Share(2, 2)
	if err != nil {
		t.Fatal(err)
	}
	c, err := b.Share(3, 1)
	if err != nil {
		t.Fatal(err)
	}
	if got := append(append([]uint32{}, a.Refs()...), c.Refs()...); got[0] != firstRef || got[1] != firstRef+1 || got[2] != firstRef+2 {
		t.Fatalf("refs %v, want %d.. in order", got, firstRef)
	}
	a.Close()
	d, err := b.Share(2, 1)
	if err != nil {
		t.Fatal(err)
	}
	if d.Refs()[0] != firstRef {
		t.Errorf("after close, next ref %d, want lowest free %d", d.Refs()[0], firstRef)
	}
	c.Close()
	d.Close()
	ents, _ := os.ReadDir(filepath.Join(dir, "gnt", "1"))
	if len(ents) != 0 {
		t.Errorf("grant files left after close: %d", len(ents))
	}
}

func TestMapErrors(t *testing.T) {
	dir := hostDir(t)
	srv, cli, other := openDom(t, dir, 1), openDom(t, dir, 2), openDom(t, dir, 3)
	sh, err := srv.Share(2, 1)
	if err != nil {
		t.Fatal(err)
	}
	ref := sh.Refs()[0]

	// Corrupt entries in domain 1's grant directory.
	gdir := filepath.Join(dir, "gnt", "1")
	if err := os.WriteFile(filepath.Join(gdir, "900@2"), []byte("short"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(filepath.Join(gdir, "901@2"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mkfifo(filepath.Join(gdir, "903@2"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(filepath.Join(gdir, grantName(ref, 2)), filepath.Join(gdir, "902@2")); err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name string
		b    *Backend
		peer vchan.DomID
		refs []uint32
		want error
	}{
		{"not grantee", other, 1, []uint32{ref}, ErrNotGrantee},
		{"no such ref", cli, 1, []uint32{ref + 100}, ErrNoGrant},
		{"ref zero", cli, 1, []uint32{0}, ErrNoGrant},
		{"wrong granter", cli, 3, []uint32{ref}, ErrNoGrant},
		{"second page missing", cli, 1, []uint32{ref, ref + 100}, ErrNoGrant},
		{"short file", cli, 1, []uint32{900}, ErrBadGrant},
		{"directory", cli, 1, []uint32{901}, ErrBadGrant},
		{"symlink", cli, 1, []uint32{902}, ErrBadGrant},
		{"fifo", cli, 1, []uint32{903}, ErrBadGrant},
		{"no refs", cli, 1, nil, ErrBadCount},
		{"reserved domain", cli, 0x7FF0, []uint32{ref}, ErrBadDomain},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, err := tt.b.Map(tt.peer, tt.refs, true)
			if !errors.Is(err, tt.want) {
				if m != nil {
					m.Close()
				}
				t.Fatalf("Map: %v, want %v", err, tt.want)
			}
		})
	}

	// After the sharer closes, the grant is gone for new mappers ...
	mp, err := cli.Map(1, []uint32{ref}, true)
	if err != nil {
		t.Fatal(err)
	}
	mp.Bytes()[0] = 42
	sh.Close()
	if _, err := cli.Map(1, []uint32{ref}, true); !errors.Is(err, ErrNoGrant) {
		t.Errorf("map after revoke: %v, want ErrNoGrant", err)
	}
	// ... and the one who mapped it keeps the page.
	if mp.Bytes()[0] != 42 {
		t.Error("mapping lost its page when the sharer closed")
	}
	mp.Close()
}

func TestShareErrors(t *testing.T) {
	b := openDom(t, hostDir(t), 1)
	for _, n := range []int{0, -1, maxGrants + 1} {
		if _, err := b.Share(2, n); !errors.Is(err, ErrBadCount) {
			t.Errorf("Share(%d pages): %v, want ErrBadCount", n, err)
		}
	}
	if _, err := b.Share(0xFFFF, 1); !errors.Is(err, ErrBadDomain) {
		t.Errorf("Share to DOMID_INVALID: %v", err)
	}
}

func TestOpenDomainInUseAndStaleFiles(t *testing.T) {
	dir := hostDir(t)
	b, err := Open(dir, 4)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Open(dir, 4); !errors.Is(err, ErrDomainInUse) {
		t.Fatalf("second Open: %v, want ErrDomainInUse", err)
	}
	b.Close()

	// Leftovers of a dead domain 4 (its lock is free): removed by Open.
	for _, p := range []string{"gnt/4/8@5", "evtchn/4/1"} {
		os.MkdirAll(filepath.Dir(filepath.Join(dir, p)), 0o700)
		if err := os.WriteFile(filepath.Join(dir, p), []byte("junk"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	b = openDom(t, dir, 4)
	for _, p := range []string{"gnt/4/8@5", "evtchn/4/1"} {
		if _, err := os.Stat(filepath.Join(dir, p)); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("stale %s still there: %v", p, err)
		}
	}
	// And the port and ref numbers start low again.
	ch, err := b.AllocUnbound(5)
	if err != nil {
		t.Fatal(err)
	}
	defer ch.Close()
	if ch.Port() != 1 {
		t.Errorf("first port %d, want 1", ch.Port())
	}
}

func TestOpenBadHost(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, hostMarker), []byte("something else\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(dir, 1); !errors.Is(err, ErrBadHost) {
		t.Fatalf("Open: %v, want ErrBadHost", err)
	}
	if _, err := Open(t.TempDir(), 0x7FF0); !errors.Is(err, ErrBadDomain) {
		t.Fatalf("Open(0x7FF0): %v, want ErrBadDomain", err)
	}
	// A plain file where the host directory should be.
	f := filepath.Join(t.TempDir(), "file")
	os.WriteFile(f, nil, 0o600)
	if _, err := Open(f, 1); err == nil {
		t.Fatal("Open on a file succeeded")
	}
}

func TestBackendCloseUnmapsAndUnbinds(t *testing.T) {
	dir := hostDir(t)
	srv, cli := openDom(t, dir, 1), openDom(t, dir, 2)
	sch, err := srv.AllocUnbound(2)
	if err != nil {
		t.Fatal(err)
	}
	sh, err := srv.Share(2, 1)
	if err != nil {
		t.Fatal(err)
	}
	sh.Bytes()[21] = 1
	if err := sh.SetUnmapNotify(21, sch); err != nil {
		t.Fatal(err)
	}
	cch, err := cli.Bind(1, sch.Port())
	if err != nil {
		t.Fatal(err)
	}
	defer cch.Close()
	mp, err := cli.Map(1, sh.Refs(), true)
	if err != nil {
		t.Fatal(err)
	}
	defer mp.Close()
	drain(t, cch)

	if n := chanGoroutines(); n != 2 {
		t.Errorf("%d channel goroutines before close, want 2 (one per channel)", n)
	}
	if err := srv.Close(); err != nil {
		t.Fatal(err)
	}
	waitEvent(t, cch, 2*time.Second)
	if mp.Bytes()[21] != 0 {
		t.Error("backend close did not fire the unmap notify")
	}
	if err := sch.Wait(context.Background()); !errors.Is(err, os.ErrClosed) && !errors.Is(err, errClosedNet) {
		t.Errorf("Wait after backend close: %v", err)
	}
	if _, err := srv.Share(2, 1); err == nil {
		t.Error("Share after Close succeeded")
	}
	// The client's channel saw the goodbye: its goroutine ends too.
	deadline := time.Now().Add(2 * time.Second)
	for chanGoroutines() != 0 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	if n := chanGoroutines(); n != 0 {
		t.Errorf("%d channel goroutines left after close", n)
	}
}

// chanGoroutines counts the goroutines the channels own (by their creator,
// which a goroutine that has not run yet shows too).
func chanGoroutines() int {
	buf := make([]byte, 1<<20)
	buf = buf[:runtime.Stack(buf, true)]
	return strings.Count(string(buf), "created by idcfs/vchan/shm.(*Backend).AllocUnbound ") +
		strings.Count(string(buf), "created by idcfs/vchan/shm.(*Backend).Bind ")
}
