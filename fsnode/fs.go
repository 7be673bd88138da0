package fsnode

import (
	"context"
	"sort"
	"sync"
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"github.com/sirupsen/logrus"

	"idcfs/linkmgr"
)

// Inode numbers: the top byte says what kind of object, the rest which one,
// so that concurrent lookups of one name find one inode (the bridge
// deduplicates on Ino).
const (
	inoRoot uint64 = 1 + iota
	inoSelf
	inoListenDir
	inoConnectDir
	inoConnDir
	inoLinksDir
)

const (
	kindPort        uint64 = 1 << 56 // listen/<port>
	kindConnectPeer uint64 = 2 << 56 // connect/<domid>/
	kindConnectPort uint64 = 3 << 56 // connect/<domid>/<port>: domid<<32 | port
	kindLink        uint64 = 4 << 56 // links/<domid>
	kindConn        uint64 = 5 << 56 // conn/<id>/
	kindConnStatus  uint64 = 6 << 56
	kindConnCtl     uint64 = 7 << 56
	kindConnData    uint64 = 8 << 56
	idMask          uint64 = 1<<56 - 1
)

// streamFlags are the open flags of every file served from a handle:
// no page cache, no offsets, reads and writes independent of each other.
const streamFlags = fuse.FOPEN_DIRECT_IO | fuse.FOPEN_STREAM | fuse.FOPEN_NONSEEKABLE

// filesystem is the state shared by every node of one mount.
type filesystem struct {
	m       *linkmgr.Manager
	log     *logrus.Entry
	backlog int
	start   time.Time

	// life is cancelled by shutdown; blocking opens watch it next to
	// their request's context.
	life     context.Context
	stopLife context.CancelFunc

	// kick asks the pruner to look for vanished connections and ports now.
	kick chan struct{}

	mu      sync.Mutex
	closing bool
	ports   map[uint32]*port      // bound through listen/
	conns   map[uint64]*connEntry // opened through listen/ or connect/
	dead    []uint32              // ports whose listener closed without rm

	root *rootNode
}

// port is a port bound through listen/<port>: it belongs to the uid that
// bound it until rm.
type port struct {
	num uint32
	l   *linkmgr.Listener
	uid uint32
	gid uint32
}

func newFilesystem(m *linkmgr.Manager, log *logrus.Entry, backlog int) *filesystem {
	life, stop := context.WithCancel(context.Background())
	f := &filesystem{
		m:        m,
		log:      log,
		backlog:  backlog,
		start:    time.Now(),
		life:     life,
		stopLife: stop,
		kick:     make(chan struct{}, 1),
		ports:    make(map[uint32]*port),
		conns:    make(map[uint64]*connEntry),
	}
	f.root = &rootNode{fsys: f}
	return f
}

// poke wakes the pruner without waiting for it.
func (f *filesystem) poke() {
	select {
	case f.kick <- struct{}{}:
	default:
	}
}

// caller returns who made the request. Requests from the kernel always
// carry it; a context without it is refused.
func caller(ctx context.Context) (uid, gid, pid uint32, ok bool) {
	c, ok := fuse.FromContext(ctx)
	if !ok || c == nil {
		return 0, 0, 0, false
	}
	return c.Uid, c.Gid, c.Pid, true
}

// opContext derives a context for a blocking open: it ends when the
// request is interrupted or when the filesystem shuts down.
func (f *filesystem) opContext(ctx context.Context) (context.Context, context.CancelFunc) {
	c, cancel := context.WithCancel(ctx)
	stop := context.AfterFunc(f.life, cancel)
	return c, func() {
		stop()
		cancel()
	}
}

// shuttingDown reports whether shutdown has begun.
func (f *filesystem) shuttingDown() bool {
	return f.life.Err() != nil
}

// setAttr fills the attributes every node reports: a mode, an owner, size
// 0 and the mount time as all three times.
func (f *filesystem) setAttr(a *fuse.Attr, mode, uid, gid uint32) {
	a.Mode = mode
	a.Owner = fuse.Owner{Uid: uid, Gid: gid}
	a.Size = 0
	a.Blocks = 0
	a.Nlink = 1
	if mode&syscall.S_IFMT == syscall.S_IFDIR {
		a.Nlink = 2
	}
	t := f.start
	a.SetTimes(&t, &t, &t)
}

// setattrStream answers SETATTR on files that are streams or commands:
// truncation (O_TRUNC, as `echo >` asks for) and times are accepted and
// change nothing; mode and owner cannot be changed.
func setattrStream(in *fuse.SetAttrIn) syscall.Errno {
	if in.Valid&(fuse.FATTR_MODE|fuse.FATTR_UID|fuse.FATTR_GID) != 0 {
		return syscall.EPERM
	}
	return 0
}

// dirStream builds a directory listing in inode order, which for numbered
// entries of one kind is numeric order.
func dirStream(entries []fuse.DirEntry) fs.DirStream {
	sort.Slice(entries, func(i, j int) bool { return entries[i].Ino < entries[j].Ino })
	return fs.NewListDirStream(entries)
}

// readOnlyOpen rejects opens that ask to write to a read-only text file.
// The kernel already refuses non-root writers from the 0444 mode; root
// passes its permission check, so say it here.
func readOnlyOpen(flags uint32) syscall.Errno {
	if flags&syscall.O_ACCMODE != syscall.O_RDONLY {
		return syscall.EACCES
	}
	return 0
}
