package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/sirupsen/logrus"

	"idcfs/linkmgr"
	"idcfs/linkmgr/xenstore"
	"idcfs/vchan"
	"idcfs/vchan/xen"
)

const vchanUsage = `usage: idcfs vchan listen|connect [flags]

A raw libxenvchan endpoint on a Xenstore path, copying stdin to the ring and
the ring to stdout (for debugging, and to talk to C libxenvchan programs such
as vchan-socket-proxy). 'listen' is the vchan server: it shares the rings and
publishes PATH/ring-ref and PATH/event-channel; 'connect' is the client and
waits for them to appear.

On end of stdin the endpoint waits until the peer has read everything written
(see --linger), then closes, unless --keep-open is given: then it goes on
copying the ring to stdout until the peer closes. It exits when the peer
closes, on SIGINT/SIGTERM, or on an error.

The default PATH is /local/domain/SERVER/data/vchan/CLIENT/idcfs, where
SERVER and CLIENT are the domain ids of the two ends.

flags:
`

// vchanOptions is the parsed command line of `idcfs vchan`.
type vchanOptions struct {
	listen    bool
	peer      vchan.DomID
	path      string // "" until defaulted
	readMin   int
	writeMin  int
	keepOpen  bool
	linger    time.Duration
	timeout   time.Duration
	xenstore  string
	logLevel  string
	chunkSize int
}

func parseVchanArgs(args []string, stderr io.Writer) (*vchanOptions, error) {
	if len(args) == 0 || (args[0] != "listen" && args[0] != "connect") {
		fmt.Fprint(stderr, vchanUsage)
		if len(args) == 0 {
			return nil, usageErrorf("vchan: want listen or connect")
		}
		return nil, usageErrorf("vchan: unknown mode %q (want listen or connect)", args[0])
	}
	o := &vchanOptions{listen: args[0] == "listen"}
	flags := flag.NewFlagSet("idcfs vchan "+args[0], flag.ContinueOnError)
	flags.SetOutput(stderr)
	flags.Usage = func() { fmt.Fprint(stderr, vchanUsage); flags.PrintDefaults() }
	peer := flags.Uint("domid", 0, "domain id of the peer")
	flags.StringVar(&o.path, "path", "", "Xenstore path of the vchan (default: see above)")
	flags.IntVar(&o.readMin, "read-min", 0, "listen: minimum size in bytes of the ring this side reads (libxenvchan's left_min)")
	flags.IntVar(&o.writeMin, "write-min", 0, "listen: minimum size in bytes of the ring this side writes (libxenvchan's right_min)")
	flags.BoolVar(&o.keepOpen, "keep-open", false, "after end of stdin, keep copying the ring to stdout until the peer closes")
	flags.DurationVar(&o.linger, "linger", 2*time.Second, "after end of stdin, wait at most this long for the peer to read what was written")
	flags.DurationVar(&o.timeout, "timeout", 0, "give up if the peer has not connected within this time (0: wait until interrupted)")
	flags.StringVar(&o.xenstore, "xenstore", "", "Xenstore socket or device (default: $XENSTORED_PATH, the xenstored socket, /dev/xen/xenbus)")
	flags.IntVar(&o.chunkSize, "chunk", 64<<10, "bytes per read from stdin and from the ring")
	level := logLevelFlag(flags)
	if err := flags.Parse(args[1:]); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil, usageErrorf("vchan: help requested")
		}
		return nil, usageErrorf("vchan: %v", err)
	}
	flags.Visit(func(f *flag.Flag) {
		if f.Name == "log-level" {
			o.logLevel = *level
		}
	})
	switch {
	case flags.NArg() != 0:
		return nil, usageErrorf("vchan: unexpected argument %q", flags.Arg(0))
	case *peer >= 0x7FF0:
		return nil, usageErrorf("vchan: --domid %d is not a domain id (want 0..32751)", *peer)
	case o.readMin < 0 || o.readMin > vchan.MaxRingSize || o.writeMin < 0 || o.writeMin > vchan.MaxRingSize:
		return nil, usageErrorf("vchan: --read-min and --write-min must be in 0..%d", vchan.MaxRingSize)
	case !o.listen && (o.readMin != 0 || o.writeMin != 0):
		return nil, usageErrorf("vchan: --read-min and --write-min are for listen (the server chooses the rings)")
	case o.linger < 0 || o.timeout < 0:
		return nil, usageErrorf("vchan: --linger and --timeout must not be negative")
	case o.chunkSize < 1 || o.chunkSize > 16<<20:
		return nil, usageErrorf("vchan: --chunk must be in 1..%d", 16<<20)
	case o.path != "" && !strings.HasPrefix(o.path, "/"):
		return nil, usageErrorf("vchan: --path %q is not absolute", o.path)
	}
	o.peer = vchan.DomID(*peer)
	return o, nil
}

