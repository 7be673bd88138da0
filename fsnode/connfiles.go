package fsnode

import (
	"bytes"
	"context"
	"fmt"
	"strconv"
	"sync"
	"syscall"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"github.com/sirupsen/logrus"

	"idcfs/linkmgr"
)

// connDirNode is conn/: one directory per live connection.
type connDirNode struct {
	fs.Inode
	fsys *filesystem
}

// connIDNode is conn/<id>/ with status, ctl and data.
type connIDNode struct {
	fs.Inode
	fsys *filesystem
	id   uint64
}

// connFileNode is one of conn/<id>/{status,ctl,data}.
type connFileNode struct {
	fs.Inode
	fsys *filesystem
	id   uint64
	kind uint64 // kindConnStatus, kindConnCtl or kindConnData
}

var (
	_ fs.NodeGetattrer = (*connDirNode)(nil)
	_ fs.NodeLookuper  = (*connDirNode)(nil)
	_ fs.NodeReaddirer = (*connDirNode)(nil)
	_ fs.NodeUnlinker  = (*connDirNode)(nil)
	_ fs.NodeRmdirer   = (*connDirNode)(nil)
	_ fs.NodeGetattrer = (*connIDNode)(nil)
	_ fs.NodeLookuper  = (*connIDNode)(nil)
	_ fs.NodeReaddirer = (*connIDNode)(nil)
	_ fs.NodeUnlinker  = (*connIDNode)(nil)
	_ fs.NodeRmdirer   = (*connIDNode)(nil)
	_ fs.NodeGetattrer = (*connFileNode)(nil)
	_ fs.NodeSetattrer = (*connFileNode)(nil)
	_ fs.NodeOpener    = (*connFileNode)(nil)
	_ fs.FileReader    = (*ctlHandle)(nil)
	_ fs.FileWriter    = (*ctlHandle)(nil)
	_ fs.FileReleaser  = (*ctlHandle)(nil)
)

var connFiles = []struct {
	name string
	kind uint64
}{
	{"ctl", kindConnCtl},
	{"data", kindConnData},
	{"status", kindConnStatus},
}

// connOwner returns who owns connection id: the user that opened it
// through this filesystem, else root.
func (f *filesystem) connOwner(id uint64) (uid, gid uint32, e *connEntry) {
	if e = f.entry(id); e != nil {
		return e.uid, e.gid, e
	}
	return 0, 0, nil
}

func (d *connDirNode) Getattr(ctx context.Context, fh fs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	d.fsys.setAttr(&out.Attr, syscall.S_IFDIR|0o555, 0, 0)
	return 0
}

func (d *connDirNode) Lookup(ctx context.Context, name string, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	id, ok := parseConnID(name)
	if !ok || id > idMask || d.fsys.m.Conn(id) == nil {
		return nil, syscall.ENOENT
	}
	ch := d.NewInode(ctx, &connIDNode{fsys: d.fsys, id: id},
		fs.StableAttr{Mode: syscall.S_IFDIR, Ino: kindConn | id})
	d.fsys.setAttr(&out.Attr, syscall.S_IFDIR|0o555, 0, 0)
	return ch, 0
}

func (d *connDirNode) Readdir(ctx context.Context) (fs.DirStream, syscall.Errno) {
	conns := d.fsys.m.Conns()
	entries := make([]fuse.DirEntry, 0, len(conns))
	for _, c := range conns {
		if c.ID > idMask {
			continue
		}
		entries = append(entries, fuse.DirEntry{
			Name: strconv.FormatUint(c.ID, 10),
			Mode: syscall.S_IFDIR,
			Ino:  kindConn | c.ID,
		})
	}
	return dirStream(entries), 0
}

func (d *connDirNode) Unlink(ctx context.Context, name string) syscall.Errno { return syscall.EPERM }
func (d *connDirNode) Rmdir(ctx context.Context, name string) syscall.Errno  { return syscall.EPERM }

func (d *connIDNode) Getattr(ctx context.Context, fh fs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	d.fsys.setAttr(&out.Attr, syscall.S_IFDIR|0o555, 0, 0)
	return 0
}

func (d *connIDNode) Lookup(ctx context.Context, name string, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	for _, cf := range connFiles {
		if cf.name != name {
			continue
		}
		if d.fsys.m.Conn(d.id) == nil {
			return nil, syscall.ENOENT
		}
		n := &connFileNode{fsys: d.fsys, id: d.id, kind: cf.kind}
		ch := d.NewInode(ctx, n, fs.StableAttr{Mode: syscall.S_IFREG, Ino: cf.kind | d.id})
		ch.Operations().(*connFileNode).attr(&out.Attr)
		return ch, 0
	}
	return nil, syscall.ENOENT
}

func (d *connIDNode) Readdir(ctx context.Context) (fs.DirStream, syscall.Errno) {
	entries := make([]fuse.DirEntry, 0, len(connFiles))
	for _, cf := range connFiles {
		entries = append(entries, fuse.DirEntry{Name: cf.name, Mode: syscall.S_IFREG, Ino: cf.kind | d.id})
	}
	return fs.NewListDirStream(entries), 0
}

func (d *connIDNode) Unlink(ctx context.Context, name string) syscall.Errno { return syscall.EPERM }
func (d *connIDNode) Rmdir(ctx context.Context, name string) syscall.Errno  { return syscall.EPERM }

