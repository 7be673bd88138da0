package linkmgr

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/sirupsen/logrus"

	"idcfs/linkmgr/xenstore"
	"idcfs/vchan"
)

// Xenstore layout (docs/xenstore.md explains who writes what and why).
const (
	tokenReq     = "idcfs-req"
	tokenRelease = "idcfs-release"
	ringName     = "idcfs" // last element of the libxenvchan-style ring path
	withdrawTime = 2 * time.Second
)

func itoa(d vchan.DomID) string { return strconv.Itoa(int(d)) }

// DomainPath is /local/domain/<dom>.
func DomainPath(dom vchan.DomID) string { return "/local/domain/" + itoa(dom) }

// BasePath is /local/domain/<dom>/idcfs, created by Setup.
func BasePath(dom vchan.DomID) string { return DomainPath(dom) + "/idcfs" }

// DaemonPath is where dom's daemon announces itself with its generation.
func DaemonPath(dom vchan.DomID) string { return BasePath(dom) + "/daemon" }

// RequestDir holds one node per peer allowed to ask dom for a link.
func RequestDir(dom vchan.DomID) string { return BasePath(dom) + "/req" }

// RequestPath is the node through which from asks target for a link (and,
// when from serves the ring, tells target that it published one).
func RequestPath(target, from vchan.DomID) string { return RequestDir(target) + "/" + itoa(from) }

// RingPath is the libxenvchan-convention path of the link's ring, served
// by the lower domid.
func RingPath(server, client vchan.DomID) string {
	return DomainPath(server) + "/data/vchan/" + itoa(client) + "/" + ringName
}

// Store adapts a Xenstore client to vchan.Store: Publish writes ring-ref
// and event-channel in one transaction with permissions n<self> r<peer>,
// as libxenvchan's server does.
type Store struct {
	xs   *xenstore.Client
	self vchan.DomID
}

var _ vchan.Store = (*Store)(nil)

// NewStore returns a vchan.Store over xs for domain self. It does not own xs.
func NewStore(xs *xenstore.Client, self vchan.DomID) *Store { return &Store{xs: xs, self: self} }

// Publish implements vchan.Store.
func (s *Store) Publish(ctx context.Context, path string, peer vchan.DomID, ringRef, port uint32) error {
	perms := []xenstore.Perm{{Dom: uint32(s.self)}, {Dom: uint32(peer), Read: true}}
	return s.xs.Transaction(ctx, func(tx *xenstore.Tx) error {
		for _, kv := range [...]struct {
			key string
			val uint32
		}{{"/ring-ref", ringRef}, {"/event-channel", port}} {
			if err := tx.Write(ctx, path+kv.key, strconv.FormatUint(uint64(kv.val), 10)); err != nil {
				return err
			}
			if err := tx.SetPerms(ctx, path+kv.key, perms); err != nil {
				return err
			}
		}
		return nil
	})
}

// Lookup implements vchan.Store.
func (s *Store) Lookup(ctx context.Context, path string) (ringRef, port uint32, err error) {
	read := func(key string) (uint32, error) {
		v, err := s.xs.Read(ctx, path+key)
		if err != nil {
			return 0, err
		}
		n, err := strconv.ParseUint(v, 10, 32)
		if err != nil || n == 0 {
			return 0, fmt.Errorf("%w: %s%s = %q", vchan.ErrBadRef, path, key, v)
		}
		return uint32(n), nil
	}
	if ringRef, err = read("/ring-ref"); err != nil {
		return 0, 0, err
	}
	if port, err = read("/event-channel"); err != nil {
		return 0, 0, err
	}
	return ringRef, port, nil
}

// Remove implements vchan.Store. A missing path is not an error.
func (s *Store) Remove(ctx context.Context, path string) error {
	if err := s.xs.Rm(ctx, path); err != nil && !errors.Is(err, syscall.ENOENT) {
		return err
	}
	return nil
}