// runVchan implements `idcfs vchan listen|connect` on the Xen backend, with
// the process's stdin and stdout. SIGINT and SIGTERM end it cleanly.
func runVchan(ctx context.Context, args []string, log *logrus.Entry) error {
	o, err := parseVchanArgs(args, os.Stderr)
	if err != nil {
		return err
	}
	if o.logLevel != "" {
		lvl, err := logrus.ParseLevel(o.logLevel)
		if err != nil {
			return usageErrorf("vchan: --log-level: %v", err)
		}
		log.Logger.SetLevel(lvl)
	}
	ctx, stop := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
	defer stop()

	xs, err := xenstore.DialContext(ctx, o.xenstore)
	if err != nil {
		return withCode(ExitXenstore, err)
	}
	defer xs.Close()
	self, err := selfDomID(ctx, xs)
	if err != nil {
		return withCode(ExitXenstore, err)
	}
	// The store libxenvchan uses: PATH/ring-ref and PATH/event-channel,
	// written in one transaction, n<self> r<peer>.
	st := linkmgr.NewStore(xs, self)
	be, err := xen.Open()
	if err != nil {
		return withCode(ExitBackend, err)
	}
	defer be.Close()
	if o.path == "" {
		o.path = defaultVchanPath(o.listen, self, o.peer)
	}
	log = log.WithFields(logrus.Fields{"domid": self, "peer": o.peer, "path": o.path})
	return vchanSession(ctx, o, be, st, xenstorePeerGone(xs, o.peer), os.Stdin, os.Stdout, log)
}

// defaultVchanPath follows libxenvchan's convention
// /local/domain/<server>/data/vchan/<client>/<name>.
func defaultVchanPath(listen bool, self, peer vchan.DomID) string {
	server, client := peer, self
	if listen {
		server, client = self, peer
	}
	return fmt.Sprintf("/local/domain/%d/data/vchan/%d/idcfs", server, client)
}

// vchanSession sets up the endpoint and copies until done. peerGone, if
// not nil, is polled during the copy: a peer domain that was destroyed
// clears no live byte and sends no event, so only the store can tell.
func vchanSession(ctx context.Context, o *vchanOptions, be vchan.Backend, st vchan.Store, peerGone func(context.Context) bool, stdin io.Reader, stdout io.Writer, log *logrus.Entry) error {
	start := time.Now()
	ep, err := vchanEndpoint(ctx, o, be, st, log)
	if err != nil {
		if ctx.Err() != nil {
			return nil // interrupted while waiting for the peer
		}
		return err
	}
	s := ep.Stats()
	log.WithFields(logrus.Fields{"port": ep.Port(), "read_ring": s.ReadRing, "write_ring": s.WriteRing,
		"setup": time.Since(start).Round(time.Millisecond)}).Info("vchan connected")
	copyStart := time.Now()
	err = vchanCopy(ctx, o, ep, peerGone, stdin, stdout, log)
	if cerr := ep.Close(); cerr != nil && err == nil {
		err = fmt.Errorf("vchan: close: %w", cerr)
	}
	el := time.Since(copyStart)
	s = ep.Stats()
	mib := func(n uint64) string {
		return strconv.FormatFloat(float64(n)/(1<<20)/max(el.Seconds(), 1e-6), 'f', 1, 64)
	}
	log.WithFields(logrus.Fields{"bytes_in": s.BytesIn, "bytes_out": s.BytesOut, "seconds": el.Seconds(),
		"in_MiBps": mib(s.BytesIn), "out_MiBps": mib(s.BytesOut), "events_in": s.EventsIn, "events_out": s.EventsOut}).Info("vchan closed")
	return err
}

