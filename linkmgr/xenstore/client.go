package xenstore

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"sync"
	"syscall"
	"time"
)

// Operation names used in errors.
const (
	opRead          = "read"
	opWrite         = "write"
	opMkdir         = "mkdir"
	opRm            = "rm"
	opDirectory     = "directory"
	opGetPerms      = "get-perms"
	opSetPerms      = "set-perms"
	opGetDomainPath = "get-domain-path"
	opWatch         = "watch"
	opUnwatch       = "unwatch"
	opTxStart       = "transaction-start"
	opTxEnd         = "transaction-end"
)

var okReply = []byte("OK\x00")

// Client is a connection to a Xenstore server. It is safe for concurrent use
// by many goroutines: requests are matched to replies by req_id, and watch
// events are queued per Watch so that they never hold up replies.
//
// A Client owns one reader goroutine and one goroutine per open Watch; Close
// stops them and waits for them.
type Client struct {
	rw         io.ReadWriteCloser
	maxPayload int
	// serial is set for the xenbus device: one request at a time, and a
	// reply whose req_id is unknown goes to the single outstanding request
	// (older kernels answer WATCH with req_id 0).
	serial chan struct{}

	wmu  sync.Mutex // serialises writes of whole messages
	wbuf []byte

	mu      sync.Mutex
	nextID  uint32
	pending map[uint32]*call
	watches map[string][]*Watch // by token
	closed  bool
	cause   error // why the connection broke, if not by Close

	closeOnce sync.Once
	closeErr  error
	done      chan struct{} // closed when the reader goroutine exits
	wg        sync.WaitGroup
}

type call struct {
	op        Op
	reply     chan *Message // buffered 1
	abandoned bool          // the caller gave up; drop the reply
}

// NewClient returns a Client speaking the Xenstore protocol over rw, with
// the socket payload limit (MaxPayload). It takes ownership of rw: Close
// closes it.
func NewClient(rw io.ReadWriteCloser) *Client {
	return newClient(rw, MaxPayload, false)
}

func newClient(rw io.ReadWriteCloser, maxPayload int, serial bool) *Client {
	c := &Client{
		rw:         rw,
		maxPayload: maxPayload,
		pending:    make(map[uint32]*call),
		watches:    make(map[string][]*Watch),
		done:       make(chan struct{}),
	}
	if serial {
		c.serial = make(chan struct{}, 1)
	}
	go c.readLoop()
	return c
}

// MaxPayload returns the payload limit of this connection: MaxPayload for
// sockets, MaxPayloadDevice for the xenbus device.
func (c *Client) MaxPayload() int { return c.maxPayload }

// Done is closed when the connection is gone, by Close or because the server
// went away or broke the protocol.
func (c *Client) Done() <-chan struct{} { return c.done }

// Err returns why the connection broke: nil while it is up, an error
// wrapping net.ErrClosed afterwards.
func (c *Client) Err() error {
	select {
	case <-c.done:
		return c.closedErr("", "")
	default:
		return nil
	}
}

// Close closes the connection. Calls in progress and later calls fail with an
// error wrapping net.ErrClosed, and every Watch's Events channel is closed.
// Close waits for the client's goroutines to exit.
func (c *Client) Close() error {
	c.closeOnce.Do(func() {
		c.mu.Lock()
		c.closed = true
		c.mu.Unlock()
		c.closeErr = c.rw.Close()
	})
	<-c.done
	c.wg.Wait()
	return c.closeErr
}

func (c *Client) closedErr(op, path string) error {
	c.mu.Lock()
	cause := c.cause
	c.mu.Unlock()
	prefix := "xenstore"
	if op != "" {
		prefix += " " + op
	}
	if path != "" {
		prefix += " " + path
	}
	if cause != nil {
		return fmt.Errorf("%s: %w: %w", prefix, net.ErrClosed, cause)
	}
	return fmt.Errorf("%s: %w", prefix, net.ErrClosed)
}

// readLoop is the reader goroutine: it routes replies to their callers and
// watch events to their watches until the connection fails.
func (c *Client) readLoop() {
	defer close(c.done)
	for {
		m, err := ReadMessage(c.rw, MaxPayload)
		if err != nil {
			c.fail(err)
			return
		}
		if m.Op == OpWatchEvent {
			// The device does not set req_id and tx_id on events: dispatch
			// by type only.
			ev, err := ParseWatchEvent(m.Payload)
			if err != nil {
				c.fail(err)
				return
			}
			c.dispatch(ev)
			continue
		}
		if err := c.deliver(m); err != nil {
			c.fail(err)
			return
		}
	}
}

