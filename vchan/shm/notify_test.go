//go:build linux

package shm

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"idcfs/vchan"
)

// Child processes: the test binary re-executed with childEnv naming a role.
const childEnv = "IDCFS_SHM_TEST_CHILD"

var childRoles = map[string]func(args []string) error{
	"client-map":   childClientMap,
	"server-share": childServerShare,
}

func TestMain(m *testing.M) {
	if role := os.Getenv(childEnv); role != "" {
		f := childRoles[role]
		if f == nil {
			fmt.Fprintf(os.Stderr, "unknown child role %q\n", role)
			os.Exit(2)
		}
		if err := f(strings.Fields(os.Getenv(childEnv + "_ARGS"))); err != nil {
			fmt.Fprintf(os.Stderr, "child %s: %v\n", role, err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// child is a running child process and the lines it prints.
type child struct {
	cmd   *exec.Cmd
	lines *bufio.Scanner
	stdin io.WriteCloser
}

// startChild runs role with args and returns after its first output line
// (its "ready" line), split into fields.
func startChild(t testing.TB, role string, args ...string) (*child, []string) {
	t.Helper()
	return startChildFiles(t, nil, role, args...)
}

// startChildFiles is startChild that also passes files to the child as
// descriptors 3, 4, ...
func startChildFiles(t testing.TB, files []*os.File, role string, args ...string) (*child, []string) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.ExtraFiles = files
	cmd.Env = append(os.Environ(), childEnv+"="+role, childEnv+"_ARGS="+strings.Join(args, " "))
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	in, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	c := &child{cmd: cmd, lines: bufio.NewScanner(out), stdin: in}
	t.Cleanup(func() {
		in.Close()
		cmd.Process.Kill()
		cmd.Wait()
	})
	line := make(chan []string, 1)
	go func() {
		if c.lines.Scan() {
			line <- strings.Fields(c.lines.Text())
		}
		close(line)
	}()
	select {
	case f, ok := <-line:
		if !ok || len(f) == 0 || f[0] != "ready" {
			t.Fatalf("child %s did not get ready (%q)", role, f)
		}
		return c, f[1:]
	case <-time.After(10 * time.Second):
		t.Fatalf("child %s: no ready line", role)
	}
	return nil, nil
}

// kill SIGKILLs the child and reaps it.
func (c *child) kill(t testing.TB) {
	t.Helper()
	if err := c.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	c.cmd.Wait()
}

func atoiArgs(args []string) ([]uint64, error) {
	var out []uint64
	for _, a := range args {
		v, err := strconv.ParseUint(a, 10, 32)
		if err != nil {
			return nil, err
		}
		out = append(out, v)
	}
	return out, nil
}

// childClientMap: domain 2 binds port P of domain 1, maps ref R read-write,
// asks for an unmap notify on byte 20 (cli_live), sets it to 1 and waits
// until stdin closes. Args: dir P R.
func childClientMap(args []string) error {
	if len(args) != 3 {
		return fmt.Errorf("args %q", args)
	}
	v, err := atoiArgs(args[1:])
	if err != nil {
		return err
	}
	b, err := Open(args[0], 2)
	if err != nil {
		return err
	}
	ch, err := b.Bind(1, uint32(v[0]))
	if err != nil {
		return err
	}
	m, err := b.Map(1, []uint32{uint32(v[1])}, true)
	if err != nil {
		return err
	}
	if err := m.SetUnmapNotify(20, ch); err != nil {
		return err
	}
	m.Bytes()[20] = 1
	fmt.Println("ready")
	io.Copy(io.Discard, os.Stdin)
	return b.Close()
}

// childServerShare: domain 2 allocates an unbound port for domain 1,
// shares one page with it, asks for an unmap notify on byte 21 (srv_live),
// sets it to 1, prints the ref and port and waits until stdin closes.
// Args: dir.
func childServerShare(args []string) error {
	if len(args) != 1 {
		return fmt.Errorf("args %q", args)
	}
	b, err := Open(args[0], 2)
	if err != nil {
		return err
	}
	ch, err := b.AllocUnbound(1)
	if err != nil {
		return err
	}
	m, err := b.Share(1, 1)
	if err != nil {
		return err
	}
	if err := m.SetUnmapNotify(21, ch); err != nil {
		return err
	}
	m.Bytes()[21] = 1
	fmt.Println("ready", m.Refs()[0], ch.Port())
	io.Copy(io.Discard, os.Stdin)
	return b.Close()
}

// waitByte polls until mem[off] == want or d passes.
func waitByte(mem []byte, off int, want byte, d time.Duration) bool {
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		if mem[off] == want {
			return true
		}
		time.Sleep(time.Millisecond)
	}
	return mem[off] == want
}

// notifyPair sets up what libxenvchan does: the server shares the control
// page with a notify on byte 21, the client maps it with one on byte 20.
func notifyPair(t *testing.T) (sh, mp vchan.Mapping, s, c vchan.EventChannel) {
	dir := hostDir(t)
	srv, cli := openDom(t, dir, 1), openDom(t, dir, 2)
	s, err := srv.AllocUnbound(2)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	sh, err = srv.Share(2, 2)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sh.Close() })
	// The control page is the second page here, to check offsets past
	// the first page.
	const base = vchan.PageSize
	if err := sh.SetUnmapNotify(base+21, s); err != nil {
		t.Fatal(err)
	}
	sh.Bytes()[base+20], sh.Bytes()[base+21], sh.Bytes()[base+22] = 2, 1, 1
	c, err = cli.Bind(1, s.Port())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	mp, err = cli.Map(1, sh.Refs(), true)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { mp.Close() })
	if err := mp.SetUnmapNotify(base+20, c); err != nil {
		t.Fatal(err)
	}
	mp.Bytes()[base+20] = 1
	drain(t, c)
	return sh, mp, s, c
}