// vchanEndpoint listens (and waits for the client) or connects, retrying
// while the server has not published its ring yet.
func vchanEndpoint(ctx context.Context, o *vchanOptions, be vchan.Backend, st vchan.Store, log *logrus.Entry) (*vchan.Endpoint, error) {
	if o.timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, o.timeout)
		defer cancel()
	}
	if o.listen {
		ep, err := vchan.Listen(ctx, be, st, o.peer, o.path, o.readMin, o.writeMin)
		if err != nil {
			return nil, err
		}
		log.WithFields(logrus.Fields{"port": ep.Port(), "ring_ref": ep.RingRef()}).Info("vchan listening")
		if err := ep.WaitConnected(ctx); err != nil {
			_ = ep.Close() // report why the client did not come
			return nil, fmt.Errorf("vchan: waiting for domain %d to connect: %w", o.peer, err)
		}
		return ep, nil
	}
	const poll = 100 * time.Millisecond
	for attempt := 0; ; attempt++ {
		ep, err := vchan.Dial(ctx, be, st, o.peer, o.path)
		if err == nil {
			return ep, nil
		}
		// Not published yet (EACCES where the parent is not readable
		// by this domain), or a page that is not (or no longer) a ring:
		// the server may still be starting.
		if !errors.Is(err, fs.ErrNotExist) && !errors.Is(err, fs.ErrPermission) && !errors.Is(err, vchan.ErrBadLayout) {
			return nil, err
		}
		if attempt == 0 {
			log.WithError(err).Info("vchan waiting for the server")
		}
		t := time.NewTimer(poll)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, fmt.Errorf("vchan: waiting for %s: %w (last: %v)", o.path, ctx.Err(), err)
		case <-t.C:
		}
	}
}

// peerPollInterval is how often the store is asked whether the peer
// domain still exists.
const peerPollInterval = time.Second

