package vchan_test

import (
	"context"
	"testing"
	"time"
)

// BenchmarkRing streams 64 KiB writes from a client goroutine to a server
// goroutine through rings of 4 KiB, 64 KiB and 1 MiB, and times a plain
// copy() of the same bytes in the same run as the baseline: the x-copy
// metric is ring time per byte divided by copy time per byte.
func BenchmarkRing(b *testing.B) {
	const chunk = 64 << 10
	for _, rs := range []struct {
		name string
		size int
	}{{"4KiB", 4 << 10}, {"64KiB", 64 << 10}, {"1MiB", 1 << 20}} {
		b.Run("ring="+rs.name, func(b *testing.B) {
			_, srv, cli := pair(b, rs.size, rs.size)
			src := make([]byte, chunk)
			fill(src, 0)
			dst := make([]byte, chunk)

			// Baseline: the same bytes moved by one copy().
			start := time.Now()
			for range b.N {
				copy(dst, src)
			}
			copyTime := time.Since(start)

			ctx := context.Background()
			done := make(chan error, 1)
			b.SetBytes(chunk)
			b.ReportAllocs()
			b.ResetTimer()
			start = time.Now()
			go func() {
				want := b.N * chunk
				for got := 0; got < want; {
					n, err := srv.ReadContext(ctx, dst)
					if err != nil {
						done <- err
						return
					}
					got += n
				}
				done <- nil
			}()
			for range b.N {
				if _, err := cli.WriteContext(ctx, src); err != nil {
					b.Fatal(err)
				}
			}
			if err := <-done; err != nil {
				b.Fatal(err)
			}
			ringTime := time.Since(start)
			b.StopTimer()
			if copyTime > 0 {
				b.ReportMetric(float64(ringTime)/float64(copyTime), "x-copy")
			}
			b.ReportMetric(float64(b.N)*chunk/copyTime.Seconds()/1e6, "copy-MB/s")
		})
	}
}