func TestUnmapNotifyOnClose(t *testing.T) {
	const base = vchan.PageSize
	t.Run("client closes", func(t *testing.T) {
		sh, mp, s, _ := notifyPair(t)
		if err := mp.Close(); err != nil {
			t.Fatal(err)
		}
		waitEvent(t, s, 2*time.Second)
		if got := sh.Bytes()[base+20]; got != 0 {
			t.Fatalf("cli_live %d after client unmap, want 0", got)
		}
		if sh.Bytes()[base+21] != 1 || sh.Bytes()[base+22] != 1 {
			t.Fatal("neighbouring bytes changed")
		}
	})
	t.Run("server closes", func(t *testing.T) {
		sh, mp, _, c := notifyPair(t)
		if err := sh.Close(); err != nil {
			t.Fatal(err)
		}
		waitEvent(t, c, 2*time.Second)
		if got := mp.Bytes()[base+21]; got != 0 {
			t.Fatalf("srv_live %d after server unmap, want 0", got)
		}
	})
	t.Run("channel closed before the mapping", func(t *testing.T) {
		// libxenvchan may close the event channel first; the notify
		// keeps the port until it fires, as the kernel does.
		sh, mp, s, c := notifyPair(t)
		c.Close()
		noEvent(t, s, 20*time.Millisecond)
		mp.Close()
		waitEvent(t, s, 2*time.Second)
		if got := sh.Bytes()[base+20]; got != 0 {
			t.Fatalf("cli_live %d, want 0", got)
		}
	})
	t.Run("replaced notify", func(t *testing.T) {
		sh, mp, s, c := notifyPair(t)
		if err := mp.SetUnmapNotify(base+30, c); err != nil {
			t.Fatal(err)
		}
		sh.Bytes()[base+30] = 9
		mp.Close()
		waitEvent(t, s, 2*time.Second)
		if sh.Bytes()[base+20] != 1 || sh.Bytes()[base+30] != 0 {
			t.Fatalf("bytes 20, 30 = %d, %d; want 1, 0", sh.Bytes()[base+20], sh.Bytes()[base+30])
		}
	})
}

