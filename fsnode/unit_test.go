package fsnode

import (
	"context"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
)

// newTestFS builds the node tree for a loopback Manager of domain 1
// without mounting it.
func newTestFS(t *testing.T) *filesystem {
	t.Helper()
	f := newFilesystem(newLoopManager(t, 1), testLog(t), 0)
	fs.NewNodeFS(f.root, &fs.Options{})
	t.Cleanup(f.shutdown)
	return f
}

// as returns a request context from user uid, as the kernel would send.
func as(uid uint32) context.Context {
	return fuse.NewContext(context.Background(), &fuse.Caller{Owner: fuse.Owner{Uid: uid, Gid: uid}, Pid: 4242})
}

func lookupPort(t *testing.T, f *filesystem, name string) *portNode {
	t.Helper()
	var out fuse.EntryOut
	ch, errno := f.root.listen.Lookup(as(0), name, &out)
	if errno != 0 {
		t.Fatalf("Lookup(listen/%s): %v", name, errno)
	}
	return ch.Operations().(*portNode)
}

func lookupConnect(t *testing.T, f *filesystem, dom, port string) *connectNode {
	t.Helper()
	var out fuse.EntryOut
	d, errno := f.root.connect.Lookup(as(0), dom, &out)
	if errno != 0 {
		t.Fatalf("Lookup(connect/%s): %v", dom, errno)
	}
	ch, errno := d.Operations().(*connectPeerNode).Lookup(as(0), port, &out)
	if errno != 0 {
		t.Fatalf("Lookup(connect/%s/%s): %v", dom, port, errno)
	}
	return ch.Operations().(*connectNode)
}

func listNames(t *testing.T, d fs.NodeReaddirer) []string {
	t.Helper()
	ds, errno := d.Readdir(as(0))
	if errno != 0 {
		t.Fatalf("Readdir: %v", errno)
	}
	var names []string
	for ds.HasNext() {
		e, errno := ds.Next()
		if errno != 0 {
			t.Fatalf("Next: %v", errno)
		}
		names = append(names, e.Name)
	}
	return names
}

// pair binds port, connects to it as uid and accepts, returning the
// connecting and the accepting handle, both O_RDWR unless flags say.
func pair(t *testing.T, f *filesystem, port string, uid, connFlags, acceptFlags uint32) (client, server *connHandle) {
	t.Helper()
	pn := lookupPort(t, f, port)
	if _, _, errno := pn.Open(as(uid), syscall.O_RDONLY|syscall.O_NONBLOCK); errno != 0 && errno != syscall.EAGAIN {
		t.Fatalf("bind: %v", errno)
	}
	fh, _, errno := lookupConnect(t, f, "1", port).Open(as(uid), connFlags)
	if errno != 0 {
		t.Fatalf("connect: %v", errno)
	}
	sh, fl, errno := pn.Open(as(uid), acceptFlags|syscall.O_NONBLOCK)
	if errno != 0 {
		t.Fatalf("accept: %v", errno)
	}
	if fl != streamFlags {
		t.Errorf("accept open flags %#x, want %#x", fl, streamFlags)
	}
	return fh.(*connHandle), sh.(*connHandle)
}

func readString(t *testing.T, h *connHandle, n int) (string, syscall.Errno) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	buf := make([]byte, n)
	rr, errno := h.Read(ctx, buf, 0)
	if errno != 0 {
		return "", errno
	}
	b, _ := rr.Bytes(buf)
	return string(b), 0
}

func write(t *testing.T, h *connHandle, s string) {
	t.Helper()
	n, errno := h.Write(context.Background(), []byte(s), 0)
	if errno != 0 || int(n) != len(s) {
		t.Fatalf("Write(%q) = %d, %v", s, n, errno)
	}
}

