package fsnode

import (
	"context"
	"fmt"
	"syscall"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
)

// rootNode is the mount root. Its children are fixed and built in OnAdd.
type rootNode struct {
	fs.Inode
	fsys *filesystem

	listen  *listenDirNode
	connect *connectDirNode
	conn    *connDirNode
	links   *linksDirNode
}

var (
	_ fs.NodeOnAdder   = (*rootNode)(nil)
	_ fs.NodeGetattrer = (*rootNode)(nil)
	_ fs.NodeUnlinker  = (*rootNode)(nil)
	_ fs.NodeRmdirer   = (*rootNode)(nil)
	_ fs.NodeGetattrer = (*selfNode)(nil)
	_ fs.NodeOpener    = (*selfNode)(nil)
	_ fs.NodeSetattrer = (*selfNode)(nil)
	_ fs.FileReader    = (*textHandle)(nil)
	_ fs.FileReleaser  = (*textHandle)(nil)
)

func (r *rootNode) OnAdd(ctx context.Context) {
	f := r.fsys
	r.listen = &listenDirNode{fsys: f}
	r.connect = &connectDirNode{fsys: f}
	r.conn = &connDirNode{fsys: f}
	r.links = &linksDirNode{fsys: f}
	add := func(name string, node fs.InodeEmbedder, mode uint32, ino uint64) {
		ch := r.NewPersistentInode(ctx, node, fs.StableAttr{Mode: mode, Ino: ino})
		r.AddChild(name, ch, false)
	}
	add("self", &selfNode{fsys: f}, syscall.S_IFREG, inoSelf)
	add("listen", r.listen, syscall.S_IFDIR, inoListenDir)
	add("connect", r.connect, syscall.S_IFDIR, inoConnectDir)
	add("conn", r.conn, syscall.S_IFDIR, inoConnDir)
	add("links", r.links, syscall.S_IFDIR, inoLinksDir)
}

func (r *rootNode) Getattr(ctx context.Context, fh fs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	r.fsys.setAttr(&out.Attr, syscall.S_IFDIR|0o555, 0, 0)
	return 0
}

// Unlink and Rmdir refuse: the fixed entries cannot be removed (go-fuse's
// default would drop them from the tree).
func (r *rootNode) Unlink(ctx context.Context, name string) syscall.Errno { return syscall.EPERM }
func (r *rootNode) Rmdir(ctx context.Context, name string) syscall.Errno  { return syscall.EPERM }

// selfNode is the file "self": this domain's id and a newline.
type selfNode struct {
	fs.Inode
	fsys *filesystem
}

func (n *selfNode) Getattr(ctx context.Context, fh fs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	n.fsys.setAttr(&out.Attr, syscall.S_IFREG|0o444, 0, 0)
	return 0
}

func (n *selfNode) Setattr(ctx context.Context, fh fs.FileHandle, in *fuse.SetAttrIn, out *fuse.AttrOut) syscall.Errno {
	return syscall.EPERM
}

func (n *selfNode) Open(ctx context.Context, flags uint32) (fs.FileHandle, uint32, syscall.Errno) {
	if errno := readOnlyOpen(flags); errno != 0 {
		return nil, 0, errno
	}
	return newTextHandle(fmt.Appendf(nil, "%d\n", n.fsys.m.Self())), streamFlags, 0
}
