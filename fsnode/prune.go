package fsnode

import (
	"strconv"
	"time"

	"github.com/hanwen/go-fuse/v2/fs"
)

// pruneLoop removes from the tree, and from the kernel's caches, the
// connections and links that went away and the ports whose listener
// closed by itself. It runs in its own goroutine and holds none of the
// filesystem's locks while it notifies the kernel, because go-fuse's
// notifications wait for the kernel, which may be waiting for us.
func (f *filesystem) pruneLoop(interval time.Duration, stop <-chan struct{}, done chan<- struct{}) {
	defer close(done)
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-stop:
			return
		case <-t.C:
		case <-f.kick:
		}
		f.prune()
	}
}

// prune does one pass of pruneLoop.
func (f *filesystem) prune() {
	r := f.root
	if r.conn == nil {
		return // not added to a tree yet
	}

	live := make(map[uint64]bool)
	for _, c := range f.m.Conns() {
		live[c.ID] = true
	}
	removeStale(&r.conn.Inode, func(name string) bool {
		id, ok := parseConnID(name)
		return ok && live[id]
	})

	peers := make(map[uint64]bool)
	for _, l := range f.m.Links() {
		peers[uint64(l.Peer)] = true
	}
	removeStale(&r.links.Inode, func(name string) bool {
		dom, ok := parseDomID(name)
		return ok && peers[uint64(dom)]
	})

	f.mu.Lock()
	dead := f.dead
	f.dead = nil
	f.mu.Unlock()
	for _, num := range dead {
		name := strconv.FormatUint(uint64(num), 10)
		if ch := r.listen.GetChild(name); ch != nil {
			r.listen.RmChild(name)
			r.listen.NotifyDelete(name, ch)
		}
	}
}

// removeStale drops the children of dir that keep says are gone and tells
// the kernel to forget their names.
func removeStale(dir *fs.Inode, keep func(name string) bool) {
	for name, ch := range dir.Children() {
		if keep(name) {
			continue
		}
		dir.RmChild(name)
		dir.NotifyDelete(name, ch)
	}
}