func TestListenBindOwnershipAndUnlink(t *testing.T) {
	f := newTestFS(t)
	var out fuse.EntryOut
	for _, bad := range []string{"x", "080", "-1", "4294967296", ""} {
		if _, errno := f.root.listen.Lookup(as(0), bad, &out); errno != syscall.ENOENT {
			t.Errorf("Lookup(listen/%q) = %v, want ENOENT", bad, errno)
		}
	}

	var a fuse.AttrOut
	pn := lookupPort(t, f, "7000")
	pn.Getattr(as(0), nil, &a)
	if a.Mode != syscall.S_IFREG|0o666 || a.Uid != 0 {
		t.Errorf("unbound port: mode %o uid %d, want 100666 root", a.Mode, a.Uid)
	}
	lookupPort(t, f, "80").Getattr(as(0), nil, &a)
	if a.Mode != syscall.S_IFREG|0o600 {
		t.Errorf("unbound port 80: mode %o, want 100600", a.Mode)
	}
	if _, _, errno := lookupPort(t, f, "80").Open(as(1000), syscall.O_RDONLY|syscall.O_NONBLOCK); errno != syscall.EACCES {
		t.Errorf("non-root bind of 80: %v, want EACCES", errno)
	}

	// The first open binds even though it finds nothing to accept.
	if _, _, errno := pn.Open(as(1000), syscall.O_RDONLY|syscall.O_NONBLOCK); errno != syscall.EAGAIN {
		t.Fatalf("O_NONBLOCK accept: %v, want EAGAIN", errno)
	}
	if got := listNames(t, f.root.listen); len(got) != 1 || got[0] != "7000" {
		t.Errorf("ls listen = %v, want [7000]", got)
	}
	pn.Getattr(as(0), nil, &a)
	if a.Mode != syscall.S_IFREG|0o600 || a.Uid != 1000 {
		t.Errorf("bound port: mode %o uid %d, want 100600 1000", a.Mode, a.Uid)
	}
	if _, _, errno := pn.Open(as(1001), syscall.O_RDONLY|syscall.O_NONBLOCK); errno != syscall.EACCES {
		t.Errorf("accept by another user: %v, want EACCES", errno)
	}
	if _, _, errno := pn.Open(as(0), syscall.O_RDONLY|syscall.O_NONBLOCK); errno != syscall.EAGAIN {
		t.Errorf("accept by root: %v, want EAGAIN", errno)
	}
	if errno := f.root.listen.Unlink(as(1001), "7000"); errno != syscall.EACCES {
		t.Errorf("rm by another user: %v, want EACCES", errno)
	}
	if errno := f.root.listen.Unlink(as(1000), "7000"); errno != 0 {
		t.Errorf("rm by owner: %v", errno)
	}
	if got := listNames(t, f.root.listen); len(got) != 0 {
		t.Errorf("ls listen after rm = %v, want empty", got)
	}
	if errno := f.root.listen.Unlink(as(0), "7000"); errno != syscall.ENOENT {
		t.Errorf("second rm: %v, want ENOENT", errno)
	}
	if _, _, errno := lookupConnect(t, f, "1", "7000").Open(as(0), syscall.O_RDWR); errno != syscall.ECONNREFUSED {
		t.Errorf("connect after rm: %v, want ECONNREFUSED", errno)
	}
	if errno := f.root.conn.Unlink(as(0), "1"); errno != syscall.EPERM {
		t.Errorf("rm in conn/: %v, want EPERM", errno)
	}
}

func TestConnHandleData(t *testing.T) {
	f := newTestFS(t)
	c, s := pair(t, f, "7001", 0, syscall.O_RDWR, syscall.O_RDWR)
	write(t, c, "ping")
	if got, errno := readString(t, s, 100); errno != 0 || got != "ping" {
		t.Fatalf("server read %q, %v", got, errno)
	}
	write(t, s, "pong")
	// A short buffer gives a short read; the rest stays queued.
	if got, errno := readString(t, c, 2); errno != 0 || got != "po" {
		t.Fatalf("client read %q, %v", got, errno)
	}
	if got, errno := readString(t, c, 100); errno != 0 || got != "ng" {
		t.Fatalf("client read %q, %v", got, errno)
	}
	// Closing the last handle closes the connection: the peer reads EOF
	// and then cannot write.
	if errno := c.Release(context.Background()); errno != 0 {
		t.Fatal(errno)
	}
	if got, errno := readString(t, s, 100); errno != 0 || got != "" {
		t.Fatalf("read after peer close: %q, %v; want EOF", got, errno)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		_, errno := s.Write(context.Background(), []byte("x"), 0)
		if errno == syscall.EPIPE {
			break
		}
		if errno != 0 || time.Now().After(deadline) {
			t.Fatalf("write after peer close: %v, want EPIPE", errno)
		}
		time.Sleep(10 * time.Millisecond)
	}
	s.Release(context.Background())
}

func TestReadInterrupt(t *testing.T) {
	f := newTestFS(t)
	c, s := pair(t, f, "7002", 0, syscall.O_RDWR, syscall.O_RDWR)
	defer c.Release(context.Background())
	defer s.Release(context.Background())
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan syscall.Errno, 1)
	go func() {
		_, errno := s.Read(ctx, make([]byte, 10), 0)
		done <- errno
	}()
	time.Sleep(50 * time.Millisecond)
	cancel()
	select {
	case errno := <-done:
		if errno != syscall.EINTR {
			t.Errorf("interrupted read: %v, want EINTR", errno)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("read not interrupted")
	}
	// Nothing was lost: data sent afterwards arrives whole.
	write(t, c, "after")
	if got, errno := readString(t, s, 10); errno != 0 || got != "after" {
		t.Errorf("read after interrupt: %q, %v", got, errno)
	}
}

