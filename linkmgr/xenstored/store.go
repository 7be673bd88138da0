package xenstored

import (
	"slices"
	"strings"
	"syscall"

	"idcfs/linkmgr/xenstore"
)

// Per-domain limits applied to unprivileged domains, the C xenstored
// defaults.
const (
	quotaWatches      = 128  // watches per domain
	quotaTransactions = 10   // open transactions per domain
	quotaPerms        = 5    // permission entries per node
	quotaNodeSize     = 2048 // value + permission strings + child names
	quotaNodes        = 1000 // nodes owned per domain
)

// node is one Xenstore node. Nodes are never changed once stored: an
// operation stores a modified copy, so a transaction can keep pointers to
// the nodes it saw.
type node struct {
	value    []byte
	perms    []xenstore.Perm
	children []string // leaf names, sorted
	gen      uint64   // store generation of the last change
}

func (n *node) clone() *node {
	return &node{
		value:    n.value,
		perms:    n.perms,
		children: n.children,
	}
}

// size is what the node-size quota counts.
func (n *node) size() int {
	s := len(n.value)
	for _, p := range n.perms {
		s += len(p.String()) + 1
	}
	for _, c := range n.children {
		s += len(c) + 1
	}
	return s
}

// view is the tree as one request sees it: the store itself, or a
// transaction's overlay on it.
type view interface {
	get(path string) *node // nil if absent
	put(path string, n *node)
	del(path string)
	owned(dom uint32) int // nodes whose owner (entry 0) is dom
}

// store is the committed tree, keyed by absolute path.
type store struct {
	nodes  map[string]*node
	gen    uint64
	owners map[uint32]int // node count per owner
}

func newStore() *store {
	st := &store{nodes: make(map[string]*node), owners: make(map[uint32]int)}
	st.put("/", &node{perms: []xenstore.Perm{{Dom: 0}}})
	return st
}

func (st *store) get(path string) *node { return st.nodes[path] }

func (st *store) put(path string, n *node) {
	st.gen++
	n.gen = st.gen
	if old := st.nodes[path]; old != nil {
		st.disown(old)
	}
	st.owners[n.perms[0].Dom]++
	st.nodes[path] = n
}

func (st *store) del(path string) {
	if old := st.nodes[path]; old != nil {
		st.disown(old)
		delete(st.nodes, path)
	}
}

func (st *store) disown(n *node) {
	d := n.perms[0].Dom
	if st.owners[d]--; st.owners[d] <= 0 {
		delete(st.owners, d)
	}
}

func (st *store) owned(dom uint32) int { return st.owners[dom] }

// genOf returns the generation of the node at path, 0 if absent.
func (st *store) genOf(path string) uint64 {
	if n := st.nodes[path]; n != nil {
		return n.gen
	}
	return 0
}

// parentOf returns the parent of an absolute path ("/" for "/x").
func parentOf(path string) string {
	i := strings.LastIndexByte(path, '/')
	if i <= 0 {
		return "/"
	}
	return path[:i]
}

// baseOf returns the leaf name of an absolute path.
func baseOf(path string) string {
	return path[strings.LastIndexByte(path, '/')+1:]
}

// join returns the absolute path of child name under dir.
func join(dir, name string) string {
	if dir == "/" {
		return "/" + name
	}
	return dir + "/" + name
}

// isBelow reports whether path is strictly below dir.
func isBelow(path, dir string) bool {
	if dir == "/" {
		return path != "/"
	}
	return len(path) > len(dir) && strings.HasPrefix(path, dir) && path[len(dir)] == '/'
}

// access returns what domain dom may do with a node carrying perms.
func access(dom uint32, perms []xenstore.Perm) (read, write bool) {
	if dom == 0 {
		return true, true
	}
	if len(perms) == 0 {
		return false, false
	}
	if perms[0].Dom == dom {
		return true, true
	}
	for _, p := range perms[1:] {
		if p.Dom == dom {
			return p.Read, p.Write
		}
	}
	return perms[0].Read, perms[0].Write
}

func canRead(dom uint32, perms []xenstore.Perm) bool {
	r, _ := access(dom, perms)
	return r
}

func canWrite(dom uint32, perms []xenstore.Perm) bool {
	_, w := access(dom, perms)
	return w
}

// change is one watch event a modification causes. Delivery is decided when
// it fires: a watcher must be able to read the node (with perms, or oldPerms
// before a permission change) or its parent.
type change struct {
	path        string
	perms       []xenstore.Perm
	oldPerms    []xenstore.Perm
	parentPerms []xenstore.Perm
	// below is set for the removal of path: watches strictly below path
	// that saw no event of their own get one for their own path.
	below bool
}

// op runs one request against a view on behalf of domain dom. It collects
// the changes to fire.
type op struct {
	v       view
	dom     uint32
	exists  func(dom uint32) bool // whether a domain exists
	changes []change
}

