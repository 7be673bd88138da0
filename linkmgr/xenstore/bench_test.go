package xenstore_test

import (
	"context"
	"fmt"
	"path/filepath"
	"sync"
	"testing"

	"idcfs/linkmgr/xenstore"
	"idcfs/linkmgr/xenstored"
)

func BenchmarkCodec(b *testing.B) {
	for _, size := range []int{0, 64, xenstore.MaxPayload} {
		m := &xenstore.Message{Op: xenstore.OpRead, ReqID: 7, Payload: make([]byte, size)}
		buf, _ := m.AppendMarshal(nil)
		b.Run(fmt.Sprintf("marshal-%d", size), func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(buf)))
			out := make([]byte, 0, len(buf))
			for b.Loop() {
				out, _ = m.AppendMarshal(out[:0])
			}
		})
		b.Run(fmt.Sprintf("parse-%d", size), func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(buf)))
			for b.Loop() {
				if _, _, err := xenstore.ParseMessage(buf, xenstore.MaxPayload); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkRoundTrip measures READ round trips against the embedded store
// over a Unix socket, from one goroutine and from several sharing a client.
func BenchmarkRoundTrip(b *testing.B) {
	s := xenstored.New(nil)
	defer s.Close()
	sock := filepath.Join(b.TempDir(), "xs")
	if err := s.Listen(sock, 0); err != nil {
		b.Fatal(err)
	}
	c, err := xenstore.Dial(sock)
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	ctx := context.Background()
	if err := c.Write(ctx, "/bench", "value"); err != nil {
		b.Fatal(err)
	}
	for _, workers := range []int{1, 8} {
		b.Run(fmt.Sprintf("goroutines-%d", workers), func(b *testing.B) {
			b.ReportAllocs()
			var wg sync.WaitGroup
			work := make(chan struct{})
			for range workers {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for range work {
						if _, err := c.Read(ctx, "/bench"); err != nil {
							b.Error(err)
							return
						}
					}
				}()
			}
			for b.Loop() {
				work <- struct{}{}
			}
			close(work)
			wg.Wait()
		})
	}
}
