package fsnode

import (
	"context"
	"errors"
	"strconv"
	"syscall"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"github.com/sirupsen/logrus"

	"idcfs/linkmgr"
)

// privilegedPorts are the ports below this number: binding them needs root.
const privilegedPorts = 1024

// listenDirNode is listen/: Lookup answers for every valid port name, bound
// or not (so a shell can open a port that is not bound yet); Readdir lists
// the bound ones; Unlink (rm) unbinds.
type listenDirNode struct {
	fs.Inode
	fsys *filesystem
}

var (
	_ fs.NodeGetattrer = (*listenDirNode)(nil)
	_ fs.NodeLookuper  = (*listenDirNode)(nil)
	_ fs.NodeReaddirer = (*listenDirNode)(nil)
	_ fs.NodeUnlinker  = (*listenDirNode)(nil)
	_ fs.NodeRmdirer   = (*listenDirNode)(nil)
	_ fs.NodeCreater   = (*listenDirNode)(nil)
	_ fs.NodeGetattrer = (*portNode)(nil)
	_ fs.NodeSetattrer = (*portNode)(nil)
	_ fs.NodeOpener    = (*portNode)(nil)
)

func (d *listenDirNode) Getattr(ctx context.Context, fh fs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	// Everyone may bind (open) and unbind (rm) here; Unlink checks that
	// the caller owns the port.
	d.fsys.setAttr(&out.Attr, syscall.S_IFDIR|0o777, 0, 0)
	return 0
}

func (d *listenDirNode) portInode(ctx context.Context, num uint32, out *fuse.EntryOut) *fs.Inode {
	n := &portNode{fsys: d.fsys, num: num}
	ch := d.NewInode(ctx, n, fs.StableAttr{Mode: syscall.S_IFREG, Ino: kindPort | uint64(num)})
	ch.Operations().(*portNode).attr(&out.Attr)
	return ch
}

func (d *listenDirNode) Lookup(ctx context.Context, name string, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	num, ok := parsePort(name)
	if !ok {
		return nil, syscall.ENOENT
	}
	return d.portInode(ctx, num, out), 0
}

// Create is reached only when the kernel holds a negative entry for the
// name; it opens the port as Open would.
func (d *listenDirNode) Create(ctx context.Context, name string, flags, mode uint32, out *fuse.EntryOut) (*fs.Inode, fs.FileHandle, uint32, syscall.Errno) {
	num, ok := parsePort(name)
	if !ok {
		return nil, nil, 0, syscall.EINVAL
	}
	ch := d.portInode(ctx, num, out)
	fh, fl, errno := d.fsys.accept(ctx, num, flags)
	if errno != 0 {
		return nil, nil, 0, errno
	}
	return ch, fh, fl, 0
}

func (d *listenDirNode) Readdir(ctx context.Context) (fs.DirStream, syscall.Errno) {
	f := d.fsys
	f.mu.Lock()
	entries := make([]fuse.DirEntry, 0, len(f.ports))
	for num := range f.ports {
		entries = append(entries, fuse.DirEntry{
			Name: strconv.FormatUint(uint64(num), 10),
			Mode: syscall.S_IFREG,
			Ino:  kindPort | uint64(num),
		})
	}
	f.mu.Unlock()
	return dirStream(entries), 0
}

// Unlink unbinds a port: later connects are refused, opens blocked in
// accept fail with ECONNABORTED, established connections live on.
func (d *listenDirNode) Unlink(ctx context.Context, name string) syscall.Errno {
	num, ok := parsePort(name)
	if !ok {
		return syscall.ENOENT
	}
	return d.fsys.unbind(ctx, num)
}

func (d *listenDirNode) Rmdir(ctx context.Context, name string) syscall.Errno {
	return syscall.ENOTDIR
}

// portNode is listen/<port>.
type portNode struct {
	fs.Inode
	fsys *filesystem
	num  uint32
}

// attr reports the port's owner: a bound port is its binder's, mode 0600;
// an unbound one is root's, 0666 (anyone may bind it) or 0600 below 1024.
func (n *portNode) attr(a *fuse.Attr) {
	f := n.fsys
	f.mu.Lock()
	p := f.ports[n.num]
	f.mu.Unlock()
	switch {
	case p != nil:
		f.setAttr(a, syscall.S_IFREG|0o600, p.uid, p.gid)
	case n.num < privilegedPorts:
		f.setAttr(a, syscall.S_IFREG|0o600, 0, 0)
	default:
		f.setAttr(a, syscall.S_IFREG|0o666, 0, 0)
	}
}

