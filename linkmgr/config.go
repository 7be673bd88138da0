package linkmgr

import (
	"time"

	"github.com/sirupsen/logrus"

	"idcfs/linkmgr/xenstore"
	"idcfs/proto"
	"idcfs/vchan"
)

// Defaults used for zero fields of Config.
const (
	DefaultIdleTimeout    = 30 * time.Second
	DefaultConnectTimeout = 5 * time.Second
	DefaultRingSize       = 128 << 10 // bytes per direction
	DefaultWindow         = 256 << 10 // receive buffer per connection, to start with
	DefaultMaxWindow      = 4 << 20   // the most a connection's window grows to
	DefaultMaxConns       = 4096      // connections per link
	DefaultBacklog        = 128       // pending connections per listener
	DefaultMaxPending     = 256       // outgoing CONNECT_req awaiting a reply, per link
	DefaultMaxFrame       = proto.DefaultMaxFrame
)

// Config configures a Manager. Zero fields take the defaults above.
type Config struct {
	// Self is this domain's id.
	Self vchan.DomID
	// Backend provides the pages and event channels of links.
	Backend vchan.Backend
	// Xenstore is this domain's Xenstore connection. The Manager does not
	// close it. Without it only loopback links (to Self) work.
	Xenstore *xenstore.Client
	// Log receives link state changes (Info), teardowns (Warn) and
	// per-connection events (Debug). Nil discards.
	Log *logrus.Entry

	// IdleTimeout: a link without connections is torn down after this.
	IdleTimeout time.Duration
	// ConnectTimeout bounds link setup plus the CONNECT_req/rsp exchange.
	ConnectTimeout time.Duration
	// RingSize is the size of each of a link's two rings (this domain's
	// choice when it serves the ring), rounded up as libxenvchan does. A
	// server whose backend has no room for it halves it until the ring
	// fits, down to MinFallbackRingSize.
	RingSize int
	// Window is the receive buffer each connection starts with, announced
	// to the peer as its send credit.
	Window int
	// MaxWindow is the most a connection's window grows to (never less
	// than Window). A window doubles when the peer used nearly all of its
	// credit before the next CREDIT went out while the application kept
	// the receive buffer nearly empty: then the credit round trip, not the
	// reader, limits the connection. What a connection can hold for a
	// reader that stops is bounded by its window, so by MaxWindow.
	MaxWindow int
	// MaxConns bounds the connections of one link; more CONNECT_req are
	// answered "too many connections".
	MaxConns int
	// Backlog is the listener backlog used when Listen is given 0 or less.
	Backlog int
	// MaxPending bounds the outgoing connects per link waiting for a reply.
	MaxPending int
	// MaxFrame is the largest DATA_ind payload this side accepts
	// (proto.MinFrame..proto.MaxFrame).
	MaxFrame int
	// Allow, if set, decides whether domain peer may connect to port here;
	// refused connects get "denied" (ErrDenied at the dialer). It runs on
	// the link's reader and must not block.
	Allow func(peer vchan.DomID, port uint32) bool
}

func (c *Config) setDefaults() {
	if c.IdleTimeout <= 0 {
		c.IdleTimeout = DefaultIdleTimeout
	}
	if c.ConnectTimeout <= 0 {
		c.ConnectTimeout = DefaultConnectTimeout
	}
	if c.RingSize <= 0 {
		c.RingSize = DefaultRingSize
	}
	c.RingSize = min(c.RingSize, vchan.MaxRingSize)
	if c.Window <= 0 {
		c.Window = DefaultWindow
	}
	c.Window = min(c.Window, 1<<30)
	if c.MaxWindow <= 0 {
		c.MaxWindow = DefaultMaxWindow
	}
	c.MaxWindow = max(c.Window, min(c.MaxWindow, 1<<30))
	if c.MaxConns <= 0 {
		c.MaxConns = DefaultMaxConns
	}
	if c.Backlog <= 0 {
		c.Backlog = DefaultBacklog
	}
	if c.MaxPending <= 0 {
		c.MaxPending = DefaultMaxPending
	}
	if c.MaxFrame <= 0 {
		c.MaxFrame = DefaultMaxFrame
	}
	c.MaxFrame = max(proto.MinFrame, min(c.MaxFrame, proto.MaxFrame))
	if c.Log == nil {
		l := logrus.New()
		l.Out = discard{}
		c.Log = logrus.NewEntry(l)
	}
}

type discard struct{}

func (discard) Write(p []byte) (int, error) { return len(p), nil }
