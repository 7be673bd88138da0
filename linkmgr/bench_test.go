package linkmgr

import (
	"context"
	"errors"
	"sort"
	"sync"
	"testing"
	"time"

	"idcfs/proto"
	"idcfs/vchan"
)

// benchBackends are the backends benchmarked: the in-process heap and the
// cross-process shm (used here within one process).
var benchBackends = []string{"heap", "shm"}

// benchPair returns two link managers (dom 1 and dom 2) on the named
// backend and the two backends, for the raw baseline.
func benchPair(b *testing.B, backend string) (m1, m2 *Manager, be1, be2 vchan.Backend) {
	h := newTestHost(b, []vchan.DomID{1, 2})
	switch backend {
	case "heap":
		be1, be2 = h.heap.Domain(1), h.heap.Domain(2)
	case "shm":
		dir := shmDir(b)
		be1, be2 = shmBackend(b, dir, 1), shmBackend(b, dir, 2)
	}
	m1 = h.manager(1, func(c *Config) { c.Backend = be1 })
	m2 = h.manager(2, func(c *Config) { c.Backend = be2 })
	return m1, m2, be1, be2
}

// benchWrite and benchRead are the sizes of the writes and reads of both
// the link and the bare vchan it is compared with.
const (
	benchWrite = 64 << 10
	benchRead  = 256 << 10
)

// rawMove moves total bytes over a fresh bare vchan (same backend, same
// ring size as a link) in benchWrite writes and benchRead reads, and
// returns how long that took.
func rawMove(b *testing.B, be1, be2 vchan.Backend, total int) time.Duration {
	srv, cli := rawPair(b, be1, be2)
	defer srv.Close()
	defer cli.Close()
	start := time.Now()
	go func() {
		buf := make([]byte, benchWrite)
		for sent := 0; sent < total; sent += len(buf) {
			if _, err := srv.Write(buf); err != nil {
				return
			}
		}
	}()
	buf := make([]byte, benchRead)
	for got := 0; got < total; {
		n, err := cli.Read(buf)
		if err != nil {
			b.Fatal(err)
		}
		got += n
	}
	return time.Since(start)
}

// rawPair connects a bare vchan between dom 1 (server, on be1) and dom 2
// (client, on be2) with a link's ring size. The caller closes both.
func rawPair(b *testing.B, be1, be2 vchan.Backend) (srv, cli *vchan.Endpoint) {
	srv, err := vchan.NewServer(be1, 2, DefaultRingSize, DefaultRingSize)
	if err != nil {
		b.Fatal(err)
	}
	cli, err = vchan.NewClient(be2, 1, srv.RingRef(), srv.Port())
	if err != nil {
		srv.Close()
		b.Fatal(err)
	}
	if err := srv.WaitConnected(context.Background()); err != nil {
		srv.Close()
		cli.Close()
		b.Fatal(err)
	}
	return srv, cli
}

// streams is a set of established connections of one link, with their
// buffers, reused for every transfer.
type streams struct {
	c, s []*Conn
	wbuf [][]byte
	rbuf [][]byte
}

func openStreams(b *testing.B, dialer *Manager, ln *Listener, peer vchan.DomID, conns int) *streams {
	st := &streams{}
	ctx := context.Background()
	for range conns {
		c, err := dialer.Dial(ctx, peer, ln.Port())
		if err != nil {
			b.Fatal(err)
		}
		s, err := ln.Accept(ctx)
		if err != nil {
			b.Fatal(err)
		}
		st.c, st.s = append(st.c, c), append(st.s, s)
		st.wbuf = append(st.wbuf, make([]byte, benchWrite))
		st.rbuf = append(st.rbuf, make([]byte, benchRead))
	}
	b.Cleanup(func() {
		for i := range st.c {
			st.c[i].Close()
			st.s[i].Close()
		}
	})
	return st
}

// move sends total bytes split over the connections and waits until all
// arrived.
func (st *streams) move(b *testing.B, total int) {
	per := total / len(st.c)
	var wg sync.WaitGroup
	for i := range st.c {
		c, s, wbuf, rbuf := st.c[i], st.s[i], st.wbuf[i], st.rbuf[i]
		wg.Add(2)
		go func() {
			defer wg.Done()
			for sent := 0; sent < per; {
				n := min(len(wbuf), per-sent)
				if _, err := c.Write(wbuf[:n]); err != nil {
					b.Error(err)
					return
				}
				sent += n
			}
		}()
		go func() {
			defer wg.Done()
			for got := 0; got < per; {
				n, err := s.Read(rbuf)
				if err != nil {
					b.Errorf("received %d of %d: %v", got, per, err)
					return
				}
				got += n
			}
		}()
	}
	wg.Wait()
}

