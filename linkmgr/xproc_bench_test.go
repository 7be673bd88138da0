package linkmgr

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sirupsen/logrus"

	"idcfs/linkmgr/xenstore"
	"idcfs/vchan"
	"idcfs/vchan/shm"
)

// benchChildEnv names, in the environment of the test binary re-executed by
// BenchmarkCrossProcessThroughput, the Xenstore socket of dom 1 and the shm
// host directory: the binary then runs dom 1 (benchChild) instead of tests.
const benchChildEnv = "IDCFS_LINKMGR_BENCH_DOM1"

func TestMain(m *testing.M) {
	if args := os.Getenv(benchChildEnv); args != "" {
		if err := benchChild(strings.Fields(args), os.Stdin, os.Stdout); err != nil {
			fmt.Fprintln(os.Stderr, "bench dom 1:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// benchChild is domain 1 of BenchmarkCrossProcessThroughput, in a process
// of its own as a domain is: a link manager listening on port 1 and a bare
// vchan server with a link's ring size. It prints "ready RINGREF PORT" (the
// bare vchan's), then obeys one command per line, answering each when done:
//
//	accept K   accept K connections on port 1 (answer "ok")
//	raw N      read N bytes from the bare vchan (answer "done")
//	link N     read N/K bytes from each accepted connection at once ("done")
func benchChild(args []string, in io.Reader, out io.Writer) error {
	if len(args) != 2 {
		return fmt.Errorf("want XENSTORE-SOCKET SHM-DIR, got %q", args)
	}
	xs, err := xenstore.Dial(args[0])
	if err != nil {
		return err
	}
	defer xs.Close()
	be, err := shm.Open(args[1], 1)
	if err != nil {
		return err
	}
	defer be.Close()
	log := logrus.New()
	log.Out = os.Stderr
	log.Level = logrus.WarnLevel
	ctx := context.Background()
	m, err := New(ctx, Config{Self: 1, Backend: be, Xenstore: xs, Log: logrus.NewEntry(log)})
	if err != nil {
		return err
	}
	defer m.Close()
	ln, err := m.Listen(1, 128)
	if err != nil {
		return err
	}
	raw, err := vchan.NewServer(be, 2, DefaultRingSize, DefaultRingSize)
	if err != nil {
		return err
	}
	defer raw.Close()
	fmt.Fprintf(out, "ready %d %d\n", raw.RingRef(), raw.Port())
	var conns []*Conn
	rawUp := false
	buf := make([]byte, benchRead)
	lines := bufio.NewScanner(in)
	for lines.Scan() {
		f := strings.Fields(lines.Text())
		if len(f) != 2 {
			return fmt.Errorf("bad command %q", lines.Text())
		}
		n, err := strconv.Atoi(f[1])
		if err != nil {
			return fmt.Errorf("bad command %q", lines.Text())
		}
		switch f[0] {
		case "accept":
			for range n {
				c, err := ln.Accept(ctx)
				if err != nil {
					return err
				}
				conns = append(conns, c)
			}
			fmt.Fprintln(out, "ok")
		case "raw":
			if !rawUp {
				wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
				err := raw.WaitConnected(wctx)
				cancel()
				if err != nil {
					return err
				}
				rawUp = true
			}
			for got := 0; got < n; {
				k, err := raw.Read(buf)
				if err != nil {
					return fmt.Errorf("raw read after %d of %d bytes: %w", got, n, err)
				}
				got += k
			}
			fmt.Fprintln(out, "done")
		case "link":
			if err := readConns(conns, n); err != nil {
				return err
			}
			fmt.Fprintln(out, "done")
		default:
			return fmt.Errorf("bad command %q", lines.Text())
		}
	}
	return lines.Err()
}

// readConns reads total/len(conns) bytes from each connection at once.
func readConns(conns []*Conn, total int) error {
	if len(conns) == 0 {
		return fmt.Errorf("no connections accepted")
	}
	per := total / len(conns)
	errs := make(chan error, len(conns))
	for _, c := range conns {
		go func() {
			buf := make([]byte, benchRead)
			for got := 0; got < per; {
				k, err := c.Read(buf)
				if err != nil {
					errs <- fmt.Errorf("link read after %d of %d bytes: %w", got, per, err)
					return
				}
				got += k
			}
			errs <- nil
		}()
	}
	var first error
	for range conns {
		if err := <-errs; err != nil && first == nil {
			first = err
		}
	}
	return first
}

// benchDom1 is the running dom 1 process.
type benchDom1 struct {
	in    io.WriteCloser
	lines *bufio.Scanner
}

func (d *benchDom1) do(tb testing.TB, cmd string, want string) {
	if _, err := fmt.Fprintln(d.in, cmd); err != nil {
		tb.Fatalf("dom 1: %s: %v", cmd, err)
	}
	if !d.lines.Scan() || d.lines.Text() != want {
		tb.Fatalf("dom 1: %s: answer %q (want %q), %v", cmd, d.lines.Text(), want, d.lines.Err())
	}
}

// startBenchDom1 runs dom 1 in a child process and returns it with the
// ring reference and event port of its bare vchan server.
func startBenchDom1(tb testing.TB, h *testHost, dir string) (*benchDom1, uint32, uint32) {
	cmd := exec.Command(os.Args[0], "-test.run=^$", "-test.bench=^$")
	cmd.Env = append(os.Environ(), benchChildEnv+"="+filepath.Join(h.dir, "1")+" "+dir)
	cmd.Stderr = os.Stderr
	in, err := cmd.StdinPipe()
	if err != nil {
		tb.Fatal(err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		tb.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		in.Close()
		done := make(chan struct{})
		go func() { cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			cmd.Process.Kill()
			<-done
		}
	})
	d := &benchDom1{in: in, lines: bufio.NewScanner(out)}
	ready := make(chan []string, 1)
	go func() {
		if d.lines.Scan() {
			ready <- strings.Fields(d.lines.Text())
		}
		close(ready)
	}()
	var f []string
	select {
	case f = <-ready:
	case <-time.After(20 * time.Second):
		cmd.Process.Kill()
		tb.Fatal("dom 1 did not get ready")
	}
	if len(f) != 3 || f[0] != "ready" {
		tb.Fatalf("dom 1: %q instead of a ready line", f)
	}
	ref, err1 := strconv.ParseUint(f[1], 10, 32)
	port, err2 := strconv.ParseUint(f[2], 10, 32)
	if err1 != nil || err2 != nil {
		tb.Fatalf("dom 1: bad ready line %q", f)
	}
	return d, uint32(ref), uint32(port)
}

// BenchmarkCrossProcessThroughput is BenchmarkThroughput with each domain
// in its own process, as domains are: this process is dom 2 and writes,
// a child is dom 1 and reads, over the shm backend. Each iteration moves
// 64 MiB through a bare vchan (same ring size, write and read sizes) and
// then through the link, and takes the ratio of the two; x-raw is the
// median of those ratios, x-raw-best the ratio of the fastest of each.
func BenchmarkCrossProcessThroughput(b *testing.B) {
	const total = 64 << 20
	for _, conns := range []int{1, 64} {
		b.Run("shm/conns="+strconv.Itoa(conns), func(b *testing.B) {
			h := newTestHost(b, []vchan.DomID{1, 2})
			dir := shmDir(b)
			dom1, ref, port := startBenchDom1(b, h, dir)
			be2 := shmBackend(b, dir, 2)
			m2 := h.manager(2, func(c *Config) { c.Backend = be2 })
			raw, err := vchan.NewClient(be2, 1, ref, port)
			if err != nil {
				b.Fatal(err)
			}
			defer raw.Close()
			ctx := context.Background()
			var cs []*Conn
			for range conns {
				c, err := m2.Dial(ctx, 1, 1)
				if err != nil {
					b.Fatal(err)
				}
				defer c.Close()
				cs = append(cs, c)
			}
			dom1.do(b, "accept "+strconv.Itoa(conns), "ok")
			wbuf := make([]byte, benchWrite)
			moveRaw := func(n int) time.Duration {
				start := time.Now()
				fmt.Fprintln(dom1.in, "raw", n)
				for sent := 0; sent < n; sent += len(wbuf) {
					if _, err := raw.Write(wbuf[:min(len(wbuf), n-sent)]); err != nil {
						b.Fatal(err)
					}
				}
				if !dom1.lines.Scan() || dom1.lines.Text() != "done" {
					b.Fatalf("dom 1: raw: %q, %v", dom1.lines.Text(), dom1.lines.Err())
				}
				return time.Since(start)
			}
			moveLink := func(n int) time.Duration {
				start := time.Now()
				fmt.Fprintln(dom1.in, "link", n)
				per := n / len(cs)
				var wg sync.WaitGroup
				for _, c := range cs {
					wg.Add(1)
					go func() {
						defer wg.Done()
						buf := make([]byte, benchWrite)
						for sent := 0; sent < per; sent += len(buf) {
							if _, err := c.Write(buf[:min(len(buf), per-sent)]); err != nil {
								b.Error(err)
								return
							}
						}
					}()
				}
				wg.Wait()
				if !dom1.lines.Scan() || dom1.lines.Text() != "done" {
					b.Fatalf("dom 1: link: %q, %v", dom1.lines.Text(), dom1.lines.Err())
				}
				return time.Since(start)
			}
			moveRaw(1 << 20) // warm up
			moveLink(1 << 20)
			compareThroughput(b, total, func() time.Duration { return moveRaw(total) }, func() time.Duration { return moveLink(total) })
		})
	}
}
