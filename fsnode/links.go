package fsnode

import (
	"bytes"
	"context"
	"fmt"
	"strconv"
	"syscall"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"

	"idcfs/linkmgr"
	"idcfs/vchan"
)

// linksDirNode is links/: one file per link to a peer domain.
type linksDirNode struct {
	fs.Inode
	fsys *filesystem
}

// linkNode is links/<domid>.
type linkNode struct {
	fs.Inode
	fsys *filesystem
	peer vchan.DomID
}

var (
	_ fs.NodeGetattrer = (*linksDirNode)(nil)
	_ fs.NodeLookuper  = (*linksDirNode)(nil)
	_ fs.NodeReaddirer = (*linksDirNode)(nil)
	_ fs.NodeUnlinker  = (*linksDirNode)(nil)
	_ fs.NodeRmdirer   = (*linksDirNode)(nil)
	_ fs.NodeGetattrer = (*linkNode)(nil)
	_ fs.NodeSetattrer = (*linkNode)(nil)
	_ fs.NodeOpener    = (*linkNode)(nil)
)

// links returns the link manager's view of the links to peer: usually one,
// two for loopback (this domain's server and client ends).
func (f *filesystem) links(peer vchan.DomID) []linkmgr.LinkInfo {
	var out []linkmgr.LinkInfo
	for _, l := range f.m.Links() {
		if l.Peer == peer {
			out = append(out, l)
		}
	}
	return out
}

// peerEntries lists the domains with at least one link, each once, as
// directory entries of the given mode and inode kind (connect/ and links/).
func peerEntries(links []linkmgr.LinkInfo, mode uint32, kind uint64) []fuse.DirEntry {
	seen := make(map[vchan.DomID]bool, len(links))
	entries := make([]fuse.DirEntry, 0, len(links))
	for _, l := range links {
		if seen[l.Peer] {
			continue
		}
		seen[l.Peer] = true
		entries = append(entries, fuse.DirEntry{
			Name: strconv.FormatUint(uint64(l.Peer), 10),
			Mode: mode,
			Ino:  kind | uint64(l.Peer),
		})
	}
	return entries
}

func (d *linksDirNode) Getattr(ctx context.Context, fh fs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	d.fsys.setAttr(&out.Attr, syscall.S_IFDIR|0o555, 0, 0)
	return 0
}

func (d *linksDirNode) Lookup(ctx context.Context, name string, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	dom, ok := parseDomID(name)
	if !ok {
		return nil, syscall.ENOENT
	}
	if len(d.fsys.links(dom)) == 0 {
		return nil, syscall.ENOENT
	}
	ch := d.NewInode(ctx, &linkNode{fsys: d.fsys, peer: dom},
		fs.StableAttr{Mode: syscall.S_IFREG, Ino: kindLink | uint64(dom)})
	d.fsys.setAttr(&out.Attr, syscall.S_IFREG|0o444, 0, 0)
	return ch, 0
}

func (d *linksDirNode) Readdir(ctx context.Context) (fs.DirStream, syscall.Errno) {
	return dirStream(peerEntries(d.fsys.m.Links(), syscall.S_IFREG, kindLink)), 0
}

func (d *linksDirNode) Unlink(ctx context.Context, name string) syscall.Errno { return syscall.EPERM }
func (d *linksDirNode) Rmdir(ctx context.Context, name string) syscall.Errno  { return syscall.EPERM }

func (n *linkNode) Getattr(ctx context.Context, fh fs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	n.fsys.setAttr(&out.Attr, syscall.S_IFREG|0o444, 0, 0)
	return 0
}

func (n *linkNode) Setattr(ctx context.Context, fh fs.FileHandle, in *fuse.SetAttrIn, out *fuse.AttrOut) syscall.Errno {
	return syscall.EPERM
}

func (n *linkNode) Open(ctx context.Context, flags uint32) (fs.FileHandle, uint32, syscall.Errno) {
	if errno := readOnlyOpen(flags); errno != 0 {
		return nil, 0, errno
	}
	links := n.fsys.links(n.peer)
	if len(links) == 0 {
		return nil, 0, syscall.ENOENT
	}
	return newTextHandle(linkText(links)), streamFlags, 0
}

// linkText renders links/<domid>: one "key value" pair per line, a block
// per link, blocks separated by an empty line.
func linkText(links []linkmgr.LinkInfo) []byte {
	var b bytes.Buffer
	for i, l := range links {
		if i > 0 {
			b.WriteByte('\n')
		}
		writeLink(&b, l)
	}
	return b.Bytes()
}

func writeLink(b *bytes.Buffer, l linkmgr.LinkInfo) {
	fmt.Fprintf(b, "peer %d\n", l.Peer)
	fmt.Fprintf(b, "state %s\n", l.State)
	fmt.Fprintf(b, "role %s\n", l.Role)
	fmt.Fprintf(b, "read_ring %d\n", l.ReadRing)
	fmt.Fprintf(b, "write_ring %d\n", l.WriteRing)
	fmt.Fprintf(b, "conns %d\n", l.Conns)
	fmt.Fprintf(b, "bytes_in %d\n", l.BytesIn)
	fmt.Fprintf(b, "bytes_out %d\n", l.BytesOut)
	fmt.Fprintf(b, "frames_in %d\n", l.FramesIn)
	fmt.Fprintf(b, "frames_out %d\n", l.FramesOut)
}