// Setup writes the Xenstore nodes and permissions that let the domains
// doms link with each other (run in dom0 by `idcfs setup`). For each
// domain D: /local/domain/D/idcfs owned by D and readable by the others,
// /local/domain/D/idcfs/req owned by D, and /local/domain/D/idcfs/req/P
// readable and writable by each other domain P; the announcement of a
// daemon already running (/local/domain/D/idcfs/daemon) gets the
// permissions of /local/domain/D/idcfs. It also lets every listed
// domain read @releaseDomain. Running it again with a longer list extends
// the set; domains not listed keep their nodes but lose access to the
// listed ones.
func Setup(ctx context.Context, xs *xenstore.Client, doms []vchan.DomID) error {
	seen := make(map[vchan.DomID]bool)
	var list []vchan.DomID
	for _, d := range doms {
		if !seen[d] {
			seen[d] = true
			list = append(list, d)
		}
	}
	for _, d := range list {
		if _, err := xs.Read(ctx, DomainPath(d)); err != nil {
			return fmt.Errorf("linkmgr: setup dom %d: %s: %w", d, DomainPath(d), err)
		}
		err := xs.Transaction(ctx, func(tx *xenstore.Tx) error {
			basePerms := []xenstore.Perm{{Dom: uint32(d)}}
			for _, p := range list {
				if p != d {
					basePerms = append(basePerms, xenstore.Perm{Dom: uint32(p), Read: true})
				}
			}
			if err := writeIfMissing(ctx, tx, BasePath(d)); err != nil {
				return err
			}
			if err := tx.SetPerms(ctx, BasePath(d), basePerms); err != nil {
				return err
			}
			// A daemon running already wrote its announcement with the
			// readers of its time: the new ones must see it too.
			if _, err := tx.Read(ctx, DaemonPath(d)); err == nil {
				if err := tx.SetPerms(ctx, DaemonPath(d), basePerms); err != nil {
					return err
				}
			} else if !errors.Is(err, syscall.ENOENT) {
				return err
			}
			if err := writeIfMissing(ctx, tx, RequestDir(d)); err != nil {
				return err
			}
			if err := tx.SetPerms(ctx, RequestDir(d), []xenstore.Perm{{Dom: uint32(d)}}); err != nil {
				return err
			}
			for _, p := range list {
				if p == d {
					continue
				}
				k := RequestPath(d, p)
				if err := writeIfMissing(ctx, tx, k); err != nil {
					return err
				}
				if err := tx.SetPerms(ctx, k, []xenstore.Perm{{Dom: uint32(d)}, {Dom: uint32(p), Read: true, Write: true}}); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			return fmt.Errorf("linkmgr: setup dom %d: %w", d, err)
		}
	}
	// Xenstore answers GET_PERMS on special paths with EINVAL (Xen 4.17
	// and later), so the list is rebuilt: owner dom0, read for each domain.
	perms := []xenstore.Perm{{Dom: 0}}
	if old, err := xs.GetPerms(ctx, xenstore.ReleaseDomain); err == nil && len(old) > 0 {
		perms = old
	}
	have := make(map[uint32]bool)
	for _, p := range perms {
		have[p.Dom] = true
	}
	for _, d := range list {
		if !have[uint32(d)] {
			perms = append(perms, xenstore.Perm{Dom: uint32(d), Read: true})
		}
	}
	if err := xs.SetPerms(ctx, xenstore.ReleaseDomain, perms); err != nil {
		return fmt.Errorf("linkmgr: setup: permissions of %s: %w", xenstore.ReleaseDomain, err)
	}
	return nil
}

func writeIfMissing(ctx context.Context, tx *xenstore.Tx, path string) error {
	_, err := tx.Read(ctx, path)
	if errors.Is(err, syscall.ENOENT) {
		return tx.Write(ctx, path, "")
	}
	return err
}

// xsAgent is the Manager's Xenstore side: announcement, link requests and
// domain death.
type xsAgent struct {
	m       *Manager
	xs      *xenstore.Client
	self    vchan.DomID
	store   *Store
	gen     string
	seq     atomic.Uint64
	enabled bool // dom0 ran Setup for this domain
	reqW    *xenstore.Watch
	relW    *xenstore.Watch
	seen    map[vchan.DomID]string // last request value per peer (watch goroutine only)
}

func newXSAgent(m *Manager, xs *xenstore.Client) *xsAgent {
	return &xsAgent{m: m, xs: xs, self: m.cfg.Self, store: NewStore(xs, m.cfg.Self), seen: make(map[vchan.DomID]string)}
}

func (a *xsAgent) start(ctx context.Context) error {
	log := a.m.log
	if _, err := a.xs.Read(ctx, BasePath(a.self)); err != nil {
		if errors.Is(err, syscall.ENOENT) || errors.Is(err, syscall.EACCES) {
			log.WithError(err).Warn("domain not set up for idcfs links (dom0 must run idcfs setup); only loopback works")
			return nil
		}
		return fmt.Errorf("linkmgr: reading %s: %w", BasePath(a.self), err)
	}
	a.enabled = true
	// Rings a previous daemon of this domain served are dead: remove them
	// so no client maps a stale page.
	if kids, err := a.xs.Directory(ctx, DomainPath(a.self)+"/data/vchan"); err == nil {
		for _, k := range kids {
			p := DomainPath(a.self) + "/data/vchan/" + k + "/" + ringName
			if err := a.store.Remove(ctx, p); err != nil {
				log.WithError(err).WithField("path", p).Warn("cannot remove stale ring")
			}
		}
	}
	a.gen = strconv.FormatInt(time.Now().UnixNano(), 10)
	w, err := a.xs.Watch(ctx, RequestDir(a.self), tokenReq)
	if err != nil {
		return fmt.Errorf("linkmgr: watching %s: %w", RequestDir(a.self), err)
	}
	a.reqW = w
	a.scan(ctx, true)
	if rw, err := a.xs.Watch(ctx, xenstore.ReleaseDomain, tokenRelease); err == nil {
		a.relW = rw
	} else {
		log.WithError(err).Warn("cannot watch @releaseDomain; relying on ring liveness alone")
	}
	if err := a.xs.Write(ctx, DaemonPath(a.self), a.gen); err != nil {
		a.stop()
		return fmt.Errorf("linkmgr: announcing the daemon at %s: %w", DaemonPath(a.self), err)
	}
	log.WithField("generation", a.gen).Info("daemon announced in Xenstore")
	a.m.wg.Add(1)
	go a.watchLoop()
	return nil
}

// withdraw removes the announcement so peers fail fast from now on.
func (a *xsAgent) withdraw() error {
	if !a.enabled {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), withdrawTime)
	defer cancel()
	if err := a.xs.Rm(ctx, DaemonPath(a.self)); err != nil && !errors.Is(err, syscall.ENOENT) {
		return fmt.Errorf("linkmgr: withdrawing %s: %w", DaemonPath(a.self), err)
	}
	return nil
}

func (a *xsAgent) stop() {
	if a.reqW != nil {
		_ = a.reqW.Close()
	}
	if a.relW != nil {
		_ = a.relW.Close()
	}
}

func (a *xsAgent) watchLoop() {
	defer a.m.wg.Done()
	var rel <-chan xenstore.Event
	if a.relW != nil {
		rel = a.relW.Events()
	}
	for {
		select {
		case <-a.m.ctx.Done():
			return
		case _, ok := <-a.reqW.Events():
			if !ok {
				return
			}
			a.scan(a.m.ctx, false)
		case _, ok := <-rel:
			if !ok {
				rel = nil
				continue
			}
			a.checkLinks(a.m.ctx)
		}
	}
}

// scan reads every request node; a changed value is a new request (or, from
// a ring server, the news that it published a ring). seed only records the
// values found at startup: they are addressed to a previous daemon.
func (a *xsAgent) scan(ctx context.Context, seed bool) {
	kids, err := a.xs.Directory(ctx, RequestDir(a.self))
	if err != nil {
		if ctx.Err() == nil {
			a.m.log.WithError(err).Warn("cannot list link requests")
		}
		return
	}
	for _, k := range kids {
		d, ok := xenstore.ParseDomID(k)
		if !ok || d > 0xffff {
			continue
		}
		peer := vchan.DomID(d)
		v, err := a.xs.Read(ctx, RequestPath(a.self, peer))
		if err != nil || v == "" || v == a.seen[peer] {
			continue
		}
		a.seen[peer] = v
		if !seed && peer != a.self {
			if _, why, refused := strings.Cut(v, refusalSep); refused {
				why = cleanRefusal(why)
				a.m.log.WithFields(logrus.Fields{"peer": peer, "why": why}).Debug("link refused")
				a.m.onPeerRefusal(peer, why)
				continue
			}
			a.m.log.WithField("peer", peer).Debug("link request")
			a.m.onPeerRequest(peer)
		}
	}
}

// checkLinks drops links whose peer daemon is gone or was restarted.
func (a *xsAgent) checkLinks(ctx context.Context) {
	for peer, l := range *a.m.links.Load() {
		if peer == a.self {
			continue
		}
		gen, err := a.xs.Read(ctx, DaemonPath(peer))
		if ctx.Err() != nil {
			return
		}
		switch {
		case err != nil && (errors.Is(err, syscall.ENOENT) || errors.Is(err, syscall.EACCES)):
			l.fail(fmt.Errorf("dom %d released or its daemon gone", peer), 0, false)
		case err == nil && l.restartedPeer(gen):
			l.fail(fmt.Errorf("daemon of dom %d restarted", peer), 0, false)
		}
	}
}

// checkPeer fails fast, with a reason, when peer cannot be linked with.
// It returns the peer daemon's generation.
func (a *xsAgent) checkPeer(ctx context.Context, peer vchan.DomID) (string, error) {
	if !a.enabled {
		return "", fmt.Errorf("%w: dom %d is not set up for idcfs links (dom0 must run idcfs setup)", ErrUnreachable, a.self)
	}
	gen, err := a.xs.Read(ctx, DaemonPath(peer))
	if err == nil {
		return gen, nil
	}
	switch {
	case errors.Is(err, syscall.ENOENT):
		if _, err2 := a.xs.Read(ctx, BasePath(peer)); err2 == nil {
			return "", fmt.Errorf("%w: no idcfs daemon runs in dom %d", ErrUnreachable, peer)
		}
		return "", fmt.Errorf("%w: dom %d does not exist or is not set up for idcfs links", ErrUnreachable, peer)
	case errors.Is(err, syscall.EACCES):
		// Xenstore answers EACCES rather than ENOENT when the caller may
		// not read the parent, so a missing domain looks the same.
		return "", fmt.Errorf("%w: dom %d does not exist or dom %d may not link with it (dom0 must run idcfs setup with both)", ErrUnreachable, peer, a.self)
	case ctx.Err() != nil:
		return "", ctx.Err()
	}
	return "", fmt.Errorf("%w: reading %s: %v", ErrUnreachable, DaemonPath(peer), err)
}

// refusalSep separates a request token from the reason a ring server
// gives for not serving a ring: "<generation>.<sequence> refused: <why>".
const refusalSep = " refused: "

// maxRefusal bounds the reason shown from a peer's refusal.
const maxRefusal = 120

// cleanRefusal makes a peer's reason safe to show: printable ASCII only,
// at most maxRefusal bytes.
func cleanRefusal(why string) string {
	b := make([]byte, 0, min(len(why), maxRefusal))
	for i := 0; i < len(why) && len(b) < maxRefusal; i++ {
		if c := why[i]; c >= ' ' && c <= '~' {
			b = append(b, c)
		}
	}
	return string(b)
}

// sendRequest writes a fresh value into the peer's request node for us.
func (a *xsAgent) sendRequest(ctx context.Context, peer vchan.DomID) error {
	return a.writeToken(ctx, peer, "")
}

// sendRefusal tells a client that asked for a link that this ring server
// cannot serve one, and why, so that its Dial fails at once.
func (a *xsAgent) sendRefusal(ctx context.Context, peer vchan.DomID, why string) error {
	return a.writeToken(ctx, peer, refusalSep+cleanRefusal(why))
}

func (a *xsAgent) writeToken(ctx context.Context, peer vchan.DomID, suffix string) error {
	v := a.gen + "." + strconv.FormatUint(a.seq.Add(1), 10) + suffix
	err := a.xs.Write(ctx, RequestPath(peer, a.self), v)
	switch {
	case err == nil:
		return nil
	case errors.Is(err, syscall.EACCES) || errors.Is(err, syscall.ENOENT):
		return fmt.Errorf("%w: dom %d may not ask dom %d for a link (dom0 must run idcfs setup with both): %v", ErrUnreachable, a.self, peer, err)
	case ctx.Err() != nil:
		return ctx.Err()
	}
	return fmt.Errorf("%w: writing %s: %v", ErrUnreachable, RequestPath(peer, a.self), err)
}

// onPeerRefusal: the ring server peer cannot serve a ring. A link to it
// being set up as client fails at once with the reason; anything else
// ignores the refusal.
func (m *Manager) onPeerRefusal(peer vchan.DomID, why string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	l := m.currentLink(peer)
	if l == nil || l.role != roleClient {
		return
	}
	l.mu.Lock()
	setup := l.state == lsSetup
	l.mu.Unlock()
	if setup {
		l.refusal.Store(&why)
		signal(l.notify)
	}
}

// onPeerRequest reacts to a changed request node of peer.
func (m *Manager) onPeerRequest(peer vchan.DomID) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return
	}
	l := m.currentLink(peer)
	switch {
	case l == nil || l.isDown():
		m.startLinkLocked(peer, false)
	case l.role == roleClient:
		l.mu.Lock()
		setup := l.state == lsSetup
		l.mu.Unlock()
		if setup {
			signal(l.notify)
		}
	}
	// A ring server with a link (up or being set up) ignores the request:
	// if the client lost the link, this side sees the ring die shortly and
	// the client repeats its request until answered.
}

