package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"io"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sirupsen/logrus"

	"idcfs/vchan"
	"idcfs/vchan/heap"
)

func TestParseVchanArgs(t *testing.T) {
	for _, tc := range []struct {
		name string
		args []string
		ok   bool
		want vchanOptions
	}{
		{"listen defaults", []string{"listen"}, true, vchanOptions{listen: true, linger: 2 * time.Second, chunkSize: 64 << 10}},
		{"connect", []string{"connect", "--domid", "3", "--path", "/a/b"}, true,
			vchanOptions{peer: 3, path: "/a/b", linger: 2 * time.Second, chunkSize: 64 << 10}},
		{"ring sizes", []string{"listen", "--read-min", "65536", "--write-min", "4096", "--keep-open"}, true,
			vchanOptions{listen: true, readMin: 65536, writeMin: 4096, keepOpen: true, linger: 2 * time.Second, chunkSize: 64 << 10}},
		{"no mode", nil, false, vchanOptions{}},
		{"bad mode", []string{"serve"}, false, vchanOptions{}},
		{"reserved domid", []string{"connect", "--domid", "32752"}, false, vchanOptions{}},
		{"ring too big", []string{"listen", "--read-min", "2097152"}, false, vchanOptions{}},
		{"negative ring", []string{"listen", "--write-min", "-1"}, false, vchanOptions{}},
		{"ring sizes on connect", []string{"connect", "--read-min", "4096"}, false, vchanOptions{}},
		{"relative path", []string{"connect", "--path", "data/x"}, false, vchanOptions{}},
		{"extra argument", []string{"listen", "x"}, false, vchanOptions{}},
		{"zero chunk", []string{"listen", "--chunk", "0"}, false, vchanOptions{}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o, err := parseVchanArgs(tc.args, io.Discard)
			if !tc.ok {
				if exitCode(err) != ExitUsage {
					t.Fatalf("got %v (exit %d), want a usage error", err, exitCode(err))
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if *o != tc.want {
				t.Errorf("got %+v\nwant %+v", *o, tc.want)
			}
		})
	}
}

func TestDefaultVchanPath(t *testing.T) {
	if got := defaultVchanPath(true, 0, 5); got != "/local/domain/0/data/vchan/5/idcfs" {
		t.Errorf("listen: %s", got)
	}
	if got := defaultVchanPath(false, 5, 0); got != "/local/domain/0/data/vchan/5/idcfs" {
		t.Errorf("connect: %s", got)
	}
}

func testLog(t *testing.T) *logrus.Entry {
	l := logrus.New()
	l.SetOutput(io.Discard)
	if testing.Verbose() {
		l.SetOutput(tWriter{t})
		l.SetLevel(logrus.DebugLevel)
	}
	return logrus.NewEntry(l)
}

type tWriter struct{ t *testing.T }

func (w tWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSuffix(string(p), "\n"))
	return len(p), nil
}

// syncBuffer is a bytes.Buffer safe for the copying goroutine and the test.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func newSyncBuffer() *syncBuffer { return &syncBuffer{} }

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) Bytes() []byte {
	b.mu.Lock()
	defer b.mu.Unlock()
	return bytes.Clone(b.buf.Bytes())
}

