package linkmgr

import (
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"idcfs/vchan"
)

// grantBudget is a backend whose Share fails with ENOSPC once the pages it
// has shared and not yet closed would exceed a budget, as Xen's gntalloc
// device does at its domain-wide limit.
type grantBudget struct {
	vchan.Backend
	mu     sync.Mutex
	used   int
	budget int
}

func (g *grantBudget) Share(peer vchan.DomID, npages int) (vchan.Mapping, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.used+npages > g.budget {
		return nil, fmt.Errorf("share of %d pages with %d of %d in use: %w", npages, g.used, g.budget, syscall.ENOSPC)
	}
	m, err := g.Backend.Share(peer, npages)
	if err != nil {
		return nil, err
	}
	g.used += npages
	return &budgetMapping{Mapping: m, g: g, n: npages}, nil
}

func (g *grantBudget) inUse() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.used
}

type budgetMapping struct {
	vchan.Mapping
	g    *grantBudget
	n    int
	once sync.Once
}

func (m *budgetMapping) Close() error {
	m.once.Do(func() {
		m.g.mu.Lock()
		m.g.used -= m.n
		m.g.mu.Unlock()
	})
	return m.Mapping.Close()
}

// TestRingFallback: a server out of pages for its configured ring size
// serves the link with smaller rings, halving down to one page each way; a
// domain with no room even for that gets ErrUnreachable. Every link that
// came up carries data.
func TestRingFallback(t *testing.T) {
	checkLeaks(t)
	const rs = 128 << 10 // 32 pages a ring: 65 pages a link with the control page
	h := newTestHost(t, []vchan.DomID{1, 2, 3, 4, 5})
	// 65 (dom 2, full size) + 33 (dom 3, 64 KiB rings) + 3 (dom 4, one page
	// each way) = 101; dom 5 finds 1 page left.
	g := &grantBudget{Backend: h.heap.Domain(1), budget: 101}
	m1 := h.manager(1, func(c *Config) { c.Backend = g; c.RingSize = rs })
	ln, err := m1.Listen(7, 0)
	if err != nil {
		t.Fatal(err)
	}
	ctx := testCtx(t, 20*time.Second)
	tests := []struct {
		dom  vchan.DomID
		ring int // 0: no link
		used int // pages shared by dom 1 after this link
	}{
		{dom: 2, ring: rs, used: 65},
		{dom: 3, ring: rs / 2, used: 98},
		{dom: 4, ring: MinFallbackRingSize, used: 101},
		{dom: 5, ring: 0, used: 101},
	}
	for _, tc := range tests {
		m := h.manager(tc.dom, func(c *Config) { c.RingSize = rs; c.ConnectTimeout = 2 * time.Second })
		if tc.ring == 0 {
			// Dom 1 dialing learns at once that it cannot serve the ring;
			// so does a client dialing dom 1, which dom 1 tells why (it
			// would otherwise ask until its Dial timed out).
			if _, err := m.Listen(7, 0); err != nil {
				t.Fatal(err)
			}
			if c, err := m1.Dial(ctx, tc.dom, 7); !errors.Is(err, ErrUnreachable) {
				t.Errorf("dom 1 to dom %d: Dial error %v, want ErrUnreachable", tc.dom, err)
				if c != nil {
					c.Close()
				}
			}
			c, err := m.Dial(ctx, 1, 7)
			if !errors.Is(err, ErrUnreachable) || !strings.Contains(err.Error(), "no room to share ring pages") {
				t.Errorf("dom %d to dom 1: Dial error %v, want ErrUnreachable with dom 1's reason", tc.dom, err)
			}
			if c != nil {
				c.Close()
			}
		} else {
			c, err := m.Dial(ctx, 1, 7)
			if err != nil {
				t.Fatalf("dom %d: Dial: %v", tc.dom, err)
			}
			s, err := ln.Accept(ctx)
			if err != nil {
				t.Fatalf("dom %d: Accept: %v", tc.dom, err)
			}
			// More than a small ring holds: the data must wrap round it.
			msg := make([]byte, 3*tc.ring+17)
			for i := range msg {
				msg[i] = byte(i*7 + int(tc.dom))
			}
			go func() {
				c.Write(msg)
				c.CloseWrite()
			}()
			got, err := io.ReadAll(s)
			if err != nil || string(got) != string(msg) {
				t.Errorf("dom %d: read %d of %d bytes intact=%v, err %v", tc.dom, len(got), len(msg), string(got) == string(msg), err)
			}
			c.Close()
			s.Close()
		}
		var li *LinkInfo
		for _, x := range m1.Links() {
			if x.Peer == tc.dom && x.State == "up" {
				li = &x
			}
		}
		switch {
		case tc.ring == 0 && li != nil:
			t.Errorf("dom %d: link up with rings of %d/%d bytes, want none", tc.dom, li.ReadRing, li.WriteRing)
		case tc.ring != 0 && li == nil:
			t.Errorf("dom %d: no link up", tc.dom)
		case tc.ring != 0 && (li.ReadRing != tc.ring || li.WriteRing != tc.ring):
			t.Errorf("dom %d: rings of %d/%d bytes, want %d", tc.dom, li.ReadRing, li.WriteRing, tc.ring)
		}
		if u := g.inUse(); u != tc.used {
			t.Errorf("after dom %d: %d pages shared, want %d", tc.dom, u, tc.used)
		}
	}
	if !h.logw.has("trying a smaller one") {
		t.Error("no warning logged for the fallback")
	}
}

// A peer's refusal reason is shown only as printable ASCII, cut to
// maxRefusal bytes.
func TestCleanRefusal(t *testing.T) {
	long := strings.Repeat("x", 3*maxRefusal)
	tests := []struct{ in, want string }{
		{"no room", "no room"},
		{"", ""},
		{"bell\a and\nnewline\x00", "bell andnewline"},
		{"ünïcode", "ncode"},
		{"\x1b[31mred\x1b[0m", "[31mred[0m"},
		{long, long[:maxRefusal]},
	}
	for _, tc := range tests {
		if got := cleanRefusal(tc.in); got != tc.want {
			t.Errorf("cleanRefusal(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

// FuzzCleanRefusal: whatever a peer writes, what is shown is printable
// ASCII of at most maxRefusal bytes, and clean input passes unchanged.
func FuzzCleanRefusal(f *testing.F) {
	f.Add("no room to share ring pages (ENOSPC)")
	f.Add("\x00\xff\n\x1b")
	f.Fuzz(func(t *testing.T, in string) {
		out := cleanRefusal(in)
		if len(out) > maxRefusal {
			t.Fatalf("%d bytes out", len(out))
		}
		for i := 0; i < len(out); i++ {
			if out[i] < ' ' || out[i] > '~' {
				t.Fatalf("byte %#x at %d", out[i], i)
			}
		}
		if cleanRefusal(out) != out {
			t.Fatalf("not idempotent: %q", out)
		}
	})
}