// attr: status is world-readable; ctl and data belong to the connection's
// owner.
func (n *connFileNode) attr(a *fuse.Attr) {
	uid, gid, _ := n.fsys.connOwner(n.id)
	switch n.kind {
	case kindConnStatus:
		n.fsys.setAttr(a, syscall.S_IFREG|0o444, uid, gid)
	default:
		n.fsys.setAttr(a, syscall.S_IFREG|0o600, uid, gid)
	}
}

func (n *connFileNode) Getattr(ctx context.Context, fh fs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	n.attr(&out.Attr)
	return 0
}

func (n *connFileNode) Setattr(ctx context.Context, fh fs.FileHandle, in *fuse.SetAttrIn, out *fuse.AttrOut) syscall.Errno {
	if n.kind == kindConnStatus {
		return syscall.EPERM
	}
	if errno := setattrStream(in); errno != 0 {
		return errno
	}
	n.attr(&out.Attr)
	return 0
}

func (n *connFileNode) Open(ctx context.Context, flags uint32) (fs.FileHandle, uint32, syscall.Errno) {
	f := n.fsys
	log := f.log.WithFields(logrus.Fields{"op": opOpen, "conn": n.id, "ino": n.kind | n.id})
	c := f.m.Conn(n.id)
	if c == nil {
		return nil, 0, syscall.ENOENT
	}
	if n.kind == kindConnStatus {
		if errno := readOnlyOpen(flags); errno != 0 {
			return nil, 0, errno
		}
		return newTextHandle(statusText(c.Info(), f.entry(n.id))), streamFlags, 0
	}
	uid, _, _, ok := caller(ctx)
	if !ok {
		return nil, 0, syscall.EACCES
	}
	owner, _, e := f.connOwner(n.id)
	if n.kind == kindConnData && e == nil {
		// Not opened here, or its last handle is gone (the link manager
		// may still be finishing it): nothing to attach to.
		return nil, 0, syscall.ENOENT
	}
	if uid != 0 && uid != owner {
		log.WithField("owner", owner).Debug("connection belongs to another user")
		return nil, 0, syscall.EACCES
	}
	if n.kind == kindConnCtl {
		return &ctlHandle{fsys: f, id: n.id, c: c, e: e, log: log.WithField("op", opCtl)}, streamFlags, 0
	}
	// data: another handle on a connection opened through this
	// filesystem.
	h, errno := e.newHandle(flags)
	if errno != 0 {
		return nil, 0, errno
	}
	return h, streamFlags, 0
}

// statusText renders conn/<id>/status: one "key value" pair per line.
// The handle counts and the opener appear only for connections opened
// through this filesystem.
func statusText(info linkmgr.ConnInfo, e *connEntry) []byte {
	var b bytes.Buffer
	fmt.Fprintf(&b, "id %d\n", info.ID)
	fmt.Fprintf(&b, "state %s\n", info.State)
	fmt.Fprintf(&b, "local %s\n", info.Local)
	fmt.Fprintf(&b, "remote %s\n", info.Remote)
	fmt.Fprintf(&b, "bytes_in %d\n", info.BytesIn)
	fmt.Fprintf(&b, "bytes_out %d\n", info.BytesOut)
	if e != nil {
		r, w := e.counts()
		fmt.Fprintf(&b, "uid %d\n", e.uid)
		fmt.Fprintf(&b, "pid %d\n", e.pid)
		fmt.Fprintf(&b, "readers %d\n", r)
		fmt.Fprintf(&b, "writers %d\n", w)
	}
	return b.Bytes()
}

// ctlHandle is an open conn/<id>/ctl. Reading gives the connection id;
// each write is a list of commands (see parseCtl).
type ctlHandle struct {
	fsys *filesystem
	id   uint64
	c    *linkmgr.Conn
	e    *connEntry // nil if the connection was not opened here
	log  *logrus.Entry

	mu       sync.Mutex
	pos      int
	released bool
}

func (h *ctlHandle) Read(ctx context.Context, dest []byte, off int64) (fuse.ReadResult, syscall.Errno) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.released {
		return nil, syscall.EBADF
	}
	text := strconv.AppendUint(nil, h.id, 10)
	text = append(text, '\n')
	if h.pos >= len(text) {
		return fuse.ReadResultData(nil), 0
	}
	n := copy(dest, text[h.pos:])
	h.pos += n
	return fuse.ReadResultData(dest[:n]), 0
}

func (h *ctlHandle) Write(ctx context.Context, data []byte, off int64) (uint32, syscall.Errno) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.released {
		return 0, syscall.EBADF
	}
	cmds, err := parseCtl(data)
	if err != nil {
		h.log.WithError(err).Debug("bad ctl command")
		return 0, syscall.EINVAL
	}
	for _, cmd := range cmds {
		var err error
		switch cmd {
		case ctlShutdown:
			err = h.c.CloseWrite()
			if err == nil && h.e != nil {
				h.e.markShutWr()
			}
		case ctlHangup:
			err = h.c.Reset()
		}
		if err != nil {
			return 0, fail(h.log.WithField("cmd", cmd.String()), opCtl, err)
		}
		h.log.WithField("cmd", cmd.String()).Info("ctl command")
	}
	if len(cmds) > 0 {
		h.fsys.poke()
	}
	return uint32(len(data)), 0
}

func (h *ctlHandle) Release(ctx context.Context) syscall.Errno {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.released = true
	return 0
}