// deliver hands a reply to the call waiting for it.
func (c *Client) deliver(m *Message) error {
	c.mu.Lock()
	cl, id := c.pending[m.ReqID], m.ReqID
	if cl == nil && c.serial != nil && len(c.pending) == 1 {
		for k, v := range c.pending {
			cl, id = v, k
		}
	}
	if cl == nil {
		c.mu.Unlock()
		return fmt.Errorf("%w: reply %s with unknown req_id %d", ErrProtocol, m.Op, m.ReqID)
	}
	if m.Op != cl.op && m.Op != OpError {
		c.mu.Unlock()
		return fmt.Errorf("%w: reply %s to request %s", ErrProtocol, m.Op, cl.op)
	}
	delete(c.pending, id)
	abandoned := cl.abandoned
	c.mu.Unlock()
	if c.serial != nil {
		<-c.serial
	}
	if !abandoned {
		cl.reply <- m
	}
	return nil
}

// fail records why the connection broke and closes it. Callers waiting for
// replies see c.done closed.
func (c *Client) fail(err error) {
	c.mu.Lock()
	if !c.closed && !errors.Is(err, io.EOF) && !errors.Is(err, net.ErrClosed) {
		if errors.Is(err, io.ErrUnexpectedEOF) {
			err = fmt.Errorf("%w: connection ended inside a message", ErrProtocol)
		}
		c.cause = err
	}
	c.closed = true
	c.mu.Unlock()
	c.closeOnce.Do(func() { c.closeErr = c.rw.Close() })
}

// roundTrip sends one request and waits for its reply. It returns the reply
// payload, or *Error if the server answered ERROR.
func (c *Client) roundTrip(ctx context.Context, op Op, txID uint32, payload []byte, name, path string) ([]byte, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if len(payload) > c.maxPayload {
		return nil, &Error{Op: name, Path: path, Err: syscall.E2BIG}
	}
	if c.serial != nil {
		select {
		case c.serial <- struct{}{}:
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-c.done:
			return nil, c.closedErr(name, path)
		}
	}
	cl := &call{op: op, reply: make(chan *Message, 1)}
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		if c.serial != nil {
			<-c.serial
		}
		return nil, c.closedErr(name, path)
	}
	id := c.allocIDLocked()
	c.pending[id] = cl
	c.mu.Unlock()

	if err := c.send(ctx, &Message{Op: op, ReqID: id, TxID: txID, Payload: payload}); err != nil {
		c.fail(err)
		if ctx.Err() != nil {
			return nil, fmt.Errorf("xenstore %s %s: %w: %w", name, path, ctx.Err(), c.closedErr("", ""))
		}
		return nil, c.closedErr(name, path)
	}
	var m *Message
	select {
	case m = <-cl.reply:
	case <-ctx.Done():
		c.abandon(id, cl)
		return nil, ctx.Err()
	case <-c.done:
		select {
		case m = <-cl.reply:
		default:
			return nil, c.closedErr(name, path)
		}
	}
	if m.Op == OpError {
		errno, ename, err := ParseError(m.Payload)
		if err != nil {
			return nil, fmt.Errorf("xenstore %s %s: %w", name, path, err)
		}
		return nil, &Error{Op: name, Path: path, Err: errno, Name: ename}
	}
	return m.Payload, nil
}

// abandon gives up on a call whose caller went away. The entry stays until
// its reply arrives, so that in serial mode the next request does not get
// this request's reply.
func (c *Client) abandon(id uint32, cl *call) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.pending[id] == cl {
		cl.abandoned = true
	}
}

// allocIDLocked returns a req_id that is not in use. c.mu must be held.
func (c *Client) allocIDLocked() uint32 {
	for {
		c.nextID++
		if c.nextID == 0 {
			continue // 0 is what watch events and old kernels use
		}
		if _, busy := c.pending[c.nextID]; !busy {
			return c.nextID
		}
	}
}

// writeDeadliner is implemented by connections whose writes can be
// interrupted (net.Conn, *os.File on the poller).
type writeDeadliner interface {
	SetWriteDeadline(t time.Time) error
}