// Both roles, each direction, over the in-process heap backend: the sender
// ends at end of input, the receiver (--keep-open, empty input) when the
// sender closed; every byte arrives.
func TestVchanSessionCopies(t *testing.T) {
	data := make([]byte, 3<<20+123)
	for i := range data {
		data[i] = byte(i*7 + i>>10)
	}
	for _, tc := range []struct {
		name       string
		listenSend bool
		readMin    int
		linger     time.Duration // the sender's: wait for the peer to read (Flush)
	}{
		{"listen sends, default rings", true, 0, 0},
		{"connect sends, default rings", false, 0, 0},
		{"listen sends, 64KiB rings", true, 64 << 10, 0},
		{"connect sends, 64KiB rings", false, 64 << 10, 0},
		{"listen sends and waits for the reader", true, 64 << 10, 10 * time.Second},
		{"connect sends and waits for the reader", false, 64 << 10, 10 * time.Second},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := heap.New()
			st := heap.NewStore()
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			const path = "/local/domain/1/data/vchan/2/idcfs"
			// As test/xen runs it: the sender does not linger, the
			// receiver keeps the default linger and --keep-open.
			lo := &vchanOptions{listen: true, peer: 2, path: path, readMin: tc.readMin, writeMin: tc.readMin, linger: 2 * time.Second, chunkSize: 65536}
			co := &vchanOptions{peer: 1, path: path, linger: 2 * time.Second, chunkSize: 65536}
			lin, cin := io.Reader(bytes.NewReader(nil)), io.Reader(bytes.NewReader(nil))
			if tc.listenSend {
				lin, co.keepOpen, lo.linger = bytes.NewReader(data), true, tc.linger
			} else {
				cin, lo.keepOpen, co.linger = bytes.NewReader(data), true, tc.linger
			}
			lout, cout := newSyncBuffer(), newSyncBuffer()
			// A peer check that never fires: the session must still end
			// (its watcher stops with the session).
			alive := func(context.Context) bool { return false }
			errc := make(chan error, 2)
			start := time.Now()
			go func() {
				errc <- vchanSession(ctx, lo, h.Domain(1), st, alive, lin, lout, testLog(t).WithField("side", "listen"))
			}()
			go func() {
				errc <- vchanSession(ctx, co, h.Domain(2), st, alive, cin, cout, testLog(t).WithField("side", "connect"))
			}()
			for range 2 {
				if err := <-errc; err != nil {
					t.Errorf("session: %v", err)
				}
			}
			if d := time.Since(start); d > 20*time.Second {
				t.Errorf("sessions took %v to end", d)
			}
			got, other := cout.Bytes(), lout.Bytes()
			if !tc.listenSend {
				got, other = other, got
			}
			if sha256.Sum256(got) != sha256.Sum256(data) {
				t.Errorf("received %d bytes, sent %d; contents differ", len(got), len(data))
			}
			if len(other) != 0 {
				t.Errorf("%d bytes came back the other way", len(other))
			}
			if st.Len() != 0 {
				t.Errorf("%d paths left in the store after close", st.Len())
			}
		})
	}
}

// A client with nothing to connect to waits until its timeout.
func TestVchanConnectTimeout(t *testing.T) {
	h := heap.New()
	o := &vchanOptions{peer: 1, path: "/nowhere", timeout: 300 * time.Millisecond, linger: time.Second, chunkSize: 4096}
	start := time.Now()
	_, err := vchanEndpoint(context.Background(), o, h.Domain(2), heap.NewStore(), testLog(t))
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("got %v, want a deadline error", err)
	}
	if d := time.Since(start); d < 250*time.Millisecond || d > 10*time.Second {
		t.Errorf("gave up after %v", d)
	}
}

// A peer whose domain disappears (no close, no event) ends the session
// with an error once the store says so.
func TestVchanPeerGone(t *testing.T) {
	h := heap.New()
	st := heap.NewStore()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	const path = "/p"
	srv, err := vchan.Listen(ctx, h.Domain(1), st, 2, path, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close() // never closed by the "dead" peer before the check
	goneNow := make(chan struct{})
	check := func(context.Context) bool {
		select {
		case <-goneNow:
			return true
		default:
			return false
		}
	}
	o := &vchanOptions{peer: 1, path: path, keepOpen: true, linger: time.Second, chunkSize: 4096}
	errc := make(chan error, 1)
	go func() {
		errc <- vchanSession(ctx, o, h.Domain(2), st, check, bytes.NewReader(nil), io.Discard, testLog(t))
	}()
	if err := srv.WaitConnected(ctx); err != nil {
		t.Fatal(err)
	}
	close(goneNow)
	select {
	case err := <-errc:
		if !errors.Is(err, vchan.ErrPeerClosed) || !strings.Contains(err.Error(), "domain 1 is gone") {
			t.Errorf("got %v, want the peer reported gone", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("session did not notice the peer was gone")
	}
}