// missing returns the error for a node that is absent: EACCES when the
// caller may not read its nearest existing ancestor (so as not to leak
// existence), else ENOENT.
func (o *op) missing(path string) syscall.Errno {
	for p := path; p != "/"; {
		p = parentOf(p)
		if n := o.v.get(p); n != nil {
			if !canRead(o.dom, n.perms) {
				return syscall.EACCES
			}
			return syscall.ENOENT
		}
	}
	return syscall.ENOENT
}

// readable returns the node at path if dom may read it.
func (o *op) readable(path string) (*node, syscall.Errno) {
	n := o.v.get(path)
	if n == nil {
		return nil, o.missing(path)
	}
	if !canRead(o.dom, n.perms) {
		return nil, syscall.EACCES
	}
	return n, 0
}

func (o *op) read(path string) ([]byte, syscall.Errno) {
	n, e := o.readable(path)
	if e != 0 {
		return nil, e
	}
	return n.value, 0
}

func (o *op) directory(path string) ([]string, uint64, syscall.Errno) {
	n, e := o.readable(path)
	if e != 0 {
		return nil, 0, e
	}
	return n.children, n.gen, 0
}

func (o *op) getPerms(path string) ([]xenstore.Perm, syscall.Errno) {
	n, e := o.readable(path)
	if e != 0 {
		return nil, e
	}
	return n.perms, 0
}

// create makes the node at path and any missing parents. Creating needs
// write permission on the nearest existing ancestor, which gains the child.
// New nodes copy their parent's permissions; an unprivileged creator becomes
// the owner.
func (o *op) create(path string, value []byte) syscall.Errno {
	var missing []string
	anc := path
	var an *node
	for {
		missing = append(missing, anc)
		anc = parentOf(anc)
		if an = o.v.get(anc); an != nil {
			break
		}
	}
	if !canWrite(o.dom, an.perms) {
		return syscall.EACCES
	}
	if o.dom != 0 && (len(value) > quotaNodeSize || o.v.owned(o.dom)+len(missing) > quotaNodes) {
		return syscall.ENOSPC
	}
	parent, pn := anc, an
	for i := len(missing) - 1; i >= 0; i-- {
		p := missing[i]
		perms := slices.Clone(pn.perms)
		if o.dom != 0 {
			perms[0].Dom = o.dom
		}
		up := pn.clone()
		up.children = insertSorted(pn.children, baseOf(p))
		o.v.put(parent, up)
		n := &node{perms: perms}
		if i == 0 {
			n.value = value
		}
		o.v.put(p, n)
		parent, pn = p, n
	}
	o.changes = append(o.changes, change{path: path, perms: pn.perms, parentPerms: o.v.get(parentOf(path)).perms})
	return 0
}

func insertSorted(list []string, name string) []string {
	i, found := slices.BinarySearch(list, name)
	if found {
		return list
	}
	return slices.Insert(slices.Clone(list), i, name)
}

func (o *op) write(path string, value []byte) syscall.Errno {
	n := o.v.get(path)
	if n == nil {
		if e := o.missing(path); e == syscall.EACCES {
			return e
		}
		return o.create(path, value)
	}
	if !canWrite(o.dom, n.perms) {
		return syscall.EACCES
	}
	nn := n.clone()
	nn.value = value
	if o.dom != 0 && nn.size() > quotaNodeSize {
		return syscall.ENOSPC
	}
	o.v.put(path, nn)
	o.changes = append(o.changes, change{path: path, perms: nn.perms, parentPerms: o.parentPerms(path)})
	return 0
}

func (o *op) parentPerms(path string) []xenstore.Perm {
	if path == "/" {
		return nil
	}
	if p := o.v.get(parentOf(path)); p != nil {
		return p.perms
	}
	return nil
}

func (o *op) mkdir(path string) syscall.Errno {
	n := o.v.get(path)
	if n == nil {
		if e := o.missing(path); e == syscall.EACCES {
			return e
		}
		return o.create(path, nil)
	}
	if !canWrite(o.dom, n.perms) {
		return syscall.EACCES
	}
	return 0
}

// rm removes path and everything below it. Each removed node fires an event
// of its own (checked against its own permissions, as they were); watches
// below path on nodes that did not exist get one for their own path.
func (o *op) rm(path string) syscall.Errno {
	if path == "/" {
		return syscall.EINVAL
	}
	n := o.v.get(path)
	if n == nil {
		e := o.missing(path)
		if e == syscall.ENOENT && o.v.get(parentOf(path)) != nil {
			return 0 // nothing to remove
		}
		return e
	}
	if !canWrite(o.dom, n.perms) {
		return syscall.EACCES
	}
	parentPath := parentOf(path)
	pn := o.v.get(parentPath)
	o.removeTree(path, n, pn.perms)
	up := pn.clone()
	if i, found := slices.BinarySearch(pn.children, baseOf(path)); found {
		up.children = slices.Delete(slices.Clone(pn.children), i, i+1)
	}
	o.v.put(parentPath, up)
	o.changes = append(o.changes, change{path: path, perms: n.perms, parentPerms: pn.perms, below: true})
	return 0
}