// send writes one whole message with a single Write call. If ctx ends while
// the write is blocked (the server stopped reading), the write is
// interrupted through a past deadline where the connection supports that;
// the caller then breaks the connection, since part of a message may have
// been sent.
func (c *Client) send(ctx context.Context, m *Message) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	b, err := m.AppendMarshal(c.wbuf[:0])
	if err != nil {
		return err
	}
	c.wbuf = b
	wd, ok := c.rw.(writeDeadliner)
	if !ok || ctx.Done() == nil {
		_, err = c.rw.Write(b)
		return err
	}
	var mu sync.Mutex
	finished := false
	stop := context.AfterFunc(ctx, func() {
		mu.Lock()
		defer mu.Unlock()
		if !finished {
			wd.SetWriteDeadline(time.Now())
		}
	})
	_, err = c.rw.Write(b)
	mu.Lock()
	finished = true
	mu.Unlock()
	if !stop() {
		// The interrupt ran; undo it for the next writer.
		wd.SetWriteDeadline(time.Time{})
	}
	return err
}

// checkString rejects strings that cannot be sent as a zero-terminated
// argument.
func checkString(op, path, s string) error {
	if s == "" || bytes.IndexByte([]byte(s), 0) >= 0 {
		return &Error{Op: op, Path: path, Err: syscall.EINVAL}
	}
	return nil
}

func expectOK(op, path string, reply []byte) error {
	if !bytes.Equal(reply, okReply) {
		return fmt.Errorf("xenstore %s %s: %w: reply %q instead of OK", op, path, ErrProtocol, reply)
	}
	return nil
}

func (c *Client) read(ctx context.Context, txID uint32, path string) (string, error) {
	if err := checkString(opRead, path, path); err != nil {
		return "", err
	}
	reply, err := c.roundTrip(ctx, OpRead, txID, AppendString(nil, path), opRead, path)
	if err != nil {
		return "", err
	}
	return string(reply), nil
}

func (c *Client) write(ctx context.Context, txID uint32, path, value string) error {
	if err := checkString(opWrite, path, path); err != nil {
		return err
	}
	p := append(AppendString(nil, path), value...)
	reply, err := c.roundTrip(ctx, OpWrite, txID, p, opWrite, path)
	if err != nil {
		return err
	}
	return expectOK(opWrite, path, reply)
}

func (c *Client) simple(ctx context.Context, op Op, name string, txID uint32, path string) error {
	if err := checkString(name, path, path); err != nil {
		return err
	}
	reply, err := c.roundTrip(ctx, op, txID, AppendString(nil, path), name, path)
	if err != nil {
		return err
	}
	return expectOK(name, path, reply)
}

func (c *Client) directory(ctx context.Context, txID uint32, path string) ([]string, error) {
	if err := checkString(opDirectory, path, path); err != nil {
		return nil, err
	}
	reply, err := c.roundTrip(ctx, OpDirectory, txID, AppendString(nil, path), opDirectory, path)
	if errors.Is(err, syscall.E2BIG) {
		// The list does not fit in one reply: fetch it in parts, where the
		// server supports that.
		names, perr := c.directoryParts(ctx, txID, path)
		if errors.Is(perr, syscall.ENOSYS) {
			return nil, err
		}
		return names, perr
	}
	if err != nil {
		return nil, err
	}
	names, err := parseDirectory(reply)
	if err != nil {
		return nil, fmt.Errorf("xenstore %s %s: %w", opDirectory, path, err)
	}
	return names, nil
}

// maxDirectoryParts bounds the DIRECTORY_PART requests of one listing, so a
// server that never reaches the end cannot keep the caller forever.
const maxDirectoryParts = 4096

// directoryParts lists path with DIRECTORY_PART: each reply is "gen\0"
// followed by whole child names from the requested byte offset; the last
// one carries an extra "\0". The listing restarts if gen changes (the
// directory changed between parts).
func (c *Client) directoryParts(ctx context.Context, txID uint32, path string) ([]string, error) {
	var all []byte
	gen := ""
	for parts := 0; parts < maxDirectoryParts; parts++ {
		p := AppendString(AppendString(nil, path), strconv.Itoa(len(all)))
		reply, err := c.roundTrip(ctx, OpDirectoryPart, txID, p, opDirectory, path)
		if err != nil {
			return nil, err
		}
		i := bytes.IndexByte(reply, 0)
		if i <= 0 {
			return nil, fmt.Errorf("xenstore %s %s: %w: part without generation", opDirectory, path, ErrProtocol)
		}
		g, rest := string(reply[:i]), reply[i+1:]
		if gen != "" && g != gen {
			all, gen = nil, ""
			continue
		}
		gen = g
		if len(rest) > 0 && rest[len(rest)-1] == 0 && (len(rest) == 1 || rest[len(rest)-2] == 0) {
			all = append(all, rest[:len(rest)-1]...)
			names, err := parseDirectory(all)
			if err != nil {
				return nil, fmt.Errorf("xenstore %s %s: %w", opDirectory, path, err)
			}
			return names, nil
		}
		if len(rest) == 0 {
			return nil, fmt.Errorf("xenstore %s %s: %w: empty directory part", opDirectory, path, ErrProtocol)
		}
		all = append(all, rest...)
	}
	return nil, fmt.Errorf("xenstore %s %s: %w: directory parts never ended", opDirectory, path, ErrProtocol)
}

