package xenstored

import (
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"idcfs/linkmgr/xenstore"
)

func TestRequestErrors(t *testing.T) {
	s := newTestServer(t)
	if err := s.IntroduceDomain(1); err != nil {
		t.Fatal(err)
	}
	r0, r1 := dialRaw(t, s, 0), dialRaw(t, s, 1)
	tests := []struct {
		name    string
		r       *raw
		op      xenstore.Op
		tx      uint32
		payload string
		want    syscall.Errno
	}{
		{"unknown type", r0, 77, 0, "", syscall.ENOSYS},
		{"event type from a client", r0, xenstore.OpWatchEvent, 0, "/a\x00t\x00", syscall.ENOSYS},
		{"privileged type from a guest", r1, xenstore.OpRelease, 0, "1\x00", syscall.EACCES},
		{"introduce over the wire", r0, xenstore.OpIntroduce, 0, "2\x001\x001\x00", syscall.ENOSYS},
		{"unterminated path", r0, xenstore.OpRead, 0, "/local", syscall.EINVAL},
		{"two NULs", r0, xenstore.OpRead, 0, "/local\x00\x00", syscall.EINVAL},
		{"non-UTF-8", r0, xenstore.OpRead, 0, "/\xfe\x00", syscall.EINVAL},
		{"bad permission", r0, xenstore.OpSetPerms, 0, "/local\x00z0\x00", syscall.EINVAL},
		{"permission domid in hex", r0, xenstore.OpSetPerms, 0, "/local\x00n0x1\x00", syscall.EINVAL},
		{"nested transaction", r0, xenstore.OpTransactionStart, 5, "\x00", syscall.EBUSY},
		{"unknown transaction", r0, xenstore.OpRead, 12345, "/local\x00", syscall.ENOENT},
		{"end unknown transaction", r0, xenstore.OpTransactionEnd, 12345, "T\x00", syscall.ENOENT},
		{"end without transaction", r0, xenstore.OpTransactionEnd, 0, "T\x00", syscall.ENOENT},
		{"domain path not a number", r0, xenstore.OpGetDomainPath, 0, "x\x00", syscall.EINVAL},
		{"domain path too big", r0, xenstore.OpGetDomainPath, 0, "65536\x00", syscall.EINVAL},
		{"unwatch unknown", r0, xenstore.OpUnwatch, 0, "/a\x00t\x00", syscall.ENOENT},
		{"watch bad path", r0, xenstore.OpWatch, 0, "/a/\x00t\x00", syscall.EINVAL},
		{"get perms of a special path", r0, xenstore.OpGetPerms, 0, "@introduceDomain\x00", syscall.EINVAL},
		{"guest sets perms of a special path", r1, xenstore.OpSetPerms, 0, "@releaseDomain\x00n0\x00r1\x00", syscall.EACCES},
		{"owner must exist", r0, xenstore.OpSetPerms, 0, "/local\x00n44\x00", syscall.ENOENT},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) { tt.r.fails(tt.want, tt.op, tt.tx, tt.payload) })
	}
	// The connections survived all of that.
	if got := r1.ok(xenstore.OpRead, 0, "domid\x00"); got != "1" {
		t.Fatalf("read domid = %q", got)
	}
	if got := r0.ok(xenstore.OpIsDomainIntroduced, 0, "1\x00"); got != "T\x00" {
		t.Fatalf("is introduced 1 = %q", got)
	}
	if got := r0.ok(xenstore.OpIsDomainIntroduced, 0, "2\x00"); got != "F\x00" {
		t.Fatalf("is introduced 2 = %q", got)
	}
}

func TestOversizedRequestDropsConnection(t *testing.T) {
	s := newTestServer(t)
	r := dialRaw(t, s, 0)
	hdr, _ := (&xenstore.Message{Op: xenstore.OpRead}).AppendMarshal(nil)
	hdr[12], hdr[13] = byte((xenstore.MaxPayload+1)&0xff), byte((xenstore.MaxPayload+1)>>8)
	r.sendRaw(hdr)
	if _, err := r.read(); err != io.EOF {
		t.Fatalf("after an oversized header: %v, want the connection closed", err)
	}
}

func TestTransactionIDs(t *testing.T) {
	s := newTestServer(t)
	r := dialRaw(t, s, 0)
	id := r.ok(xenstore.OpTransactionStart, 0, "\x00")
	tx, ok := xenstore.ParseTxID(strings.TrimSuffix(id, "\x00"))
	if !ok || !strings.HasSuffix(id, "\x00") {
		t.Fatalf("transaction id %q", id)
	}
	// Replies echo the transaction id (checked by raw.do).
	r.ok(xenstore.OpWrite, tx, "/t\x00v")
	r.fails(syscall.EINVAL, xenstore.OpTransactionEnd, tx, "X\x00")
	// Another connection cannot use it.
	other := dialRaw(t, s, 0)
	other.fails(syscall.ENOENT, xenstore.OpRead, tx, "/t\x00")
	r.ok(xenstore.OpTransactionEnd, tx, "T\x00")
	// The id is dead afterwards.
	r.fails(syscall.ENOENT, xenstore.OpRead, tx, "/t\x00")
	if got := other.ok(xenstore.OpRead, 0, "/t\x00"); got != "v" {
		t.Fatalf("committed value %q", got)
	}
}

