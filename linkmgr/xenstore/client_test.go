package xenstore_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"idcfs/linkmgr/xenstore"
)

func TestReadWrite(t *testing.T) {
	e := newEnv(t)
	c, ctx := e.priv, ctxT(t)
	tests := []struct {
		name, path, value string
	}{
		{"simple", e.p("a"), "hello"},
		{"empty value", e.p("empty"), ""},
		{"missing parents", e.p("x/y/z"), "deep"},
		{"binary value", e.p("bin"), "a\x00b\xff\n"},
		{"overwrite", e.p("a"), "again"},
		{"longest value", e.p("big"), strings.Repeat("v", xenstore.MaxPayload-len(e.p("big"))-1)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := c.Write(ctx, tt.path, tt.value); err != nil {
				t.Fatalf("write: %v", err)
			}
			got, err := c.Read(ctx, tt.path)
			if err != nil {
				t.Fatalf("read: %v", err)
			}
			if got != tt.value {
				t.Fatalf("read %q, want %q", got, tt.value)
			}
		})
	}
	// Implicitly created parents exist with empty values.
	if v, err := c.Read(ctx, e.p("x/y")); err != nil || v != "" {
		t.Fatalf("parent: %q, %v", v, err)
	}
}

func TestRelativePathIsHome(t *testing.T) {
	e := newEnv(t)
	ctx := ctxT(t)
	// A dom0 connection's home is /local/domain/0, whose domid node holds 0.
	v, err := e.priv.Read(ctx, "domid")
	if err != nil || v != "0" {
		t.Fatalf("read domid = %q, %v; want \"0\"", v, err)
	}
}

func TestErrors(t *testing.T) {
	e := newEnv(t)
	c, ctx := e.priv, ctxT(t)
	if err := c.Write(ctx, e.p("f"), "1"); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		do   func() error
		want syscall.Errno
	}{
		{"read missing", func() error { _, err := c.Read(ctx, e.p("nope")); return err }, syscall.ENOENT},
		{"directory missing", func() error { _, err := c.Directory(ctx, e.p("nope")); return err }, syscall.ENOENT},
		{"perms missing", func() error { _, err := c.GetPerms(ctx, e.p("nope")); return err }, syscall.ENOENT},
		{"set perms missing", func() error { return c.SetPerms(ctx, e.p("nope"), []xenstore.Perm{{Dom: 0}}) }, syscall.ENOENT},
		{"rm without parent", func() error { return c.Rm(ctx, e.p("nope/child")) }, syscall.ENOENT},
		{"double slash", func() error { _, err := c.Read(ctx, e.base+"//f"); return err }, syscall.EINVAL},
		{"trailing slash", func() error { _, err := c.Read(ctx, e.p("f/")); return err }, syscall.EINVAL},
		{"bad character", func() error { return c.Write(ctx, e.p("a b"), "x") }, syscall.EINVAL},
		{"empty path", func() error { _, err := c.Read(ctx, ""); return err }, syscall.EINVAL},
		{"NUL in path", func() error { _, err := c.Read(ctx, e.p("a\x00b")); return err }, syscall.EINVAL},
		{"special path read", func() error { _, err := c.Read(ctx, xenstore.ReleaseDomain); return err }, syscall.EINVAL},
		{"get perms on @releaseDomain", func() error { _, err := c.GetPerms(ctx, xenstore.ReleaseDomain); return err }, syscall.EINVAL},
		{"payload too large", func() error { return c.Write(ctx, e.p("big"), strings.Repeat("v", xenstore.MaxPayload)) }, syscall.E2BIG},
		{"path too long", func() error { _, err := c.Read(ctx, "/"+strings.Repeat("a", xenstore.MaxAbsPath)); return err }, syscall.EINVAL},
		{"empty perm list", func() error { return c.SetPerms(ctx, e.p("f"), nil) }, syscall.EINVAL},
		{"domain path out of range", func() error { _, err := c.GetDomainPath(ctx, 1<<20); return err }, syscall.EINVAL},
	}
	if !e.real() {
		// Never sent to a real store: if it disagreed it would lose its tree.
		tests = append(tests, struct {
			name string
			do   func() error
			want syscall.Errno
		}{"rm root", func() error { return c.Rm(ctx, "/") }, syscall.EINVAL})
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			mustErrno(t, tt.do(), tt.want)
		})
	}
	// The error carries the operation and path.
	_, err := c.Read(ctx, e.p("nope"))
	var xe *xenstore.Error
	if !errors.As(err, &xe) || xe.Op != "read" || xe.Path != e.p("nope") || xe.Name != "ENOENT" {
		t.Fatalf("error %#v", err)
	}
}