func TestUnmapNotifyErrors(t *testing.T) {
	dir := hostDir(t)
	a, b := openDom(t, dir, 1), openDom(t, dir, 2)
	sh, err := a.Share(2, 1)
	if err != nil {
		t.Fatal(err)
	}
	defer sh.Close()
	ach, _ := a.AllocUnbound(2)
	defer ach.Close()
	bch, _ := b.AllocUnbound(1)
	defer bch.Close()
	ro, err := b.Map(1, sh.Refs(), false)
	if err != nil {
		t.Fatal(err)
	}
	defer ro.Close()
	for _, tc := range []struct {
		name string
		m    vchan.Mapping
		off  int
		ch   vchan.EventChannel
		want error
	}{
		{"negative offset", sh, -1, ach, ErrBadOffset},
		{"offset past end", sh, vchan.PageSize, ach, ErrBadOffset},
		{"other backend's channel", sh, 21, bch, ErrForeignChannel},
		{"read-only mapping", ro, 20, bch, ErrReadOnly},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := tc.m.SetUnmapNotify(tc.off, tc.ch); !errors.Is(err, tc.want) {
				t.Fatalf("SetUnmapNotify: %v, want %v", err, tc.want)
			}
		})
	}
}

func TestUnmapNotifyOnClientDeath(t *testing.T) {
	dir := hostDir(t)
	s, sh := portAndPage(t, dir)
	page := sh.Bytes()
	page[20], page[22] = 2, 1
	ch, _ := startChild(t, "client-map", dir, fmt.Sprint(s.Port()), fmt.Sprint(sh.Refs()[0]))
	if page[20] != 1 {
		t.Fatalf("child's write not seen: cli_live %d", page[20])
	}
	drain(t, s)
	ch.kill(t)
	start := time.Now()
	waitEvent(t, s, 2*time.Second)
	if !waitByte(page, 20, 0, 2*time.Second) {
		t.Fatalf("cli_live %d after client death, want 0", page[20])
	}
	if page[22] != 1 {
		t.Error("neighbouring byte changed")
	}
	t.Logf("death seen after %v", time.Since(start))
	// The port is unbound for domain 2 again: a new incarnation of it
	// can bind (its lock was freed by the kernel at death).
	cli := openDom(t, dir, 2)
	c, err := cli.Bind(1, s.Port())
	if err != nil {
		t.Fatalf("rebind after death: %v", err)
	}
	c.Close()
}

func TestUnmapNotifyOnServerDeath(t *testing.T) {
	dir := hostDir(t)
	cli := openDom(t, dir, 1)
	ch, f := startChild(t, "server-share", dir)
	v, err := atoiArgs(f)
	if err != nil || len(v) != 2 {
		t.Fatalf("child said %q", f)
	}
	c, err := cli.Bind(2, uint32(v[1]))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	mp, err := cli.Map(2, []uint32{uint32(v[0])}, true)
	if err != nil {
		t.Fatal(err)
	}
	defer mp.Close()
	page := mp.Bytes()
	if page[21] != 1 {
		t.Fatalf("srv_live %d, want 1", page[21])
	}
	drain(t, c)
	ch.kill(t)
	waitEvent(t, c, 2*time.Second)
	if !waitByte(page, 21, 0, 2*time.Second) {
		t.Fatalf("srv_live %d after server death, want 0", page[21])
	}
	// Its notifies now go nowhere.
	if err := c.Notify(); err != nil {
		t.Errorf("Notify to a dead peer: %v", err)
	}
}

