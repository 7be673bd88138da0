package xenstored

import (
	"errors"
	"fmt"
	"net"
	"runtime"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sirupsen/logrus"

	"idcfs/linkmgr/xenstore"
)

type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

func newTestServer(t *testing.T) *Server {
	t.Helper()
	before := runtime.NumGoroutine()
	l := logrus.New()
	l.SetOutput(testWriter{t})
	s := New(logrus.NewEntry(l))
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("close: %v", err)
		}
		deadline := time.Now().Add(3 * time.Second)
		for runtime.NumGoroutine() > before {
			if time.Now().After(deadline) {
				t.Errorf("goroutine leak: %d before, %d after", before, runtime.NumGoroutine())
				return
			}
			time.Sleep(10 * time.Millisecond)
		}
	})
	return s
}

// raw is a test client that speaks bytes to one server connection.
type raw struct {
	t      *testing.T
	c      net.Conn
	id     uint32
	events []xenstore.Event
}

func dialRaw(t *testing.T, s *Server, dom uint32) *raw {
	t.Helper()
	a, b := net.Pipe()
	if !s.startConn(b, dom) {
		t.Fatal("server closed")
	}
	t.Cleanup(func() { a.Close() })
	return &raw{t: t, c: a}
}

func (r *raw) sendRaw(b []byte) {
	r.t.Helper()
	r.c.SetWriteDeadline(time.Now().Add(5 * time.Second))
	if _, err := r.c.Write(b); err != nil {
		r.t.Fatalf("write: %v", err)
	}
}

func (r *raw) read() (*xenstore.Message, error) {
	r.c.SetReadDeadline(time.Now().Add(5 * time.Second))
	return xenstore.ReadMessage(r.c, xenstore.MaxPayload)
}

// do sends one request and returns its reply, keeping watch events that
// arrive meanwhile in r.events.
func (r *raw) do(op xenstore.Op, txID uint32, payload string) *xenstore.Message {
	r.t.Helper()
	r.id++
	b, err := (&xenstore.Message{Op: op, ReqID: r.id, TxID: txID, Payload: []byte(payload)}).AppendMarshal(nil)
	if err != nil {
		r.t.Fatal(err)
	}
	r.sendRaw(b)
	for {
		m, err := r.read()
		if err != nil {
			r.t.Fatalf("%v: reading reply: %v", op, err)
		}
		if m.Op == xenstore.OpWatchEvent {
			ev, err := xenstore.ParseWatchEvent(m.Payload)
			if err != nil {
				r.t.Fatal(err)
			}
			r.events = append(r.events, ev)
			continue
		}
		if m.ReqID != r.id || m.TxID != txID {
			r.t.Fatalf("reply ids %d/%d, want %d/%d", m.ReqID, m.TxID, r.id, txID)
		}
		if m.Op != op && m.Op != xenstore.OpError {
			r.t.Fatalf("reply type %v to %v", m.Op, op)
		}
		return m
	}
}

// ok runs a request that must succeed and returns the reply payload.
func (r *raw) ok(op xenstore.Op, txID uint32, payload string) string {
	r.t.Helper()
	m := r.do(op, txID, payload)
	if m.Op == xenstore.OpError {
		r.t.Fatalf("%v %q: %q", op, payload, m.Payload)
	}
	return string(m.Payload)
}

// fails runs a request that must fail with errno want.
func (r *raw) fails(want syscall.Errno, op xenstore.Op, txID uint32, payload string) {
	r.t.Helper()
	m := r.do(op, txID, payload)
	if m.Op != xenstore.OpError || string(m.Payload) != xenstore.ErrnoName(want)+"\x00" {
		r.t.Fatalf("%v %q: reply %v %q, want error %s", op, payload, m.Op, m.Payload, xenstore.ErrnoName(want))
	}
}

// takeEvents returns and forgets the events seen so far.
func (r *raw) takeEvents() []xenstore.Event {
	ev := r.events
	r.events = nil
	return ev
}

// checkTree verifies the store's structure: every node but the root has
// its parent, which lists it; every listed child exists; child lists are
// sorted; every node has permissions.
func checkTree(t testing.TB, st *store) {
	t.Helper()
	owners := map[uint32]int{}
	for _, n := range st.nodes {
		owners[n.perms[0].Dom]++
	}
	if fmt.Sprint(owners) != fmt.Sprint(st.owners) {
		t.Fatalf("owner counts %v, recounted %v", st.owners, owners)
	}
	for p, n := range st.nodes {
		if len(n.perms) == 0 {
			t.Fatalf("%s has no permissions", p)
		}
		if !slices.IsSorted(n.children) {
			t.Fatalf("%s: children not sorted: %q", p, n.children)
		}
		for _, c := range n.children {
			if st.nodes[join(p, c)] == nil {
				t.Fatalf("%s lists missing child %q", p, c)
			}
		}
		if p == "/" {
			continue
		}
		parent := st.nodes[parentOf(p)]
		if parent == nil {
			t.Fatalf("%s has no parent", p)
		}
		if _, found := slices.BinarySearch(parent.children, baseOf(p)); !found {
			t.Fatalf("%s is not listed by its parent", p)
		}
	}
}

func isErr(err, target error) bool { return errors.Is(err, target) }
