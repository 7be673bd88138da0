// Command fuseping is the measuring half of the FUSE data-path benchmark
// (test/bench/fuse_bench.sh). It times one-byte round trips through a pair of
// files, and both round trips and bulk throughput through a Unix socket pair,
// the baseline that needs no FUSE at all.
//
// Usage:
//
//	fuseping ping  (-rw PATH | -w PATH -r PATH) [-n N] [-warmup N]
//	fuseping echo  (-rw PATH | -r PATH -w PATH)
//	fuseping unix  [-n N] [-mb M]
//
// ping writes one byte, waits for it to come back, and repeats; it prints
// "rtt_us avg=… p50=… p99=… n=…". echo copies every byte it reads back to
// where it came from until EOF; it runs as its own process on the other side
// of the connection. -rw opens one file read-write (an idcfs connection file);
// -r and -w open two files (the relay's channels). unix runs both measurements
// over socketpair(2) with the echo and sink in a child process and prints
// "rtt_us …" and "bulk_MBps=…".
//
// The files of idcfs and of the relay do not support poll, so everything here
// is plain blocking I/O.
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"syscall"
	"time"
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "fuseping:", err)
		os.Exit(1)
	}
}

const usage = `usage:
  fuseping ping  (-rw PATH | -w PATH -r PATH) [-n N] [-warmup N]
  fuseping echo  (-rw PATH | -r PATH -w PATH)
  fuseping unix  [-n N] [-mb M]`

func run(args []string) error {
	if len(args) == 0 {
		return errors.New(usage)
	}
	cmd, args := args[0], args[1:]
	fset := flag.NewFlagSet("fuseping "+cmd, flag.ContinueOnError)
	rw := fset.String("rw", "", "one file opened read-write")
	rpath := fset.String("r", "", "file to read from")
	wpath := fset.String("w", "", "file to write to")
	n := fset.Int("n", 2000, "round trips")
	warmup := fset.Int("warmup", 50, "round trips before measuring")
	mb := fset.Int("mb", 1024, "MiB for the bulk measurement")
	fd := fset.Int("fd", -1, "inherited descriptor (internal: the unix child)")
	if err := fset.Parse(args); err != nil {
		return err
	}
	switch cmd {
	case "ping":
		r, w, err := openPair(*rw, *rpath, *wpath, true)
		if err != nil {
			return err
		}
		defer r.Close()
		defer w.Close()
		return ping(r, w, *n, *warmup)
	case "echo":
		r, w, err := openPair(*rw, *rpath, *wpath, false)
		if err != nil {
			return err
		}
		defer r.Close()
		defer w.Close()
		return echo(r, w)
	case "unix":
		return unixBaseline(*n, *warmup, *mb)
	case "child-echo", "child-sink":
		if *fd < 0 {
			return errors.New("internal command needs -fd")
		}
		f := os.NewFile(uintptr(*fd), "socket")
		defer f.Close()
		if cmd == "child-echo" {
			return echo(f, f)
		}
		_, err := io.CopyBuffer(io.Discard, f, make([]byte, 1<<20))
		return err
	}
	return errors.New(usage)
}

// openPair opens the files to use. With -rw one descriptor serves both
// directions. The pinger opens its write side first and the echo its read
// side first, so that two FIFO-like files never wait for each other.
func openPair(rw, rpath, wpath string, writerFirst bool) (r, w *os.File, err error) {
	if rw != "" {
		f, err := os.OpenFile(rw, os.O_RDWR, 0)
		if err != nil {
			return nil, nil, err
		}
		return f, f, nil
	}
	if rpath == "" || wpath == "" {
		return nil, nil, errors.New("need -rw, or both -r and -w")
	}
	openR := func() (err error) { r, err = os.Open(rpath); return err }
	openW := func() (err error) { w, err = os.OpenFile(wpath, os.O_WRONLY, 0); return err }
	first, second := openR, openW
	if writerFirst {
		first, second = openW, openR
	}
	if err := first(); err != nil {
		return nil, nil, err
	}
	if err := second(); err != nil {
		if r != nil {
			r.Close()
		}
		if w != nil {
			w.Close()
		}
		return nil, nil, err
	}
	return r, w, nil
}