func TestOrderlyChildExitIsNotDeath(t *testing.T) {
	// A child that closes its Backend clears its byte itself; afterwards
	// the byte stays as the survivor sets it.
	dir := hostDir(t)
	s, sh := portAndPage(t, dir)
	page := sh.Bytes()
	ch, _ := startChild(t, "client-map", dir, fmt.Sprint(s.Port()), fmt.Sprint(sh.Refs()[0]))
	drain(t, s)
	ch.stdin.Close()
	if err := ch.cmd.Wait(); err != nil {
		t.Fatalf("child: %v", err)
	}
	waitEvent(t, s, 2*time.Second)
	if page[20] != 0 {
		t.Fatalf("cli_live %d after orderly close", page[20])
	}

}

func TestStaleFilesOfKilledDomain(t *testing.T) {
	// A killed domain leaves its grant files and listening socket behind.
	// They must not break anything: binding the dead port is refused, and
	// the next incarnation of the domain cleans up and starts afresh.
	dir := hostDir(t)
	other := openDom(t, dir, 1)
	ch, f := startChild(t, "server-share", dir)
	v, err := atoiArgs(f)
	if err != nil || len(v) != 2 {
		t.Fatalf("child said %q", f)
	}
	ref, port := uint32(v[0]), uint32(v[1])
	ch.kill(t)
	sock := filepath.Join(dir, "evtchn", "2", fmt.Sprint(port))
	grant := filepath.Join(dir, "gnt", "2", grantName(ref, 1))
	for _, p := range []string{sock, grant} {
		if _, err := os.Stat(p); err != nil {
			t.Fatalf("expected a leftover %s: %v", p, err)
		}
	}
	if c, err := other.Bind(2, port); !errors.Is(err, ErrNoPort) {
		if c != nil {
			c.Close()
		}
		t.Fatalf("Bind to a dead domain's port: %v, want ErrNoPort", err)
	}
	// Mapping the dead domain's grant still works, as a stale grant on Xen
	// would until the domain is destroyed; the page is the one it left.
	m, err := other.Map(2, []uint32{ref}, true)
	if err != nil {
		t.Fatal(err)
	}
	if m.Bytes()[21] != 1 {
		t.Errorf("stale page byte 21 = %d, want the 1 the dead domain wrote", m.Bytes()[21])
	}
	m.Close()

	again := openDom(t, dir, 2)
	for _, p := range []string{sock, grant} {
		if _, err := os.Stat(p); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("leftover %s survived a new Open: %v", p, err)
		}
	}
	s, err := again.AllocUnbound(1)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	sh, err := again.Share(1, 1)
	if err != nil {
		t.Fatal(err)
	}
	defer sh.Close()
	if s.Port() != port || sh.Refs()[0] != ref {
		t.Errorf("new incarnation got port %d ref %d, want the lowest again (%d, %d)", s.Port(), sh.Refs()[0], port, ref)
	}
	c, err := other.Bind(2, s.Port())
	if err != nil {
		t.Fatalf("Bind to the new incarnation: %v", err)
	}
	c.Close()
}

func TestDeathWhileClosedChannelKeptByNotify(t *testing.T) {
	// libxenvchan may close the event channel before the mapping; the
	// notify keeps the connection up, and a peer that dies in that window
	// still has its notices carried out, though nobody waits any more.
	dir := hostDir(t)
	srv := openDom(t, dir, 1)
	s, err := srv.AllocUnbound(2)
	if err != nil {
		t.Fatal(err)
	}
	sh, err := srv.Share(2, 1)
	if err != nil {
		t.Fatal(err)
	}
	defer sh.Close()
	if err := sh.SetUnmapNotify(21, s); err != nil {
		t.Fatal(err)
	}
	page := sh.Bytes()
	page[20], page[21] = 2, 1
	ch, _ := startChild(t, "client-map", dir, fmt.Sprint(s.Port()), fmt.Sprint(sh.Refs()[0]))
	if page[20] != 1 {
		t.Fatalf("child's write not seen: cli_live %d", page[20])
	}
	drain(t, s)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	ch.kill(t)
	if !waitByte(page, 20, 0, 2*time.Second) {
		t.Fatalf("cli_live %d after the client died, want 0", page[20])
	}
}