// setupRing builds the ring of a link to another domain: as server it
// publishes a ring and tells the client; as client it asks the server (if
// it was not told already) and maps the published ring.
func (m *Manager) setupRing(l *link) (*vchan.Endpoint, error) {
	a := m.xs
	if a == nil {
		return nil, fmt.Errorf("%w: no Xenstore connection for links to dom %d", ErrUnreachable, l.peer)
	}
	ctx, cancel := context.WithTimeout(l.ctx, m.cfg.ConnectTimeout)
	defer cancel()
	timeout := func(what string) error {
		if m.ctx.Err() != nil {
			return ErrManagerClosed
		}
		return fmt.Errorf("%w: %s dom %d (its daemon may be gone)", ErrTimeout, what, l.peer)
	}
	gen, err := a.checkPeer(ctx, l.peer)
	if err != nil {
		if ctx.Err() != nil {
			return nil, timeout("checking")
		}
		return nil, err
	}
	l.mu.Lock()
	l.peerGen = gen
	l.mu.Unlock()
	rs := m.cfg.RingSize
	if l.role == roleServer {
		for _, o := range l.after {
			select {
			case <-o.ringGone:
			case <-ctx.Done():
				return nil, timeout("closing the previous ring of")
			}
		}
		l.after = nil
		ep, err := a.listenRing(ctx, l, rs)
		if err != nil {
			if ctx.Err() != nil {
				return nil, timeout("publishing the ring for")
			}
			// A local failure (out of grant pages, say), not the peer's:
			// worth a line above debug level. A client that asked learns
			// of it at once instead of asking until its Dial times out.
			l.log.WithError(err).Warn("cannot share a ring for the link")
			why := "cannot share a ring"
			if errors.Is(err, syscall.ENOSPC) {
				why = "no room to share ring pages (ENOSPC)"
			}
			if rerr := a.sendRefusal(ctx, l.peer, why); rerr != nil {
				l.log.WithError(rerr).Debug("cannot tell the peer")
			}
			return nil, fmt.Errorf("%w: ring for dom %d: %v", ErrUnreachable, l.peer, err)
		}
		for {
			if err := a.sendRequest(ctx, l.peer); err != nil {
				_ = ep.Close()
				if ctx.Err() != nil {
					return nil, timeout("notifying")
				}
				return nil, err
			}
			wctx, wcancel := context.WithTimeout(ctx, retryInterval)
			err := ep.WaitConnected(wctx)
			wcancel()
			if err == nil {
				return ep, nil
			}
			if ctx.Err() != nil || !errors.Is(err, context.DeadlineExceeded) {
				_ = ep.Close()
				if ctx.Err() != nil {
					return nil, timeout("no client from")
				}
				return nil, fmt.Errorf("%w: ring for dom %d: %v", ErrUnreachable, l.peer, err)
			}
		}
	}
	// Client: map the ring once the server says it published one; ask (and
	// keep asking) whenever there is no fresh announcement or it was stale.
	notified := false
	select {
	case <-l.notify:
		notified = true
	default:
	}
	for {
		if why := l.refusal.Load(); why != nil {
			return nil, fmt.Errorf("%w: dom %d cannot serve a ring for the link (%s)", ErrUnreachable, l.peer, *why)
		}
		if notified {
			ep, err := vchan.Dial(ctx, m.cfg.Backend, a.store, l.peer, RingPath(l.peer, m.cfg.Self))
			if err == nil {
				return ep, nil
			}
			if ctx.Err() != nil {
				return nil, timeout("cannot map the ring of")
			}
			m.log.WithError(err).WithField("peer", l.peer).Debug("announced ring not mappable; asking again")
		}
		if err := a.sendRequest(ctx, l.peer); err != nil {
			if ctx.Err() != nil {
				return nil, timeout("asking")
			}
			return nil, err
		}
		t := time.NewTimer(retryInterval)
		select {
		case <-l.notify:
			notified = true
		case <-t.C:
			notified = false
		case <-ctx.Done():
			t.Stop()
			return nil, timeout("no ring from")
		}
		t.Stop()
	}
}

// MinFallbackRingSize is the smallest ring a server falls back to when the
// backend has no room for the configured size: one page per direction.
const MinFallbackRingSize = vchan.PageSize

// listenRing publishes the ring of a link this domain serves, with rings of
// rs bytes each way. When the backend is out of pages for that (ENOSPC:
// Xen's gntalloc device caps the grants of a whole domain, 1024 pages by
// default, and two 1 MiB rings take 513), it halves the size, down to
// MinFallbackRingSize, so that more links fit, each with smaller rings.
func (a *xsAgent) listenRing(ctx context.Context, l *link, rs int) (*vchan.Endpoint, error) {
	m := a.m
	for {
		ep, err := vchan.Listen(ctx, m.cfg.Backend, a.store, l.peer, RingPath(m.cfg.Self, l.peer), rs, rs)
		if err == nil || !errors.Is(err, syscall.ENOSPC) || rs <= MinFallbackRingSize || ctx.Err() != nil {
			return ep, err
		}
		next := max(rs/2, MinFallbackRingSize)
		l.log.WithError(err).WithFields(logrus.Fields{"ring": rs, "fallback": next}).
			Warn("no room to share a ring of this size; trying a smaller one")
		rs = next
	}
}