func TestReleaseRace(t *testing.T) {
	f := newTestFS(t)
	c, s := pair(t, f, "7003", 0, syscall.O_RDWR, syscall.O_RDWR)
	defer s.Release(context.Background())
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			_, errno := c.Write(context.Background(), []byte("x"), 0)
			if errno != 0 && errno != syscall.EBADF {
				t.Errorf("write racing release: %v", errno)
			}
		})
	}
	wg.Go(func() { c.Release(context.Background()) })
	wg.Wait()
	if _, errno := c.Write(context.Background(), []byte("x"), 0); errno != syscall.EBADF {
		t.Errorf("write after release: %v, want EBADF", errno)
	}
	if _, errno := c.Read(context.Background(), make([]byte, 1), 0); errno != syscall.EBADF {
		t.Errorf("read after release: %v, want EBADF", errno)
	}
	if errno := c.Release(context.Background()); errno != syscall.EBADF {
		t.Errorf("second release: %v, want EBADF", errno)
	}
}

// openConnFile opens conn/<id>/<name> as uid.
func openConnFile(t *testing.T, f *filesystem, id uint64, name string, uid, flags uint32) (fs.FileHandle, syscall.Errno) {
	t.Helper()
	var out fuse.EntryOut
	d, errno := f.root.conn.Lookup(as(uid), strconv.FormatUint(id, 10), &out)
	if errno != 0 {
		return nil, errno
	}
	ch, errno := d.Operations().(*connIDNode).Lookup(as(uid), name, &out)
	if errno != 0 {
		return nil, errno
	}
	fh, _, errno := ch.Operations().(*connFileNode).Open(as(uid), flags)
	return fh, errno
}

func TestHalfCloseByLastWriter(t *testing.T) {
	f := newTestFS(t)
	// The client connects write-only, then opens a read-only handle on
	// the same connection through conn/<id>/data.
	c, s := pair(t, f, "7004", 1000, syscall.O_WRONLY, syscall.O_RDWR)
	defer s.Release(context.Background())
	id := c.e.id
	if _, errno := openConnFile(t, f, id, "data", 1001, syscall.O_RDONLY); errno != syscall.EACCES {
		t.Errorf("data opened by another user: %v, want EACCES", errno)
	}
	fh, errno := openConnFile(t, f, id, "data", 1000, syscall.O_RDONLY)
	if errno != 0 {
		t.Fatalf("open data: %v", errno)
	}
	r := fh.(*connHandle)
	write(t, c, "request")
	c.Release(context.Background()) // last writer: the server reads EOF
	if got, errno := readString(t, s, 100); errno != 0 || got != "request" {
		t.Fatalf("server read %q, %v", got, errno)
	}
	if got, errno := readString(t, s, 100); errno != 0 || got != "" {
		t.Fatalf("server read %q, %v; want EOF", got, errno)
	}
	write(t, s, "response")
	if got, errno := readString(t, r, 100); errno != 0 || got != "response" {
		t.Fatalf("client read %q, %v", got, errno)
	}
	text := statusOf(t, f, id)
	for _, want := range []string{"uid 1000\n", "readers 1\n", "writers 0\n", "remote dom(1):7004\n"} {
		if !strings.Contains(text, want) {
			t.Errorf("status lacks %q:\n%s", want, text)
		}
	}
	r.Release(context.Background())
	if _, errno := openConnFile(t, f, id, "data", 1000, syscall.O_RDONLY); errno != syscall.ENOENT {
		t.Errorf("data after last close: %v, want ENOENT", errno)
	}
}

func statusOf(t *testing.T, f *filesystem, id uint64) string {
	t.Helper()
	fh, errno := openConnFile(t, f, id, "status", 1234, syscall.O_RDONLY)
	if errno != 0 {
		t.Fatalf("open status: %v", errno)
	}
	h := fh.(*textHandle)
	defer h.Release(context.Background())
	var sb strings.Builder
	buf := make([]byte, 7) // small reads walk the handle's position
	for {
		rr, errno := h.Read(context.Background(), buf, 0)
		if errno != 0 {
			t.Fatal(errno)
		}
		b, _ := rr.Bytes(buf)
		if len(b) == 0 {
			return sb.String()
		}
		sb.Write(b)
	}
}

