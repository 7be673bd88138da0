package linkmgr

import (
	"bytes"
	"io"
	"os"
	"testing"
	"time"

	"idcfs/vchan"
	"idcfs/vchan/shm"
)

// shmBackend opens domain d of a shm-simulated host in dir.
func shmBackend(t testing.TB, dir string, d vchan.DomID) vchan.Backend {
	t.Helper()
	b, err := shm.Open(dir, d)
	if err != nil {
		t.Skipf("shm backend unavailable (needs Linux, mmap and Unix sockets): %v", err)
	}
	t.Cleanup(func() { b.Close() })
	return b
}

// shmDir returns a fresh host directory, on tmpfs when there is one: grant
// pages are files, and on a disk file system every ring page would be a
// dirty page written back (and the benchmarks would measure that).
func shmDir(t testing.TB) string {
	parent := ""
	if st, err := os.Stat("/dev/shm"); err == nil && st.IsDir() {
		parent = "/dev/shm"
	}
	dir, err := os.MkdirTemp(parent, "idcshm")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

// TestShmBackend runs two domains' link managers over the shm backend,
// whose ring memory is shared mmapped files and whose events are eventfds
// handed over Unix sockets, as between processes.
func TestShmBackend(t *testing.T) {
	checkLeaks(t)
	h := newTestHost(t, []vchan.DomID{1, 2})
	dir := shmDir(t)
	m1 := h.manager(1, func(c *Config) { c.Backend = shmBackend(t, dir, 1) })
	m2 := h.manager(2, func(c *Config) { c.Backend = shmBackend(t, dir, 2) })
	ln, err := m1.Listen(22, 0)
	if err != nil {
		t.Fatal(err)
	}
	ctx := testCtx(t, 20*time.Second)
	for round := range 2 {
		c, err := m2.Dial(ctx, 1, 22)
		if err != nil {
			t.Fatal(err)
		}
		s, err := ln.Accept(ctx)
		if err != nil {
			t.Fatal(err)
		}
		want := pattern(uint64(round), 4<<20)
		go func() {
			c.Write(want)
			c.Close()
		}()
		got, err := io.ReadAll(s)
		if err != nil || !bytes.Equal(got, want) {
			t.Fatalf("round %d: got %d bytes, %v", round, len(got), err)
		}
		s.Close()
	}
	if li := m2.Links(); len(li) != 1 || li[0].Role != roleClient {
		t.Fatalf("links of dom 2: %+v", li)
	}
}
