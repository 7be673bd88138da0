package fsnode

import (
	"context"
	"syscall"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"github.com/sirupsen/logrus"

	"idcfs/vchan"
)

// connectDirNode is connect/: every valid domid resolves; Readdir lists
// the domains this one has a link to.
type connectDirNode struct {
	fs.Inode
	fsys *filesystem
}

// connectPeerNode is connect/<domid>/: every valid port resolves; nothing
// is listed (the peer's bound ports are not known here).
type connectPeerNode struct {
	fs.Inode
	fsys *filesystem
	peer vchan.DomID
}

// connectNode is connect/<domid>/<port>: open dials.
type connectNode struct {
	fs.Inode
	fsys *filesystem
	peer vchan.DomID
	port uint32
}

var (
	_ fs.NodeGetattrer = (*connectDirNode)(nil)
	_ fs.NodeLookuper  = (*connectDirNode)(nil)
	_ fs.NodeReaddirer = (*connectDirNode)(nil)
	_ fs.NodeUnlinker  = (*connectDirNode)(nil)
	_ fs.NodeRmdirer   = (*connectDirNode)(nil)
	_ fs.NodeGetattrer = (*connectPeerNode)(nil)
	_ fs.NodeLookuper  = (*connectPeerNode)(nil)
	_ fs.NodeReaddirer = (*connectPeerNode)(nil)
	_ fs.NodeUnlinker  = (*connectPeerNode)(nil)
	_ fs.NodeRmdirer   = (*connectPeerNode)(nil)
	_ fs.NodeGetattrer = (*connectNode)(nil)
	_ fs.NodeSetattrer = (*connectNode)(nil)
	_ fs.NodeOpener    = (*connectNode)(nil)
)

func (d *connectDirNode) Getattr(ctx context.Context, fh fs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	d.fsys.setAttr(&out.Attr, syscall.S_IFDIR|0o555, 0, 0)
	return 0
}

func (d *connectDirNode) Lookup(ctx context.Context, name string, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	dom, ok := parseDomID(name)
	if !ok {
		return nil, syscall.ENOENT
	}
	ch := d.NewInode(ctx, &connectPeerNode{fsys: d.fsys, peer: dom},
		fs.StableAttr{Mode: syscall.S_IFDIR, Ino: kindConnectPeer | uint64(dom)})
	d.fsys.setAttr(&out.Attr, syscall.S_IFDIR|0o555, 0, 0)
	return ch, 0
}

func (d *connectDirNode) Readdir(ctx context.Context) (fs.DirStream, syscall.Errno) {
	return dirStream(peerEntries(d.fsys.m.Links(), syscall.S_IFDIR, kindConnectPeer)), 0
}

func (d *connectDirNode) Unlink(ctx context.Context, name string) syscall.Errno { return syscall.EPERM }
func (d *connectDirNode) Rmdir(ctx context.Context, name string) syscall.Errno  { return syscall.EPERM }

func (d *connectPeerNode) Getattr(ctx context.Context, fh fs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	d.fsys.setAttr(&out.Attr, syscall.S_IFDIR|0o555, 0, 0)
	return 0
}

func (d *connectPeerNode) Lookup(ctx context.Context, name string, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	num, ok := parsePort(name)
	if !ok {
		return nil, syscall.ENOENT
	}
	ch := d.NewInode(ctx, &connectNode{fsys: d.fsys, peer: d.peer, port: num},
		fs.StableAttr{Mode: syscall.S_IFREG, Ino: kindConnectPort | uint64(d.peer)<<32 | uint64(num)})
	d.fsys.setAttr(&out.Attr, syscall.S_IFREG|0o666, 0, 0)
	return ch, 0
}

func (d *connectPeerNode) Readdir(ctx context.Context) (fs.DirStream, syscall.Errno) {
	return fs.NewListDirStream(nil), 0
}

func (d *connectPeerNode) Unlink(ctx context.Context, name string) syscall.Errno {
	return syscall.EPERM
}
func (d *connectPeerNode) Rmdir(ctx context.Context, name string) syscall.Errno { return syscall.EPERM }

func (n *connectNode) Getattr(ctx context.Context, fh fs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	n.fsys.setAttr(&out.Attr, syscall.S_IFREG|0o666, 0, 0)
	return 0
}

func (n *connectNode) Setattr(ctx context.Context, fh fs.FileHandle, in *fuse.SetAttrIn, out *fuse.AttrOut) syscall.Errno {
	if errno := setattrStream(in); errno != 0 {
		return errno
	}
	n.fsys.setAttr(&out.Attr, syscall.S_IFREG|0o666, 0, 0)
	return 0
}

// Open connects to the peer's port; the open file is the connection.
func (n *connectNode) Open(ctx context.Context, flags uint32) (fs.FileHandle, uint32, syscall.Errno) {
	f := n.fsys
	log := f.log.WithFields(logrus.Fields{
		"op": opConnect, "peer": n.peer, "port": n.port,
		"ino": kindConnectPort | uint64(n.peer)<<32 | uint64(n.port),
	})
	uid, gid, pid, ok := caller(ctx)
	if !ok {
		return nil, 0, syscall.EACCES
	}
	if f.shuttingDown() {
		return nil, 0, syscall.ECONNABORTED
	}
	octx, done := f.opContext(ctx)
	c, err := f.m.Dial(octx, n.peer, n.port)
	done()
	if err != nil {
		if f.shuttingDown() {
			return nil, 0, syscall.ECONNABORTED
		}
		return nil, 0, fail(log, opConnect, err)
	}
	h, errno := f.adopt(c, flags, uid, gid, pid, log)
	if errno != 0 {
		return nil, 0, errno
	}
	return h, streamFlags, 0
}