// vchanCopy copies stdin to ep and ep to stdout. It returns nil when the
// peer closed (after the remaining ring data was copied), when stdin ended
// and the written data was consumed (without --keep-open), or when ctx ends.
func vchanCopy(ctx context.Context, o *vchanOptions, ep *vchan.Endpoint, peerGone func(context.Context) bool, stdin io.Reader, stdout io.Writer, log *logrus.Entry) error {
	cctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	defer func() {
		cancel() // first: the watcher below waits for it
		wg.Wait()
	}()

	gone := make(chan struct{})
	if peerGone != nil {
		wg.Add(1)
		go func() { // owned by this call: ends with cctx
			defer wg.Done()
			t := time.NewTicker(peerPollInterval)
			defer t.Stop()
			for {
				select {
				case <-cctx.Done():
					return
				case <-t.C:
					if peerGone(cctx) {
						close(gone)
						return
					}
				}
			}
		}()
	}
	errGone := fmt.Errorf("vchan: peer domain %d is gone: %w", o.peer, vchan.ErrPeerClosed)

	recvDone := make(chan error, 1)
	go func() { // owned by this call: ends at peer EOF, on an error, or when cctx ends
		buf := make([]byte, o.chunkSize)
		for {
			n, err := ep.ReadContext(cctx, buf)
			if n > 0 {
				if _, werr := stdout.Write(buf[:n]); werr != nil {
					recvDone <- fmt.Errorf("vchan: write stdout: %w", werr)
					return
				}
			}
			if err != nil {
				if errors.Is(err, io.EOF) {
					err = nil
				}
				recvDone <- err
				return
			}
		}
	}()

	// The stdin reader cannot be interrupted (a read from a terminal or a
	// pipe blocks in the kernel); it ends at EOF, at an error, or with the
	// process. Writing to ep stops with cctx.
	sendDone := make(chan error, 1)
	var sendWG sync.WaitGroup
	sendWG.Add(1)
	go func() {
		defer sendWG.Done()
		buf := make([]byte, o.chunkSize)
		for {
			n, err := stdin.Read(buf)
			if n > 0 {
				if _, werr := ep.WriteContext(cctx, buf[:n]); werr != nil {
					sendDone <- werr
					return
				}
			}
			if err == io.EOF {
				sendDone <- nil
				return
			}
			if err != nil {
				sendDone <- fmt.Errorf("vchan: read stdin: %w", err)
				return
			}
		}
	}()

	finishRecv := func() error {
		cancel()
		err := <-recvDone
		if errors.Is(err, context.Canceled) {
			return nil
		}
		return err
	}
	select {
	case <-gone:
		return errors.Join(errGone, finishRecv())
	case err := <-recvDone:
		// The peer closed (or reading failed): whatever stdin still
		// has can no longer be sent.
		if err == nil {
			log.Debug("vchan peer closed")
		}
		return err
	case err := <-sendDone:
		if err != nil {
			if errors.Is(err, vchan.ErrPeerClosed) {
				// Keep what the peer sent before it left.
				if rerr := <-recvDone; rerr != nil {
					return rerr
				}
				return fmt.Errorf("vchan: peer closed before all of stdin was sent: %w", err)
			}
			if ctx.Err() != nil {
				return finishRecv()
			}
			return errors.Join(err, finishRecv())
		}
		log.Debug("vchan end of stdin")
		if ferr := waitConsumed(ctx, o, ep, log); ferr != nil {
			return errors.Join(ferr, finishRecv())
		}
		if !o.keepOpen {
			return finishRecv()
		}
		select {
		case err := <-recvDone:
			return err
		case <-gone:
			return errors.Join(errGone, finishRecv())
		case <-ctx.Done():
			return finishRecv()
		}
	case <-ctx.Done():
		return finishRecv()
	}
}

// waitConsumed waits, for at most --linger, until the peer has read
// everything written or has left. A peer still holding unread bytes when
// --linger runs out is an error: the caller is about to close the ring.
func waitConsumed(ctx context.Context, o *vchanOptions, ep *vchan.Endpoint, log *logrus.Entry) error {
	if o.linger == 0 {
		return nil
	}
	log.WithField("linger", o.linger).Debug("vchan waiting for the peer to read")
	fctx, cancel := context.WithTimeout(ctx, o.linger)
	defer cancel()
	err := ep.Flush(fctx)
	switch {
	case err == nil, errors.Is(err, vchan.ErrPeerClosed), ctx.Err() != nil:
		return nil // read, or nobody left to read it
	case errors.Is(err, context.DeadlineExceeded):
		return fmt.Errorf("vchan: the peer had not read everything after --linger %v", o.linger)
	}
	return err
}

// selfDomID reads this domain's id from the relative Xenstore key "domid"
// (written by the toolstack; by xen-init-dom0 in dom0).
func selfDomID(ctx context.Context, xs *xenstore.Client) (vchan.DomID, error) {
	v, err := xs.Read(ctx, "domid")
	if err != nil {
		return 0, fmt.Errorf("read own domain id from Xenstore key \"domid\": %w", err)
	}
	id, ok := xenstore.ParseDomID(v)
	if !ok || id >= 0x7FF0 {
		return 0, fmt.Errorf("own domain id: Xenstore key \"domid\" holds %q", v)
	}
	return vchan.DomID(id), nil
}

// xenstorePeerGone returns a check that domain peer no longer exists: its
// /local/domain/<peer>/domid is absent (ENOENT; a domain that may not read
// it gets EACCES, which tells nothing).
func xenstorePeerGone(xs *xenstore.Client, peer vchan.DomID) func(context.Context) bool {
	key := fmt.Sprintf("/local/domain/%d/domid", peer)
	return func(ctx context.Context) bool {
		_, err := xs.Read(ctx, key)
		return errors.Is(err, fs.ErrNotExist)
	}
}
