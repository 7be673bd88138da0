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
	// peek is get without counting as an access of the transaction.
	peek(path string) *node
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

func (st *store) peek(path string) *node { return st.nodes[path] }

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

// change is one node change that fires watches, as one fire_watches call
// of xenstored does. Delivery is decided per watching connection when it
// fires (watch_permitted): the watcher must be able to read the node (with
// perms, or oldPerms before a permission change) or its parent. A nil
// permission list grants nothing, not even to dom0: xenstored fires nothing
// for a node it can no longer find and whose old permissions it did not
// keep.
type change struct {
	path        string
	perms       []xenstore.Perm
	oldPerms    []xenstore.Perm
	parentPerms []xenstore.Perm
	// exact limits the change to watches registered on path itself. RM
	// fires the removed node for the watches on it and its ancestors, but
	// every node removed below it only for the watches on exactly that
	// node (delnode_sub's watch_exact).
	exact bool
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

// parentPerms returns the permissions of path's parent, for delivering the
// change of path. It does not count as an access: xenstored reads the parent
// only when it fires (watch_permitted), and in a transaction that is at
// commit.
func (o *op) parentPerms(path string) []xenstore.Perm {
	if path == "/" {
		return nil
	}
	if p := o.v.peek(parentOf(path)); p != nil {
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

// rm removes path and everything below it, firing as xenstored's rm_node
// does: its tree walk visits every node after its children (walk_node_tree
// with delnode_sub as exit function) and fires each removed node with the
// permissions it had and those of its parent. The removed node itself,
// fired last, reaches the watches on it and on its ancestors; a node below
// it reaches only the watches registered on exactly its path. A watch on a
// path below the removed node where no node existed gets nothing.
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
	o.removeTree(path, n, pn.perms, false)
	up := pn.clone()
	if i, found := slices.BinarySearch(pn.children, baseOf(path)); found {
		up.children = slices.Delete(slices.Clone(pn.children), i, i+1)
	}
	o.v.put(parentPath, up)
	return 0
}

// removeTree removes the node n at path and its subtree, children first,
// and records one change per removed node: exact for all but the root of
// the removal.
func (o *op) removeTree(path string, n *node, parentPerms []xenstore.Perm, exact bool) {
	for _, c := range n.children {
		cp := join(path, c)
		if cn := o.v.get(cp); cn != nil {
			o.removeTree(cp, cn, n.perms, true)
		}
	}
	o.v.del(path)
	o.changes = append(o.changes, change{path: path, perms: n.perms, parentPerms: parentPerms, exact: exact})
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
	id       uint32
	st       *store
	seen     map[string]seenNode
	changed  map[string]*node // nil = removed
	changes  []change         // one per node, merged; path and exact only
	changeAt map[string]int   // index in changes by path
}

// seenNode is what a transaction remembers of a node it touched first:
// xenstored's accessed_node.
type seenNode struct {
	gen   uint64          // store generation, 0 = absent
	perms []xenstore.Perm // store permissions, nil = absent
	order int             // rank of the first access
}

func newTx(id uint32, st *store) *tx {
	return &tx{id: id, st: st, seen: make(map[string]seenNode), changed: make(map[string]*node), changeAt: make(map[string]int)}
}

func (t *tx) touch(path string) {
	if _, ok := t.seen[path]; ok {
		return
	}
	sn := seenNode{order: len(t.seen)}
	if n := t.st.get(path); n != nil {
		sn.gen, sn.perms = n.gen, n.perms
	}
	t.seen[path] = sn
}

func (t *tx) get(path string) *node {
	if n, ok := t.changed[path]; ok {
		return n
	}
	t.touch(path)
	return t.st.get(path)
}

func (t *tx) peek(path string) *node {
	if n, ok := t.changed[path]; ok {
		return n
	}
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
	for p, sn := range t.seen {
		if t.st.genOf(p) != sn.gen {
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

// record keeps the changes of one request for the commit. As xenstored's
// queue_watches, a transaction fires at most one event per node however
// often it changed the node, and a change that reaches the ancestors' watches
// wins over one limited to the node's own.
func (t *tx) record(changes []change) {
	for _, ch := range changes {
		i, ok := t.changeAt[ch.path]
		if !ok {
			t.changeAt[ch.path] = len(t.changes)
			t.changes = append(t.changes, change{path: ch.path, exact: ch.exact})
		} else if !ch.exact {
			t.changes[i].exact = false
		}
	}
}

// committedChanges returns the changes to fire after apply, the way
// xenstored's finalize_transaction fires them: in the order in which the
// transaction first accessed the nodes, each with the permissions the node
// had then (none if it did not exist) and, if it still exists, its
// permissions and its parent's as committed.
func (t *tx) committedChanges() []change {
	out := make([]change, len(t.changes))
	for i, ch := range t.changes {
		ch.oldPerms = t.seen[ch.path].perms
		if n := t.st.get(ch.path); n != nil {
			ch.perms = n.perms
			if ch.path != "/" {
				ch.parentPerms = t.st.get(parentOf(ch.path)).perms
			}
		}
		out[i] = ch
	}
	slices.SortStableFunc(out, func(a, b change) int {
		return t.seen[a.path].order - t.seen[b.path].order
	})
	return out
}