// parseDirectory parses a DIRECTORY reply: child names, each terminated.
func parseDirectory(reply []byte) ([]string, error) {
	names, err := SplitStrings(reply)
	if err != nil {
		return nil, err
	}
	for _, n := range names {
		if n == "" || bytes.IndexByte([]byte(n), '/') >= 0 {
			return nil, fmt.Errorf("%w: bad child name %q", ErrProtocol, n)
		}
	}
	if names == nil {
		names = []string{}
	}
	return names, nil
}

func (c *Client) getPerms(ctx context.Context, txID uint32, path string) ([]Perm, error) {
	if err := checkString(opGetPerms, path, path); err != nil {
		return nil, err
	}
	reply, err := c.roundTrip(ctx, OpGetPerms, txID, AppendString(nil, path), opGetPerms, path)
	if err != nil {
		return nil, err
	}
	perms, err := parsePermsReply(reply)
	if err != nil {
		return nil, fmt.Errorf("xenstore %s %s: %w", opGetPerms, path, err)
	}
	return perms, nil
}

// parsePermsReply parses a GET_PERMS reply.
func parsePermsReply(reply []byte) ([]Perm, error) {
	strs, err := SplitStrings(reply)
	if err != nil {
		return nil, err
	}
	perms, err := ParsePerms(strs)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrProtocol, err)
	}
	return perms, nil
}

func (c *Client) setPerms(ctx context.Context, txID uint32, path string, perms []Perm) error {
	if err := checkString(opSetPerms, path, path); err != nil {
		return err
	}
	if len(perms) == 0 {
		return &Error{Op: opSetPerms, Path: path, Err: syscall.EINVAL}
	}
	p := AppendString(nil, path)
	for _, pm := range perms {
		p = AppendString(p, pm.String())
	}
	reply, err := c.roundTrip(ctx, OpSetPerms, txID, p, opSetPerms, path)
	if err != nil {
		return err
	}
	return expectOK(opSetPerms, path, reply)
}

// Read returns the value of the node at path.
func (c *Client) Read(ctx context.Context, path string) (string, error) {
	return c.read(ctx, 0, path)
}

// Write sets the value of the node at path, creating it and any missing
// parents.
func (c *Client) Write(ctx context.Context, path, value string) error {
	return c.write(ctx, 0, path, value)
}

// Mkdir creates the node at path with an empty value if it does not exist.
func (c *Client) Mkdir(ctx context.Context, path string) error {
	return c.simple(ctx, OpMkdir, opMkdir, 0, path)
}

// Rm removes the node at path and everything below it. Removing a node that
// does not exist succeeds if its parent exists.
func (c *Client) Rm(ctx context.Context, path string) error {
	return c.simple(ctx, OpRm, opRm, 0, path)
}

// Directory returns the leaf names of the children of path.
func (c *Client) Directory(ctx context.Context, path string) ([]string, error) {
	return c.directory(ctx, 0, path)
}

// GetPerms returns the permission list of path, owner entry first.
func (c *Client) GetPerms(ctx context.Context, path string) ([]Perm, error) {
	return c.getPerms(ctx, 0, path)
}

// SetPerms replaces the permission list of path. perms[0] names the owner.
func (c *Client) SetPerms(ctx context.Context, path string, perms []Perm) error {
	return c.setPerms(ctx, 0, path, perms)
}

// GetDomainPath returns the home path of domain dom, /local/domain/<dom>.
// A dom past 65535 cannot be a Xen domain id (16 bits): it is refused here
// with EINVAL, as the embedded store does. C xenstored would not refuse it
// (it answers with a path for whatever number it parsed).
func (c *Client) GetDomainPath(ctx context.Context, dom uint32) (string, error) {
	arg := strconv.FormatUint(uint64(dom), 10)
	if dom > 0xFFFF {
		return "", &Error{Op: opGetDomainPath, Path: arg, Err: syscall.EINVAL}
	}
	reply, err := c.roundTrip(ctx, OpGetDomainPath, 0, AppendString(nil, arg), opGetDomainPath, arg)
	if err != nil {
		return "", err
	}
	s, err := ParseString(reply)
	if err != nil || s == "" {
		return "", fmt.Errorf("xenstore %s %s: %w: reply %q", opGetDomainPath, arg, ErrProtocol, reply)
	}
	return s, nil
}