func ping(r io.Reader, w io.Writer, n, warmup int) error {
	if n < 1 {
		return errors.New("-n must be positive")
	}
	samples := make([]time.Duration, 0, n)
	out := []byte{0}
	in := make([]byte, 1)
	for i := 0; i < warmup+n; i++ {
		out[0] = byte(i)
		t0 := time.Now()
		if _, err := w.Write(out); err != nil {
			return fmt.Errorf("round trip %d: write: %w", i, err)
		}
		if _, err := io.ReadFull(r, in); err != nil {
			return fmt.Errorf("round trip %d: read: %w", i, err)
		}
		d := time.Since(t0)
		if in[0] != out[0] {
			return fmt.Errorf("round trip %d: sent %d, got %d back", i, out[0], in[0])
		}
		if i >= warmup {
			samples = append(samples, d)
		}
	}
	fmt.Println(summary(samples))
	return nil
}

func summary(samples []time.Duration) string {
	var sum time.Duration
	for _, d := range samples {
		sum += d
	}
	slices.Sort(samples)
	us := func(d time.Duration) string {
		return strconv.FormatFloat(float64(d)/float64(time.Microsecond), 'f', 1, 64)
	}
	avg := sum / time.Duration(len(samples))
	return fmt.Sprintf("rtt_us avg=%s p50=%s p99=%s n=%d", us(avg),
		us(samples[len(samples)/2]), us(samples[len(samples)*99/100]), len(samples))
}

func echo(r io.Reader, w io.Writer) error {
	buf := make([]byte, 64<<10)
	for {
		k, err := r.Read(buf)
		if k > 0 {
			if _, werr := w.Write(buf[:k]); werr != nil {
				return werr
			}
		}
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
	}
}

// unixBaseline measures round trips and throughput over socketpair(2), with
// the far end in a child process like the far end of a FUSE file.
func unixBaseline(n, warmup, mb int) error {
	for _, mode := range []string{"child-echo", "child-sink"} {
		fds, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
		if err != nil {
			return err
		}
		mine := os.NewFile(uintptr(fds[0]), "socket")
		theirs := os.NewFile(uintptr(fds[1]), "socket")
		self, err := os.Executable()
		if err != nil {
			return err
		}
		child := exec.Command(self, mode, "-fd", "3")
		child.ExtraFiles = []*os.File{theirs}
		child.Stderr = os.Stderr
		if err := child.Start(); err != nil {
			return err
		}
		theirs.Close()
		switch mode {
		case "child-echo":
			err = ping(mine, mine, n, warmup)
		case "child-sink":
			err = bulk(mine, mb)
		}
		mine.Close()
		if werr := child.Wait(); err == nil && werr != nil {
			err = fmt.Errorf("%s: %w", mode, werr)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// bulk writes mb MiB in 1 MiB blocks and times it until the reader has
// drained everything (its exit follows the EOF, so the caller's Wait covers
// the tail; the figure here stops at the last write plus shutdown).
func bulk(w *os.File, mb int) error {
	block := make([]byte, 1<<20)
	t0 := time.Now()
	for i := 0; i < mb; i++ {
		if _, err := w.Write(block); err != nil {
			return err
		}
	}
	if err := syscall.Shutdown(int(w.Fd()), syscall.SHUT_WR); err != nil {
		return err
	}
	// Wait for the reader to close its end: a read returns EOF then.
	if _, err := w.Read(make([]byte, 1)); err != nil && !errors.Is(err, io.EOF) {
		return err
	}
	secs := time.Since(t0).Seconds()
	fmt.Printf("bulk_MBps=%.0f bytes=%d secs=%.3f\n", float64(mb)*(1<<20)/secs/1e6, int64(mb)<<20, secs)
	return nil
}