func TestMkdirRmDirectory(t *testing.T) {
	e := newEnv(t)
	c, ctx := e.priv, ctxT(t)
	for _, p := range []string{"d", "d/b", "d/a", "d/c/deep"} {
		if err := c.Mkdir(ctx, e.p(p)); err != nil {
			t.Fatalf("mkdir %s: %v", p, err)
		}
	}
	// Mkdir of an existing node succeeds and keeps its value.
	if err := c.Write(ctx, e.p("d/a"), "keep"); err != nil {
		t.Fatal(err)
	}
	if err := c.Mkdir(ctx, e.p("d/a")); err != nil {
		t.Fatalf("mkdir existing: %v", err)
	}
	if v, _ := c.Read(ctx, e.p("d/a")); v != "keep" {
		t.Fatalf("mkdir changed the value to %q", v)
	}
	names, err := c.Directory(ctx, e.p("d"))
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(names)
	if !slices.Equal(names, []string{"a", "b", "c"}) {
		t.Fatalf("directory = %q", names)
	}
	if names, err := c.Directory(ctx, e.p("d/b")); err != nil || len(names) != 0 {
		t.Fatalf("empty directory = %q, %v", names, err)
	}
	// Rm removes the whole subtree.
	if err := c.Rm(ctx, e.p("d/c")); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Read(ctx, e.p("d/c/deep")); !errors.Is(err, syscall.ENOENT) {
		t.Fatalf("read after rm: %v", err)
	}
	// Rm of a missing node whose parent exists succeeds.
	if err := c.Rm(ctx, e.p("d/never")); err != nil {
		t.Fatalf("rm missing: %v", err)
	}
	names, _ = c.Directory(ctx, e.p("d"))
	slices.Sort(names)
	if !slices.Equal(names, []string{"a", "b"}) {
		t.Fatalf("directory after rm = %q", names)
	}
}

func TestPermsRoundTrip(t *testing.T) {
	e := newEnv(t)
	c, ctx := e.priv, ctxT(t)
	if err := c.Write(ctx, e.p("n"), "v"); err != nil {
		t.Fatal(err)
	}
	perms, err := c.GetPerms(ctx, e.p("n"))
	if err != nil || len(perms) == 0 {
		t.Fatalf("get perms: %v %v", perms, err)
	}
	if perms[0].Dom != 0 {
		t.Fatalf("node created by dom0 owned by %v", perms[0])
	}
	want := []xenstore.Perm{{Dom: 0}, {Dom: 0, Read: true}}
	if !e.real() {
		e.domain(5)
		e.domain(6)
		want = []xenstore.Perm{{Dom: 0}, {Dom: 5, Read: true}, {Dom: 6, Read: true, Write: true}}
	}
	if err := c.SetPerms(ctx, e.p("n"), want); err != nil {
		t.Fatal(err)
	}
	got, err := c.GetPerms(ctx, e.p("n"))
	if err != nil || !slices.Equal(got, want) {
		t.Fatalf("perms = %v, %v; want %v", got, err, want)
	}
	// Children inherit the parent's list.
	if err := c.Write(ctx, e.p("n/child"), "v"); err != nil {
		t.Fatal(err)
	}
	if got, _ := c.GetPerms(ctx, e.p("n/child")); !slices.Equal(got, want) {
		t.Fatalf("inherited perms = %v; want %v", got, want)
	}
}

