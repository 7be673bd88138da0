//go:build linux

package shm

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"math/rand/v2"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"idcfs/vchan"
)

// Cross-process tests of the vchan ring on this backend: the test binary
// re-executes itself as the peer domain (see TestMain and childRoles).

func init() {
	childRoles["ring-client"] = childRingClient
	childRoles["ring-server"] = childRingServer
}

// genBlock is the pattern a stream generator repeats.
const genBlock = 1 << 16

// stream is a deterministic byte stream made of genBlock-byte blocks:
// block k is a random pattern (drawn from the seed) rotated left by k, so
// blocks differ and anyone knowing the seed can check any part of the
// stream with plain copies and compares.
type stream struct {
	pattern []byte
	pos     uint64
}

func newStream(seed uint64) *stream {
	r := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	b := make([]byte, genBlock)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return &stream{pattern: b}
}

// next returns the longest run of upcoming stream bytes that is contiguous
// in the pattern, at most n bytes long, and advances past it.
func (s *stream) next(n int) []byte {
	off := int(s.pos % genBlock)
	k := int((s.pos / genBlock) % genBlock)
	src := (off + k) % genBlock
	run := min(n, genBlock-off, genBlock-src)
	s.pos += uint64(run)
	return s.pattern[src : src+run]
}

// fill writes the next len(p) bytes of the stream into p.
func (s *stream) fill(p []byte) {
	for len(p) > 0 {
		p = p[copy(p, s.next(len(p))):]
	}
}

// check compares p with the next len(p) bytes of the stream.
func (s *stream) check(p []byte) error {
	for len(p) > 0 {
		at := s.pos
		want := s.next(len(p))
		if !bytes.Equal(p[:len(want)], want) {
			return fmt.Errorf("stream bytes %d..%d differ", at, at+uint64(len(want)))
		}
		p = p[len(want):]
	}
	return nil
}

// duplex writes n bytes of stream seed sendSeed to rw while reading n bytes
// from it, and returns the sha256 of what it sent and of what it received.
// Write sizes vary (1 byte to 300 KiB) so that writes straddle the ring end.
func duplex(rw io.ReadWriter, n int64, sendSeed uint64) (sent, recv []byte, err error) {
	var wg sync.WaitGroup
	var werr error
	hs := sha256.New()
	wg.Add(1)
	go func() {
		defer wg.Done()
		g := newStream(sendSeed)
		sizes := rand.New(rand.NewPCG(sendSeed, 1))
		buf := make([]byte, 300<<10)
		for left := n; left > 0; {
			k := min(left, int64(1+sizes.IntN(len(buf))))
			g.fill(buf[:k])
			hs.Write(buf[:k])
			if _, err := rw.Write(buf[:k]); err != nil {
				werr = fmt.Errorf("write at %d: %w", n-left, err)
				return
			}
			left -= k
		}
	}()
	hr := &countingHash{Hash: sha256.New()}
	_, rerr := io.CopyBuffer(hr, io.LimitReader(rw, n), make([]byte, 64<<10))
	if rerr == nil && hr.n != n {
		rerr = fmt.Errorf("stream ended after %d of %d bytes", hr.n, n)
	}
	wg.Wait()
	return hs.Sum(nil), hr.Sum(nil), errors.Join(werr, rerr)
}

// countingHash counts what it hashes.
type countingHash struct {
	hash.Hash
	n int64
}

func (c *countingHash) Write(p []byte) (int, error) {
	c.n += int64(len(p))
	return c.Hash.Write(p)
}