func TestQuotas(t *testing.T) {
	s := newTestServer(t)
	if err := s.IntroduceDomain(1); err != nil {
		t.Fatal(err)
	}
	r := dialRaw(t, s, 1)
	for i := range quotaWatches {
		r.ok(xenstore.OpWatch, 0, fmt.Sprintf("data/w%d\x00t\x00", i))
	}
	r.fails(syscall.ENOSPC, xenstore.OpWatch, 0, "data/one-more\x00t\x00")
	// The quota is per domain, not per connection.
	r2 := dialRaw(t, s, 1)
	r2.fails(syscall.ENOSPC, xenstore.OpWatch, 0, "data/one-more\x00t\x00")
	for range quotaTransactions {
		r.ok(xenstore.OpTransactionStart, 0, "\x00")
	}
	r2.fails(syscall.ENOSPC, xenstore.OpTransactionStart, 0, "\x00")
	r.fails(syscall.ENOSPC, xenstore.OpWrite, 0, "data/big\x00"+strings.Repeat("x", quotaNodeSize+1))
	// Nodes per domain: dom1 owns data/ already.
	for i := 1; i < quotaNodes; i++ {
		r.ok(xenstore.OpMkdir, 0, fmt.Sprintf("data/n%d\x00", i))
	}
	r.fails(syscall.ENOSPC, xenstore.OpMkdir, 0, "data/one-more\x00")
	r.ok(xenstore.OpRm, 0, "data/n1\x00")
	r.ok(xenstore.OpMkdir, 0, "data/one-more\x00")
	checkTree(t, s.st)
	// dom0 has no quotas.
	r0 := dialRaw(t, s, 0)
	r0.ok(xenstore.OpWrite, 0, "/big\x00"+strings.Repeat("x", quotaNodeSize+1))
	for i := range quotaWatches + 1 {
		r0.ok(xenstore.OpWatch, 0, fmt.Sprintf("/w%d\x00t\x00", i))
	}
}

func TestDirectoryTooLargeAndParts(t *testing.T) {
	s := newTestServer(t)
	r := dialRaw(t, s, 0)
	var want []string
	for i := range 400 {
		name := fmt.Sprintf("child-with-a-long-name-%04d", i)
		want = append(want, name)
		r.ok(xenstore.OpMkdir, 0, "/d/"+name+"\x00")
	}
	r.fails(syscall.E2BIG, xenstore.OpDirectory, 0, "/d\x00")
	// Reassemble the list from DIRECTORY_PART chunks.
	var got []string
	off, gen := 0, ""
	for chunks := 0; ; chunks++ {
		if chunks > 10 {
			t.Fatal("too many chunks")
		}
		reply := r.ok(xenstore.OpDirectoryPart, 0, fmt.Sprintf("/d\x00%d\x00", off))
		g, rest, _ := strings.Cut(reply, "\x00")
		if gen != "" && g != gen {
			t.Fatalf("generation changed: %s -> %s", gen, g)
		}
		gen = g
		last := strings.HasSuffix(rest, "\x00\x00") || rest == "\x00"
		if last {
			rest = rest[:len(rest)-1]
		}
		names, err := xenstore.SplitStrings([]byte(rest))
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, names...)
		off += len(rest)
		if last {
			break
		}
	}
	if !slices.Equal(got, want) {
		t.Fatalf("reassembled %d names, want %d", len(got), len(want))
	}
	r.fails(syscall.EINVAL, xenstore.OpDirectoryPart, 0, "/d\x003\x00")
}