func (n *portNode) Getattr(ctx context.Context, fh fs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	n.attr(&out.Attr)
	return 0
}

func (n *portNode) Setattr(ctx context.Context, fh fs.FileHandle, in *fuse.SetAttrIn, out *fuse.AttrOut) syscall.Errno {
	if errno := setattrStream(in); errno != 0 {
		return errno
	}
	n.attr(&out.Attr)
	return 0
}

func (n *portNode) Open(ctx context.Context, flags uint32) (fs.FileHandle, uint32, syscall.Errno) {
	return n.fsys.accept(ctx, n.num, flags)
}

// bind returns the port's binding, binding it for uid on first use.
func (f *filesystem) bind(num, uid, gid uint32, log *logrus.Entry) (*port, syscall.Errno) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closing {
		return nil, syscall.ECONNABORTED
	}
	if p := f.ports[num]; p != nil {
		if uid != 0 && uid != p.uid {
			log.WithField("owner", p.uid).Debug("port belongs to another user")
			return nil, syscall.EACCES
		}
		return p, 0
	}
	if num < privilegedPorts && uid != 0 {
		log.Debug("binding a port below 1024 needs root")
		return nil, syscall.EACCES
	}
	l, err := f.m.Listen(num, f.backlog)
	if err != nil {
		return nil, fail(log, opBind, err)
	}
	p := &port{num: num, l: l, uid: uid, gid: gid}
	f.ports[num] = p
	log.WithField("uid", uid).Info("port bound")
	return p, 0
}

// accept serves an open of listen/<num>: bind on first use, then take one
// connection, waiting for it unless O_NONBLOCK.
func (f *filesystem) accept(ctx context.Context, num, flags uint32) (fs.FileHandle, uint32, syscall.Errno) {
	log := f.log.WithFields(logrus.Fields{"op": opAccept, "port": num, "ino": kindPort | uint64(num)})
	uid, gid, pid, ok := caller(ctx)
	if !ok {
		return nil, 0, syscall.EACCES
	}
	p, errno := f.bind(num, uid, gid, log)
	if errno != 0 {
		return nil, 0, errno
	}
	var c *linkmgr.Conn
	var err error
	if flags&syscall.O_NONBLOCK != 0 {
		c, err = p.l.TryAccept()
	} else {
		octx, done := f.opContext(ctx)
		c, err = p.l.Accept(octx)
		done()
	}
	if err != nil {
		if f.shuttingDown() {
			return nil, 0, syscall.ECONNABORTED
		}
		if errors.Is(err, linkmgr.ErrListenerClosed) {
			f.listenerGone(p)
		}
		return nil, 0, fail(log, opAccept, err)
	}
	h, errno := f.adopt(c, flags, uid, gid, pid, log)
	if errno != 0 {
		return nil, 0, errno
	}
	return h, streamFlags, 0
}

// listenerGone forgets a binding whose listener closed without rm (the
// link manager closed it) and asks the pruner to tell the kernel.
func (f *filesystem) listenerGone(p *port) {
	f.mu.Lock()
	if f.ports[p.num] == p {
		delete(f.ports, p.num)
		f.dead = append(f.dead, p.num)
	}
	f.mu.Unlock()
	f.poke()
}

// unbind serves rm listen/<num>.
func (f *filesystem) unbind(ctx context.Context, num uint32) syscall.Errno {
	log := f.log.WithFields(logrus.Fields{"op": opUnlink, "port": num, "ino": kindPort | uint64(num)})
	uid, _, _, ok := caller(ctx)
	if !ok {
		return syscall.EACCES
	}
	f.mu.Lock()
	p := f.ports[num]
	switch {
	case p == nil:
		f.mu.Unlock()
		return syscall.ENOENT
	case uid != 0 && uid != p.uid:
		f.mu.Unlock()
		log.WithField("owner", p.uid).Debug("port belongs to another user")
		return syscall.EACCES
	}
	delete(f.ports, num)
	f.mu.Unlock()
	if err := p.l.Close(); err != nil {
		log.WithError(err).Debug("closing listener")
	}
	log.Info("port unbound")
	return 0
}
