package vchan

import (
	"context"
	"errors"
	"net"
	"time"
)

// MaxRingSize is the largest ring NewServer accepts (order 20, as libxenvchan).
const MaxRingSize = 1 << 20

// Stats are an Endpoint's counters.
type Stats struct {
	BytesIn, BytesOut   uint64 // ring payload read and written
	EventsIn, EventsOut uint64 // events received and sent
	Requests            uint64 // times this side set a notify bit in the peer's byte
	ReadRingSize        int    // bytes
	WriteRingSize       int    // bytes
}

// Endpoint is one end of a vchan. One Read and one Write may run
// concurrently; concurrent Reads are serialised, likewise Writes.
type Endpoint struct{}

var errUnfinished = errors.New("vchan: not implemented yet")

// NewServer shares the control page and ring pages with domain peer,
// allocates an unbound event channel for it and lays out the page.
func NewServer(be Backend, peer DomID, leftMin, rightMin int) (*Endpoint, error) {
	return nil, errUnfinished
}

// NewClient binds the server's event channel and maps its pages.
func NewClient(be Backend, peer DomID, ringRef, port uint32) (*Endpoint, error) {
	return nil, errUnfinished
}

// Listen is NewServer followed by st.Publish; Close also removes path.
func Listen(ctx context.Context, be Backend, st Store, peer DomID, path string, leftMin, rightMin int) (*Endpoint, error) {
	return nil, errUnfinished
}

// Dial is st.Lookup followed by NewClient.
func Dial(ctx context.Context, be Backend, st Store, peer DomID, path string) (*Endpoint, error) {
	return nil, errUnfinished
}

// RingRef is the grant reference of the control page.
func (e *Endpoint) RingRef() uint32 { return 0 }

// Port is the local event channel port.
func (e *Endpoint) Port() uint32 { return 0 }

// WaitConnected waits until the client connected.
func (e *Endpoint) WaitConnected(ctx context.Context) error { return errUnfinished }

// Read reads at least one byte.
func (e *Endpoint) Read(p []byte) (int, error) { return 0, errUnfinished }

// Write writes all of p.
func (e *Endpoint) Write(p []byte) (int, error) { return 0, errUnfinished }

// ReadContext is Read with a context.
func (e *Endpoint) ReadContext(ctx context.Context, p []byte) (int, error) {
	return 0, errUnfinished
}

// WriteContext is Write with a context.
func (e *Endpoint) WriteContext(ctx context.Context, p []byte) (int, error) {
	return 0, errUnfinished
}

// WriteBuffers writes all bufs.
func (e *Endpoint) WriteBuffers(ctx context.Context, bufs ...[]byte) (int, error) {
	return 0, errUnfinished
}

// SetDeadline sets both deadlines.
func (e *Endpoint) SetDeadline(t time.Time) error { return errUnfinished }

// SetReadDeadline sets the read deadline.
func (e *Endpoint) SetReadDeadline(t time.Time) error { return errUnfinished }

// SetWriteDeadline sets the write deadline.
func (e *Endpoint) SetWriteDeadline(t time.Time) error { return errUnfinished }

// Done is closed when the endpoint stops working.
func (e *Endpoint) Done() <-chan struct{} { return nil }

// Err says why Done is closed.
func (e *Endpoint) Err() error { return net.ErrClosed }

// Close closes the endpoint.
func (e *Endpoint) Close() error { return nil }

// Stats returns the counters.
func (e *Endpoint) Stats() Stats { return Stats{} }