// childRingClient: domain 2 connects to domain 1's vchan (ref, port) and
// runs mode: "duplex N" (see duplex; prints "done <sent> <recv>") or
// "stream" (writes stream 2 until it fails). Args: dir ref port mode [N].
// childClient opens domain 2 of the host in dir and connects, as client,
// to the ring domain 1 serves at refPort ([ring-ref, port], decimal).
func childClient(dir string, refPort []string) (*Backend, *vchan.Endpoint, error) {
	v, err := atoiArgs(refPort)
	if err != nil {
		return nil, nil, err
	}
	b, err := Open(dir, 2)
	if err != nil {
		return nil, nil, err
	}
	e, err := vchan.NewClient(b, 1, uint32(v[0]), uint32(v[1]))
	if err != nil {
		b.Close()
		return nil, nil, err
	}
	return b, e, nil
}

func childRingClient(args []string) error {
	if len(args) < 4 {
		return fmt.Errorf("args %q", args)
	}
	b, e, err := childClient(args[0], args[1:3])
	if err != nil {
		return err
	}
	defer b.Close()
	defer e.Close()
	fmt.Println("ready")
	return childRun(e, args[3:])
}

// childRingServer: domain 2 serves a vchan to domain 1, prints
// "ready <ref> <port>", waits for the client and runs mode as
// childRingClient. Args: dir size mode [N].
func childRingServer(args []string) error {
	if len(args) < 3 {
		return fmt.Errorf("args %q", args)
	}
	size, err := strconv.Atoi(args[1])
	if err != nil {
		return err
	}
	b, err := Open(args[0], 2)
	if err != nil {
		return err
	}
	defer b.Close()
	e, err := vchan.NewServer(b, 1, size, size)
	if err != nil {
		return err
	}
	defer e.Close()
	fmt.Println("ready", e.RingRef(), e.Port())
	return childRun(e, args[2:])
}

func childRun(e *vchan.Endpoint, mode []string) error {
	switch mode[0] {
	case "duplex":
		n, err := strconv.ParseInt(mode[1], 10, 64)
		if err != nil {
			return err
		}
		sent, recv, err := duplex(e, n, 2)
		if err != nil {
			return err
		}
		fmt.Println("done", hex.EncodeToString(sent), hex.EncodeToString(recv))
		io.Copy(io.Discard, os.Stdin) // until the parent is done
		return nil
	case "stream":
		g := newStream(2)
		buf := make([]byte, 256<<10)
		for {
			g.fill(buf)
			if _, err := e.Write(buf); err != nil {
				return nil // the parent hung up
			}
		}
	}
	return fmt.Errorf("mode %q", mode)
}

// line waits for the child's next output line.
func (c *child) line(t testing.TB, d time.Duration) []string {
	t.Helper()
	ch := make(chan []string, 1)
	go func() {
		if c.lines.Scan() {
			ch <- splitFields(c.lines.Text())
		}
		close(ch)
	}()
	select {
	case f, ok := <-ch:
		if !ok {
			t.Fatal("child exited without a line")
		}
		return f
	case <-time.After(d):
		t.Fatalf("no line from child within %v", d)
	}
	return nil
}

func splitFields(s string) []string { return strings.Fields(s) }

func TestCrossProcessDuplex(t *testing.T) {
	n := int64(256 << 20)
	if testing.Short() {
		n = 16 << 20
	}
	for _, size := range []int{1 << 20, 4096} {
		t.Run(fmt.Sprintf("ring%d", size), func(t *testing.T) {
			if size < 1<<20 {
				n = min(n, 16<<20) // small rings: many events, keep it short
			}
			dir := hostDir(t)
			be := openDom(t, dir, 1)
			srv, err := vchan.NewServer(be, 2, size, size)
			if err != nil {
				t.Fatal(err)
			}
			defer srv.Close()
			c, _ := startChild(t, "ring-client", dir, fmt.Sprint(srv.RingRef()), fmt.Sprint(srv.Port()), "duplex", fmt.Sprint(n))
			start := time.Now()
			sent, recv, err := duplex(srv, n, 1)
			if err != nil {
				t.Fatal(err)
			}
			el := time.Since(start)
			f := c.line(t, 30*time.Second)
			if len(f) != 3 || f[0] != "done" {
				t.Fatalf("child said %q", f)
			}
			if f[1] != hex.EncodeToString(recv) {
				t.Errorf("child sent %s, parent received %x", f[1], recv)
			}
			if f[2] != hex.EncodeToString(sent) {
				t.Errorf("parent sent %x, child received %s", sent, f[2])
			}
			t.Logf("%d MiB each way in %v (%.0f MiB/s each way)", n>>20, el, float64(n>>20)/el.Seconds())
		})
	}
}