func (o *op) removeTree(path string, n *node, parentPerms []xenstore.Perm) {
	for _, c := range n.children {
		cp := join(path, c)
		if cn := o.v.get(cp); cn != nil {
			o.removeTree(cp, cn, n.perms)
		}
	}
	o.v.del(path)
	o.changes = append(o.changes, change{path: path, perms: n.perms, parentPerms: parentPerms})
}

func (o *op) setPerms(path string, perms []xenstore.Perm) syscall.Errno {
	n := o.v.get(path)
	if n == nil {
		return o.missing(path)
	}
	if e := o.checkSetPerms(n.perms, perms); e != 0 {
		return e
	}
	nn := n.clone()
	nn.perms = slices.Clone(perms)
	if o.dom != 0 && nn.size() > quotaNodeSize {
		return syscall.ENOSPC
	}
	o.v.put(path, nn)
	o.changes = append(o.changes, change{path: path, perms: nn.perms, oldPerms: n.perms, parentPerms: o.parentPerms(path)})
	return 0
}

// checkSetPerms applies the rules of SET_PERMS: write permission and
// ownership (or privilege); unprivileged callers may not change the owner
// and may set at most quotaPerms entries; the owner must exist.
func (o *op) checkSetPerms(old, perms []xenstore.Perm) syscall.Errno {
	if o.dom != 0 {
		if !canWrite(o.dom, old) || old[0].Dom != o.dom {
			return syscall.EACCES
		}
		if perms[0].Dom != old[0].Dom {
			return syscall.EPERM
		}
		if len(perms) > quotaPerms {
			return syscall.ENOSPC
		}
	}
	if !o.exists(perms[0].Dom) {
		return syscall.ENOENT
	}
	return 0
}

// tx is an open transaction: an overlay on the store that records the
// generation of every node it touched. Commit fails with EAGAIN if any of
// them changed since.
type tx struct {
	id      uint32
	st      *store
	seen    map[string]uint64 // generation at first access, 0 = absent
	changed map[string]*node  // nil = removed
	changes []change
}

func newTx(id uint32, st *store) *tx {
	return &tx{id: id, st: st, seen: make(map[string]uint64), changed: make(map[string]*node)}
}

func (t *tx) touch(path string) {
	if _, ok := t.seen[path]; !ok {
		t.seen[path] = t.st.genOf(path)
	}
}

func (t *tx) get(path string) *node {
	if n, ok := t.changed[path]; ok {
		return n
	}
	t.touch(path)
	return t.st.get(path)
}

func (t *tx) put(path string, n *node) {
	t.touch(path)
	t.changed[path] = n
}

func (t *tx) del(path string) {
	t.touch(path)
	t.changed[path] = nil
}

// owned counts dom's nodes as the transaction sees them.
func (t *tx) owned(dom uint32) int {
	n := t.st.owned(dom)
	for p, cn := range t.changed {
		if sn := t.st.get(p); sn != nil && sn.perms[0].Dom == dom {
			n--
		}
		if cn != nil && cn.perms[0].Dom == dom {
			n++
		}
	}
	return n
}

// conflict reports whether a node the transaction touched changed since.
func (t *tx) conflict() bool {
	for p, g := range t.seen {
		if t.st.genOf(p) != g {
			return true
		}
	}
	return false
}

// apply writes the transaction's changes to the store, parents before
// children so that every stored node has its parent.
func (t *tx) apply() {
	paths := make([]string, 0, len(t.changed))
	for p := range t.changed {
		paths = append(paths, p)
	}
	slices.Sort(paths)
	for _, p := range paths {
		if n := t.changed[p]; n != nil {
			t.st.put(p, n.clone())
		} else {
			t.st.del(p)
		}
	}
}

// record keeps the changes of one request for the commit. As in xenstored,
// a transaction fires at most one event per node however often it changed
// the node.
func (t *tx) record(changes []change) {
	for _, ch := range changes {
		dup := false
		for i := range t.changes {
			if t.changes[i].path == ch.path && t.changes[i].below == ch.below {
				t.changes[i].perms, t.changes[i].parentPerms = ch.perms, ch.parentPerms
				if t.changes[i].oldPerms == nil {
					t.changes[i].oldPerms = ch.oldPerms
				}
				dup = true
				break
			}
		}
		if !dup {
			t.changes = append(t.changes, ch)
		}
	}
}

// committedChanges returns the changes to fire after apply: delivery of a
// node that still exists is decided by its permissions as committed, the
// way xenstored reads the node again when it fires a transaction's events.
func (t *tx) committedChanges() []change {
	out := make([]change, len(t.changes))
	for i, ch := range t.changes {
		if n := t.st.get(ch.path); n != nil && !ch.below {
			ch.perms = n.perms
			if p := t.st.get(parentOf(ch.path)); p != nil && ch.path != "/" {
				ch.parentPerms = p.perms
			}
		}
		out[i] = ch
	}
	return out
}
