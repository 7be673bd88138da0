//go:build linux

package shm

import (
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"testing"

	"golang.org/x/sys/unix"

	"idcfs/vchan"
)

// Cross-process benchmarks: the vchan ring on this backend beside a Unix
// socket pair and a pair of pipes, each between this process and a child
// (the test binary re-executed as "bench-peer"), with the same payloads.
// test/bench/shm-bench.sh runs them and prints the ratios.

func init() { childRoles["bench-peer"] = childBenchPeer }

const benchChunk = 1 << 20 // bytes per Write in the throughput benchmark

// Commands to the bench peer: op byte + u64 count.
const (
	benchSink = 'S' // read count bytes, then answer one byte
	benchPing = 'P' // count times: read one byte, answer one byte
	benchQuit = 'Q'
)

// childBenchPeer serves bench commands over a transport. Args: "ring dir
// ref port" (vchan client of domain 1), "unix" (socket on fd 3) or "pipe"
// (read fd 3, write fd 4).
func childBenchPeer(args []string) error {
	var rw io.ReadWriter
	switch args[0] {
	case "ring":
		b, e, err := childClient(args[1], args[2:4])
		if err != nil {
			return err
		}
		defer b.Close()
		defer e.Close()
		rw = e
	case "unix":
		c, err := net.FileConn(os.NewFile(3, "sock"))
		if err != nil {
			return err
		}
		defer c.Close()
		rw = c
	case "pipe":
		// Non-blocking, so that the files use the runtime poller as the
		// parent's os.Pipe ends do.
		for _, fd := range []int{3, 4} {
			if err := unix.SetNonblock(fd, true); err != nil {
				return err
			}
		}
		r, w := os.NewFile(3, "rpipe"), os.NewFile(4, "wpipe")
		defer r.Close()
		defer w.Close()
		rw = struct {
			io.Reader
			io.Writer
		}{r, w}
	default:
		return fmt.Errorf("transport %q", args[0])
	}
	fmt.Println("ready")
	buf := make([]byte, benchChunk)
	var cmd [9]byte
	for {
		if _, err := io.ReadFull(rw, cmd[:]); err != nil {
			return nil // parent hung up
		}
		n := binary.LittleEndian.Uint64(cmd[1:])
		switch cmd[0] {
		case benchSink:
			if _, err := io.CopyBuffer(io.Discard, io.LimitReader(rw, int64(n)), buf); err != nil {
				return err
			}
			if _, err := rw.Write(buf[:1]); err != nil {
				return err
			}
		case benchPing:
			for range n {
				if _, err := io.ReadFull(rw, buf[:1]); err != nil {
					return err
				}
				if _, err := rw.Write(buf[:1]); err != nil {
					return err
				}
			}
		case benchQuit:
			return nil
		default:
			return fmt.Errorf("bench command %q", cmd[0])
		}
	}
}

// benchPeer starts a bench peer over transport ("ring", "unix", "pipe";
// ringSize for "ring") and returns this side of the transport.
func benchPeer(b *testing.B, transport string, ringSize int) io.ReadWriter {
	b.Helper()
	switch transport {
	case "ring":
		dir := hostDir(b)
		be := openDom(b, dir, 1)
		srv, err := vchan.NewServer(be, 2, ringSize, ringSize)
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { srv.Close() })
		startChild(b, "bench-peer", "ring", dir, strconv.Itoa(int(srv.RingRef())), strconv.Itoa(int(srv.Port())))
		if err := srv.WaitConnected(b.Context()); err != nil {
			b.Fatal(err)
		}
		return srv
	case "unix":
		fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			b.Fatal(err)
		}
		mine, theirs := os.NewFile(uintptr(fds[0]), "sock"), os.NewFile(uintptr(fds[1]), "sock")
		c, err := net.FileConn(mine)
		mine.Close()
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { c.Close() })
		startChildFiles(b, []*os.File{theirs}, "bench-peer", "unix")
		theirs.Close()
		return c
	case "pipe":
		cr, pw, err := os.Pipe() // parent -> child
		if err != nil {
			b.Fatal(err)
		}
		pr, cw, err := os.Pipe() // child -> parent
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { pw.Close(); pr.Close() })
		startChildFiles(b, []*os.File{cr, cw}, "bench-peer", "pipe")
		cr.Close()
		cw.Close()
		return struct {
			io.Reader
			io.Writer
		}{pr, pw}
	}
	b.Fatalf("transport %q", transport)
	return nil
}

func sendCmd(b *testing.B, w io.Writer, op byte, n uint64) {
	var cmd [9]byte
	cmd[0] = op
	binary.LittleEndian.PutUint64(cmd[1:], n)
	if _, err := w.Write(cmd[:]); err != nil {
		b.Fatal(err)
	}
}

var benchTransports = []struct {
	name     string
	ringSize int
}{
	{"ring-1MiB", 1 << 20},
	{"ring-64KiB", 64 << 10},
	{"unix", 0},
	{"pipe", 0},
}

func transportOf(name string) string {
	if name[:4] == "ring" {
		return "ring"
	}
	return name
}

// BenchmarkCrossProcessThroughput: 1 MiB writes from this process, read
// by the child in 1 MiB reads; the clock stops at the child's answer after
// the last byte.
func BenchmarkCrossProcessThroughput(b *testing.B) {
	for _, tr := range benchTransports {
		b.Run(tr.name, func(b *testing.B) {
			rw := benchPeer(b, transportOf(tr.name), tr.ringSize)
			buf := make([]byte, benchChunk)
			for i := range buf {
				buf[i] = byte(i * 7)
			}
			b.SetBytes(benchChunk)
			b.ReportAllocs()
			b.ResetTimer()
			sendCmd(b, rw, benchSink, uint64(b.N)*benchChunk)
			for range b.N {
				if _, err := rw.Write(buf); err != nil {
					b.Fatal(err)
				}
			}
			if _, err := io.ReadFull(rw, buf[:1]); err != nil {
				b.Fatal(err)
			}
			b.StopTimer()
			sendCmd(b, rw, benchQuit, 0)
		})
	}
}

// BenchmarkCrossProcessRTT: one byte to the child and one byte back.
func BenchmarkCrossProcessRTT(b *testing.B) {
	for _, tr := range benchTransports {
		if tr.name == "ring-64KiB" {
			continue // ring size does not matter for one byte
		}
		b.Run(tr.name, func(b *testing.B) {
			rw := benchPeer(b, transportOf(tr.name), tr.ringSize)
			var one [1]byte
			b.ReportAllocs()
			b.ResetTimer()
			sendCmd(b, rw, benchPing, uint64(b.N))
			for range b.N {
				if _, err := rw.Write(one[:]); err != nil {
					b.Fatal(err)
				}
				if _, err := io.ReadFull(rw, one[:]); err != nil {
					b.Fatal(err)
				}
			}
			b.StopTimer()
			sendCmd(b, rw, benchQuit, 0)
		})
	}
}