func TestDomainLifecycle(t *testing.T) {
	s := newTestServer(t)
	if err := s.IntroduceDomain(4); err != nil {
		t.Fatal(err)
	}
	if err := s.IntroduceDomain(4); !isErr(err, ErrDomainExists) {
		t.Fatalf("second introduce: %v", err)
	}
	if err := s.IntroduceDomain(0); !isErr(err, ErrDomainExists) {
		t.Fatalf("introduce 0: %v", err)
	}
	if err := s.IntroduceDomain(1 << 16); !isErr(err, ErrBadDomain) {
		t.Fatalf("introduce 65536: %v", err)
	}
	r0 := dialRaw(t, s, 0)
	for path, perms := range map[string]string{
		"/local/domain/4":       "n0\x00r4\x00",
		"/local/domain/4/domid": "n0\x00r4\x00",
		"/local/domain/4/data":  "n4\x00",
	} {
		if got := r0.ok(xenstore.OpGetPerms, 0, path+"\x00"); got != perms {
			t.Fatalf("perms of %s = %q, want %q", path, got, perms)
		}
	}
	if got := r0.ok(xenstore.OpRead, 0, "/local/domain/4/domid\x00"); got != "4" {
		t.Fatalf("domid %q", got)
	}
	r4 := dialRaw(t, s, 4)
	r4.ok(xenstore.OpWatch, 0, "data\x00w\x00")
	tx := r4.ok(xenstore.OpTransactionStart, 0, "\x00")
	txID, _ := xenstore.ParseTxID(strings.TrimSuffix(tx, "\x00"))
	r4.takeEvents()

	if err := s.ReleaseDomain(4); err != nil {
		t.Fatal(err)
	}
	if err := s.ReleaseDomain(4); !isErr(err, ErrNoDomain) {
		t.Fatalf("second release: %v", err)
	}
	if err := s.ReleaseDomain(0); !isErr(err, ErrNoDomain) {
		t.Fatalf("release 0: %v", err)
	}
	r0.fails(syscall.ENOENT, xenstore.OpRead, 0, "/local/domain/4\x00")
	// The connection stays, but its transaction and watch are gone.
	r4.fails(syscall.ENOENT, xenstore.OpRead, txID, "data\x00")
	r4.fails(syscall.ENOENT, xenstore.OpUnwatch, 0, "data\x00w\x00")
	// The watch fired for the removal before it was dropped.
	if ev := r4.takeEvents(); len(ev) != 1 || ev[0].Path != "data" {
		t.Fatalf("events on release: %+v", ev)
	}
	// The domain may come back.
	if err := s.IntroduceDomain(4); err != nil {
		t.Fatal(err)
	}
	checkTree(t, s.st)
}

func TestResetWatches(t *testing.T) {
	s := newTestServer(t)
	r := dialRaw(t, s, 0)
	r.ok(xenstore.OpWatch, 0, "/a\x00t\x00")
	tx := r.ok(xenstore.OpTransactionStart, 0, "\x00")
	txID, _ := xenstore.ParseTxID(strings.TrimSuffix(tx, "\x00"))
	r.ok(xenstore.OpResetWatches, 0, "\x00")
	r.fails(syscall.ENOENT, xenstore.OpUnwatch, 0, "/a\x00t\x00")
	r.fails(syscall.ENOENT, xenstore.OpTransactionEnd, txID, "F\x00")
}

// TestClientThatDoesNotRead checks that a connection whose peer never reads
// is dropped once its queue is full, and that the rest of the server keeps
// working.
func TestClientThatDoesNotRead(t *testing.T) {
	s := newTestServer(t)
	deaf := dialRaw(t, s, 0)
	deaf.sendRaw(mustMarshal(t, &xenstore.Message{Op: xenstore.OpWatch, ReqID: 1, Payload: []byte("/n\x00t\x00")}))
	r := dialRaw(t, s, 0)
	for i := 0; i < maxQueued+100; i++ {
		r.ok(xenstore.OpWrite, 0, "/n\x00"+fmt.Sprint(i))
	}
	// The deaf connection goes away in the background.
	deadline := time.Now().Add(5 * time.Second)
	for {
		s.mu.Lock()
		n := len(s.conns)
		s.mu.Unlock()
		if n == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d connections left, want only the reading one", n)
		}
		time.Sleep(10 * time.Millisecond)
	}
	r.ok(xenstore.OpRead, 0, "/n\x00")
}

func mustMarshal(t *testing.T, m *xenstore.Message) []byte {
	b, err := m.AppendMarshal(nil)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestListenAndServe(t *testing.T) {
	s := newTestServer(t)
	dir := t.TempDir()
	sock := filepath.Join(dir, "xs")
	if err := s.Listen(sock, 0); err != nil {
		t.Fatal(err)
	}
	if err := s.Listen(sock, 0); err == nil {
		t.Fatal("second Listen on a live socket succeeded")
	}
	// A socket file nobody serves any more is replaced.
	stale := filepath.Join(dir, "stale")
	sl, err := net.Listen("unix", stale)
	if err != nil {
		t.Fatal(err)
	}
	sl.(*net.UnixListener).SetUnlinkOnClose(false)
	sl.Close()
	if err := s.Listen(stale, 0); err != nil {
		t.Fatalf("Listen over a stale socket: %v", err)
	}
	// Anything else in the way is left alone.
	if err := os.WriteFile(filepath.Join(dir, "file"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := s.Listen(filepath.Join(dir, "file"), 0); err == nil {
		t.Fatal("Listen replaced a regular file")
	}
	l, err := net.Listen("unix", filepath.Join(dir, "served"))
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- s.Serve(l, 0) }()
	for _, p := range []string{sock, filepath.Join(dir, "served")} {
		c, err := xenstore.Dial(p)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := c.Read(t.Context(), "/local/domain/0/domid"); err != nil {
			t.Fatal(err)
		}
		c.Close()
	}
	l.Close()
	select {
	case err := <-served:
		if err != nil {
			t.Fatalf("Serve after its listener closed: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Serve did not return")
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Listen(filepath.Join(dir, "late"), 0); err == nil {
		t.Fatal("Listen after Close succeeded")
	}
	if err := s.IntroduceDomain(3); !isErr(err, ErrClosed) {
		t.Fatalf("introduce after close: %v", err)
	}
}
