package linkmgr

import (
	"io"
	"testing"
	"time"
)

// pingPong bounces one byte n times between a and b (b echoes) and returns
// the time per round trip.
func pingPong(tb testing.TB, a, b io.ReadWriter, n int) time.Duration {
	done := make(chan error, 1)
	go func() {
		var one [1]byte
		for range n {
			if _, err := io.ReadFull(b, one[:]); err != nil {
				done <- err
				return
			}
			if _, err := b.Write(one[:]); err != nil {
				done <- err
				return
			}
		}
		done <- nil
	}()
	var one [1]byte
	start := time.Now()
	for range n {
		if _, err := a.Write(one[:]); err != nil {
			tb.Fatal(err)
		}
		if _, err := io.ReadFull(a, one[:]); err != nil {
			tb.Fatal(err)
		}
	}
	d := time.Since(start)
	if err := <-done; err != nil {
		tb.Fatal(err)
	}
	return d / time.Duration(n)
}

// BenchmarkRoundTrip measures a one-byte round trip on a connection of a
// link beside one on a bare vchan of the same backend and ring size,
// alternately in the same run. ns/op is the link's; "x-raw" is the ratio
// of the best link round trip to the best raw one.
func BenchmarkRoundTrip(b *testing.B) {
	const batch = 2000
	for _, backend := range benchBackends {
		b.Run(backend, func(b *testing.B) {
			m1, m2, be1, be2 := benchPair(b, backend)
			ln, err := m1.Listen(1, 0)
			if err != nil {
				b.Fatal(err)
			}
			st := openStreams(b, m2, ln, 1, 1)
			srv, cli := rawPair(b, be1, be2)
			defer srv.Close()
			defer cli.Close()
			pingPong(b, st.c[0], st.s[0], 100)
			pingPong(b, cli, srv, 100)
			var rawBest, linkBest time.Duration
			for b.Loop() {
				if d := pingPong(b, cli, srv, batch); rawBest == 0 || d < rawBest {
					rawBest = d
				}
				if d := pingPong(b, st.c[0], st.s[0], batch); linkBest == 0 || d < linkBest {
					linkBest = d
				}
			}
			b.ReportMetric(float64(linkBest.Nanoseconds())/1e3, "link-µs")
			b.ReportMetric(float64(rawBest.Nanoseconds())/1e3, "raw-µs")
			b.ReportMetric(float64(linkBest)/float64(rawBest), "x-raw")
		})
	}
}