func TestCtl(t *testing.T) {
	f := newTestFS(t)
	c, s := pair(t, f, "7005", 1000, syscall.O_RDWR, syscall.O_RDWR)
	defer c.Release(context.Background())
	defer s.Release(context.Background())
	id := s.e.id
	if _, errno := openConnFile(t, f, id, "ctl", 1001, syscall.O_WRONLY); errno != syscall.EACCES {
		t.Errorf("ctl opened by another user: %v, want EACCES", errno)
	}
	fh, errno := openConnFile(t, f, id, "ctl", 1000, syscall.O_RDWR)
	if errno != 0 {
		t.Fatal(errno)
	}
	ctl := fh.(*ctlHandle)
	defer ctl.Release(context.Background())
	buf := make([]byte, 64)
	rr, _ := ctl.Read(context.Background(), buf, 0)
	if b, _ := rr.Bytes(buf); string(b) != strconv.FormatUint(id, 10)+"\n" {
		t.Errorf("read ctl = %q, want the id", b)
	}
	if _, errno := ctl.Write(context.Background(), []byte("bogus\n"), 0); errno != syscall.EINVAL {
		t.Errorf("bogus ctl: %v, want EINVAL", errno)
	}
	if n, errno := ctl.Write(context.Background(), []byte("shutdown\n"), 0); errno != 0 || n != 9 {
		t.Fatalf("shutdown: %d, %v", n, errno)
	}
	if got, errno := readString(t, c, 10); errno != 0 || got != "" {
		t.Errorf("client read after server shutdown: %q, %v; want EOF", got, errno)
	}
	// The other direction still works.
	write(t, c, "still")
	if got, errno := readString(t, s, 10); errno != 0 || got != "still" {
		t.Errorf("server read %q, %v", got, errno)
	}
	if _, errno := ctl.Write(context.Background(), []byte("hangup\n"), 0); errno != 0 {
		t.Fatalf("hangup: %v", errno)
	}
	// The reset travels over the link: until it arrives the client
	// still reads the EOF of the earlier shutdown.
	deadline := time.Now().Add(5 * time.Second)
	for {
		_, errno := readString(t, c, 10)
		if errno == syscall.ECONNRESET {
			break
		}
		if errno != 0 || time.Now().After(deadline) {
			t.Fatalf("client read after hangup: %v, want ECONNRESET", errno)
		}
		time.Sleep(5 * time.Millisecond)
	}
	if _, errno := readString(t, s, 10); errno != syscall.ECONNRESET {
		t.Errorf("server read after its own hangup: %v, want ECONNRESET", errno)
	}
}

func TestSelfAndShutdown(t *testing.T) {
	f := newTestFS(t)
	self := f.root.GetChild("self").Operations().(*selfNode)
	if _, _, errno := self.Open(as(0), syscall.O_WRONLY); errno != syscall.EACCES {
		t.Errorf("open self for writing: %v, want EACCES", errno)
	}
	fh, _, errno := self.Open(as(0), syscall.O_RDONLY)
	if errno != 0 {
		t.Fatal(errno)
	}
	h := fh.(*textHandle)
	buf := make([]byte, 64)
	rr, _ := h.Read(context.Background(), buf, 0)
	if b, _ := rr.Bytes(buf); string(b) != "1\n" {
		t.Errorf("self = %q", b)
	}
	rr, _ = h.Read(context.Background(), buf, 0)
	if b, _ := rr.Bytes(buf); len(b) != 0 {
		t.Errorf("second read of self = %q, want EOF", b)
	}

	c, s := pair(t, f, "7006", 0, syscall.O_RDWR, syscall.O_RDWR)
	accepted := make(chan syscall.Errno, 1)
	go func() {
		_, _, errno := lookupPort(t, f, "7006").Open(as(0), syscall.O_RDONLY)
		accepted <- errno
	}()
	read := make(chan syscall.Errno, 1)
	go func() {
		_, errno := s.Read(context.Background(), buf, 0)
		read <- errno
	}()
	time.Sleep(50 * time.Millisecond)
	f.shutdown()
	for name, ch := range map[string]chan syscall.Errno{"accept": accepted, "read": read} {
		select {
		case errno := <-ch:
			if name == "accept" && errno != syscall.ECONNABORTED {
				t.Errorf("accept at shutdown: %v, want ECONNABORTED", errno)
			}
			if name == "read" && errno != 0 {
				t.Errorf("read at shutdown: %v, want EOF", errno)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("%s not woken by shutdown", name)
		}
	}
	c.Release(context.Background())
	s.Release(context.Background())
}