// readAfterKill reads e until it ends, checking the data against stream 2,
// after having killed the child once at least `before` bytes arrived. It
// returns the error that ended the stream and how long after the kill.
func readAfterKill(t *testing.T, e *vchan.Endpoint, c *child, before int64) (error, time.Duration) {
	t.Helper()
	g := newStream(2)
	buf := make([]byte, 128<<10)
	var got int64
	var killed time.Time
	for {
		if killed.IsZero() && got >= before {
			c.kill(t)
			killed = time.Now()
		}
		if !killed.IsZero() {
			e.SetReadDeadline(killed.Add(3 * time.Second))
		}
		n, err := e.Read(buf)
		if cerr := g.check(buf[:n]); cerr != nil {
			t.Fatalf("after %d bytes: %v", got, cerr)
		}
		got += int64(n)
		if err != nil {
			if killed.IsZero() {
				t.Fatalf("read ended before the kill, after %d bytes: %v", got, err)
			}
			t.Logf("%d bytes, then %v, %v after the kill", got, err, time.Since(killed))
			return err, time.Since(killed)
		}
	}
}

func TestCrossProcessKillClient(t *testing.T) {
	dir := hostDir(t)
	be := openDom(t, dir, 1)
	srv, err := vchan.NewServer(be, 2, 1<<20, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	c, _ := startChild(t, "ring-client", dir, fmt.Sprint(srv.RingRef()), fmt.Sprint(srv.Port()), "stream")
	err, after := readAfterKill(t, srv, c, 8<<20)
	if !errors.Is(err, io.EOF) {
		t.Fatalf("Read after the client died: %v, want io.EOF", err)
	}
	if after > 2*time.Second {
		t.Errorf("EOF %v after the kill", after)
	}
	if _, err := srv.Write([]byte("x")); !errors.Is(err, vchan.ErrPeerClosed) {
		t.Errorf("Write to a dead client: %v, want ErrPeerClosed", err)
	}
}

func TestCrossProcessKillServer(t *testing.T) {
	dir := hostDir(t)
	be := openDom(t, dir, 1)
	c, f := startChild(t, "ring-server", dir, fmt.Sprint(1<<16), "stream")
	v, err := atoiArgs(f)
	if err != nil || len(v) != 2 {
		t.Fatalf("child said %q", f)
	}
	cli, err := vchan.NewClient(be, 2, uint32(v[0]), uint32(v[1]))
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	err, after := readAfterKill(t, cli, c, 4<<20)
	if !errors.Is(err, io.EOF) {
		t.Fatalf("Read after the server died: %v, want io.EOF", err)
	}
	if after > 2*time.Second {
		t.Errorf("EOF %v after the kill", after)
	}
}

func TestStreamGenerator(t *testing.T) {
	a, b := newStream(5), newStream(5)
	buf := make([]byte, 3*genBlock+17)
	a.fill(buf)
	// Checking in odd pieces agrees with filling in one go.
	for p := buf; len(p) > 0; {
		k := min(len(p), 1000)
		if err := b.check(p[:k]); err != nil {
			t.Fatal(err)
		}
		p = p[k:]
	}
	if bytes.Equal(buf[:genBlock], buf[genBlock:2*genBlock]) {
		t.Error("consecutive blocks are equal")
	}
	buf[genBlock+3] ^= 1
	if err := newStream(5).check(buf); err == nil {
		t.Error("a flipped bit went unnoticed")
	}
}