func TestGetDomainPath(t *testing.T) {
	e := newEnv(t)
	ctx := ctxT(t)
	for _, dom := range []uint32{0, 5, 32752, 65535} {
		got, err := e.priv.GetDomainPath(ctx, dom)
		if want := fmt.Sprintf("/local/domain/%d", dom); err != nil || got != want {
			t.Fatalf("GetDomainPath(%d) = %q, %v; want %q", dom, got, err, want)
		}
	}
}

// TestConcurrentRequests runs 50 goroutines doing 100 write+read pairs each
// on one connection and checks that every reply reached its own request.
// It detects hangs; it is not a speed test. The time allowed comes from
// hangLimit, measured on the host, because a store may serve a connection
// one request at a time: xenstored reads at most one message per connection
// in each round of its poll loop, so pipelining does not make the pairs
// faster than a single round trip each.
func TestConcurrentRequests(t *testing.T) {
	e := newEnv(t)
	c := e.priv
	const workers, ops = 50, 100
	limit := hangLimit(t, c, e.p("probe"), workers*ops)
	ctx, cancel := context.WithTimeout(context.Background(), limit)
	defer cancel()
	start := time.Now()
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for g := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range ops {
				p := e.p(fmt.Sprintf("g%d/k%d", g, i%10))
				want := fmt.Sprintf("g%d-op%d", g, i)
				if err := c.Write(ctx, p, want); err != nil {
					errs <- err
					return
				}
				got, err := c.Read(ctx, p)
				if err != nil {
					errs <- err
					return
				}
				if got != want {
					errs <- fmt.Errorf("read %s = %q, want %q: reply matched to the wrong request", p, got, want)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if ctx.Err() != nil {
		t.Fatalf("the pairs did not finish within the hang limit %v", limit)
	}
	names, err := c.Directory(ctx, e.base)
	if err != nil || len(names) != workers {
		t.Fatalf("directory has %d entries (%v), want %d", len(names), err, workers)
	}
	t.Logf("%d write+read pairs in %v (limit %v)", workers*ops, time.Since(start).Round(time.Millisecond), limit)
}

// hangLimit returns how long pairs write+read pairs on c may take before a
// test calls them hung: 15 s, plus four times pairs times the median of 20
// single write+read round trips on path (which it then removes), that is
// four times as long as running every pair one after another. It is capped
// 10 s before the test binary's deadline (-test.timeout), so that a slow host
// gets a failure naming the limit rather than a panic.
func hangLimit(t *testing.T, c *xenstore.Client, path string, pairs int) time.Duration {
	t.Helper()
	ctx := ctxT(t)
	rtts := make([]time.Duration, 20)
	for i := range rtts {
		start := time.Now()
		if err := c.Write(ctx, path, strconv.Itoa(i)); err != nil {
			t.Fatal(err)
		}
		if _, err := c.Read(ctx, path); err != nil {
			t.Fatal(err)
		}
		rtts[i] = time.Since(start)
	}
	if err := c.Rm(ctx, path); err != nil {
		t.Fatal(err)
	}
	slices.Sort(rtts)
	median := rtts[len(rtts)/2]
	limit := 15*time.Second + 4*time.Duration(pairs)*median
	if deadline, ok := t.Deadline(); ok {
		if left := time.Until(deadline) - 10*time.Second; left > 0 && left < limit {
			limit = left
		}
	}
	t.Logf("write+read round trip: median %v of %d; hang limit for %d pairs: %v", median, len(rtts), pairs, limit.Round(time.Millisecond))
	return limit
}

// TestDirectoryLarge lists a directory whose names do not fit in one reply:
// the client falls back to DIRECTORY_PART.
func TestDirectoryLarge(t *testing.T) {
	e := newEnv(t)
	c, ctx := e.priv, ctxT(t)
	var want []string
	err := c.Transaction(ctx, func(tx *xenstore.Tx) error {
		want = want[:0]
		for i := range 300 {
			name := fmt.Sprintf("a-rather-long-child-name-%04d", i)
			want = append(want, name)
			if err := tx.Mkdir(ctx, e.p("big/"+name)); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	got, err := c.Directory(ctx, e.p("big"))
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(got)
	if !slices.Equal(got, want) {
		t.Fatalf("listed %d names, want %d", len(got), len(want))
	}
}