// BenchmarkThroughput reports link throughput with one and with 64
// connections as a ratio to a bare vchan's throughput on the same backend
// and ring size, with the same write and read sizes. The two are measured
// alternately in the same run: x-raw is the median of the per-iteration
// ratios, x-raw-best the best link run against the best bare run. ns/op
// and MB/s are the link's alone. Both domains run in this process; see
// BenchmarkCrossProcessThroughput for one process per domain.
func BenchmarkThroughput(b *testing.B) {
	const total = 64 << 20
	for _, backend := range benchBackends {
		for _, conns := range []int{1, 64} {
			b.Run(backend+"/conns="+itoa(vchan.DomID(conns)), func(b *testing.B) {
				m1, m2, be1, be2 := benchPair(b, backend)
				ln, err := m1.Listen(1, 128)
				if err != nil {
					b.Fatal(err)
				}
				st := openStreams(b, m2, ln, 1, conns)
				st.move(b, 1<<20) // warm up
				compareThroughput(b, total, func() time.Duration {
					return rawMove(b, be1, be2, total)
				}, func() time.Duration {
					start := time.Now()
					st.move(b, total)
					return time.Since(start)
				})
			})
		}
	}
}

// compareThroughput runs the benchmark loop of the throughput benchmarks:
// each iteration moves total bytes through the bare vchan (raw, untimed)
// and then through the link (link, timed), and reports x-raw (the median
// of the per-iteration ratios: each shares the load of its moment),
// x-raw-best (the best of each kind: load only ever makes a run slower) and
// both best throughputs.
func compareThroughput(b *testing.B, total int, raw, link func() time.Duration) {
	var rawBest, linkBest time.Duration
	var ratios []float64
	b.SetBytes(int64(total))
	b.ResetTimer()
	for b.Loop() {
		b.StopTimer()
		r := raw()
		b.StartTimer()
		l := link()
		ratios = append(ratios, float64(r)/float64(l))
		if rawBest == 0 || r < rawBest {
			rawBest = r
		}
		if linkBest == 0 || l < linkBest {
			linkBest = l
		}
	}
	sort.Float64s(ratios)
	b.ReportMetric(ratios[len(ratios)/2], "x-raw")
	b.ReportMetric(float64(rawBest)/float64(linkBest), "x-raw-best")
	b.ReportMetric(float64(total)/rawBest.Seconds()/1e6, "raw-MB/s")
	b.ReportMetric(float64(total)/linkBest.Seconds()/1e6, "best-MB/s")
}

// BenchmarkConnect measures opening a connection (Dial, Accept, then Close
// on both ends) on a link that is up, and on a fresh link set up for that
// connection, alternately in the same run. ns/op is one of each; the
// metrics are the best time of each kind and their ratio ("x-existing":
// how many times a fresh link costs more than an existing one).
func BenchmarkConnect(b *testing.B) {
	for _, backend := range benchBackends {
		b.Run(backend, func(b *testing.B) {
			m1, m2, _, _ := benchPair(b, backend)
			ln, _ := m1.Listen(1, 0)
			ctx := context.Background()
			connect := func() time.Duration {
				start := time.Now()
				c, err := m2.Dial(ctx, 1, 1)
				if err != nil {
					b.Fatal(err)
				}
				s, err := ln.Accept(ctx)
				if err != nil {
					b.Fatal(err)
				}
				d := time.Since(start)
				c.Close()
				s.Close()
				return d
			}
			connect()
			var existing, fresh time.Duration
			b.ReportAllocs()
			for b.Loop() {
				if d := connect(); existing == 0 || d < existing {
					existing = d
				}
				b.StopTimer()
				dropLinks(b, m1, m2)
				b.StartTimer()
				if d := connect(); fresh == 0 || d < fresh {
					fresh = d
				}
			}
			b.ReportMetric(float64(existing.Microseconds()), "existing-µs")
			b.ReportMetric(float64(fresh.Microseconds()), "fresh-µs")
			b.ReportMetric(float64(fresh)/float64(existing), "x-existing")
		})
	}
}

// dropLinks tears down every link of the managers and waits until both
// sides forgot them.
func dropLinks(tb testing.TB, ms ...*Manager) {
	for _, m := range ms {
		for _, l := range *m.links.Load() {
			l.fail(errors.New("dropped by the benchmark"), proto.ReasonIdle, true)
		}
	}
	deadline := time.Now().Add(10 * time.Second)
	for _, m := range ms {
		for len(m.Links()) != 0 {
			if time.Now().After(deadline) {
				tb.Fatal("links not torn down")
			}
			time.Sleep(time.Millisecond)
		}
	}
}
