package xenstored

import (
	"fmt"
	"syscall"
	"testing"

	"idcfs/linkmgr/xenstore"
)

// TestTxOwnedCount checks the node quota inside a transaction, which counts
// the nodes the transaction itself created and removed.
func TestTxOwnedCount(t *testing.T) {
	st := newStore()
	exists := func(uint32) bool { return true }
	priv := &op{v: st, dom: 0, exists: exists}
	if e := priv.write("/d", nil); e != 0 {
		t.Fatal(e)
	}
	if e := priv.setPerms("/d", []xenstore.Perm{{Dom: 3}}); e != 0 {
		t.Fatal(e)
	}
	for i := 1; i < quotaNodes-1; i++ {
		if e := priv.write(fmt.Sprintf("/d/n%d", i), nil); e != 0 {
			t.Fatal(e)
		}
	}
	if st.owned(3) != quotaNodes-1 {
		t.Fatalf("dom3 owns %d", st.owned(3))
	}
	tx := newTx(1, st)
	o := &op{v: tx, dom: 3, exists: exists}
	if e := o.write("/d/last", nil); e != 0 {
		t.Fatalf("last node within the quota: %v", e)
	}
	if e := o.write("/d/over", nil); e != syscall.ENOSPC {
		t.Fatalf("node past the quota: %v", e)
	}
	if e := o.rm("/d/n1"); e != 0 {
		t.Fatal(e)
	}
	if e := o.write("/d/over", nil); e != 0 {
		t.Fatalf("after removing one in the transaction: %v", e)
	}
	if tx.owned(3) != quotaNodes || st.owned(3) != quotaNodes-1 {
		t.Fatalf("owned: tx %d, store %d", tx.owned(3), st.owned(3))
	}
	if tx.conflict() {
		t.Fatal("conflict without concurrent change")
	}
	tx.apply()
	if st.owned(3) != quotaNodes {
		t.Fatalf("after commit dom3 owns %d", st.owned(3))
	}
	checkTree(t, st)
}

// TestTxConflictRules checks which concurrent changes make a commit fail.
func TestTxConflictRules(t *testing.T) {
	exists := func(uint32) bool { return true }
	tests := []struct {
		name     string
		inTx     func(o *op)
		outside  func(o *op)
		conflict bool
	}{
		{"read, then written outside", func(o *op) { o.read("/a") }, func(o *op) { o.write("/a", []byte("x")) }, true},
		{"read, then removed outside", func(o *op) { o.read("/a") }, func(o *op) { o.rm("/a") }, true},
		{"absent node read, then created outside", func(o *op) { o.read("/new") }, func(o *op) { o.write("/new", nil) }, true},
		{"listed, then a child added outside", func(o *op) { o.directory("/a") }, func(o *op) { o.write("/a/c", nil) }, true},
		{"perms read, then changed outside", func(o *op) { o.getPerms("/a") }, func(o *op) { o.setPerms("/a", []xenstore.Perm{{Dom: 0, Read: true}}) }, true},
		{"both create the same node", func(o *op) { o.write("/b", nil) }, func(o *op) { o.write("/b", nil) }, true},
		{"unrelated node written outside", func(o *op) { o.read("/a") }, func(o *op) { o.write("/other", nil) }, false},
		{"child written outside, parent value read", func(o *op) { o.read("/a") }, func(o *op) { o.write("/a/c", nil) }, true},
		// xenstored records only the node a WRITE or SET_PERMS changes.
		{"written, then its parent written outside", func(o *op) { o.write("/a/k", []byte("y")) }, func(o *op) { o.write("/a", []byte("x")) }, false},
		{"perms set, then its parent written outside", func(o *op) { o.setPerms("/a/k", []xenstore.Perm{{Dom: 0}}) }, func(o *op) { o.write("/a", []byte("x")) }, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			st := newStore()
			base := &op{v: st, exists: exists}
			base.write("/a", []byte("v"))
			base.write("/a/k", nil)
			base.write("/other", nil)
			tx := newTx(1, st)
			tt.inTx(&op{v: tx, exists: exists})
			tt.outside(&op{v: st, exists: exists})
			if got := tx.conflict(); got != tt.conflict {
				t.Fatalf("conflict = %v, want %v", got, tt.conflict)
			}
		})
	}
}

// TestRmChanges checks the changes a removal records, as xenstored's
// rm_node fires them: every removed node, children before their parent,
// each with the permissions it had and its parent's; all but the removed
// node itself limited to the watches on exactly their path. In a
// transaction, the changes are merged per node (the wider match wins) and
// carry, at commit, the permissions the node had when first accessed.
func TestRmChanges(t *testing.T) {
	st := newStore()
	exists := func(uint32) bool { return true }
	o := &op{v: st, exists: exists}
	for _, p := range []string{"/r/a/b", "/r/c"} {
		if e := o.write(p, nil); e != 0 {
			t.Fatal(e)
		}
	}
	if e := o.setPerms("/r/a", []xenstore.Perm{{Dom: 0, Read: true}}); e != 0 {
		t.Fatal(e)
	}
	describe := func(changes []change) string {
		s := ""
		for _, ch := range changes {
			s += fmt.Sprintf("%s exact=%v perms=%v parent=%v old=%v; ", ch.path, ch.exact, ch.perms, ch.parentPerms, ch.oldPerms)
		}
		return s
	}
	o.changes = nil
	if e := o.rm("/r"); e != 0 {
		t.Fatal(e)
	}
	want := "/r/a/b exact=true perms=[n0] parent=[r0] old=[]; " +
		"/r/a exact=true perms=[r0] parent=[n0] old=[]; " +
		"/r/c exact=true perms=[n0] parent=[n0] old=[]; " +
		"/r exact=false perms=[n0] parent=[n0] old=[]; "
	if got := describe(o.changes); got != want {
		t.Fatalf("changes of rm:\n got %s\nwant %s", got, want)
	}
	checkTree(t, st)

	// The same in a transaction that first writes /r/a and creates /r/n.
	for _, p := range []string{"/r/a/b", "/r/c"} {
		if e := o.write(p, nil); e != 0 {
			t.Fatal(e)
		}
	}
	tx := newTx(1, st)
	to := &op{v: tx, exists: exists}
	for _, p := range []string{"/r/a", "/r/n"} {
		if e := to.write(p, []byte("v")); e != 0 {
			t.Fatal(e)
		}
	}
	if e := to.rm("/r"); e != 0 {
		t.Fatal(e)
	}
	tx.record(to.changes)
	tx.apply()
	want = "/r/a exact=false perms=[] parent=[] old=[n0]; " +
		"/r/n exact=false perms=[] parent=[] old=[]; " +
		"/r exact=false perms=[] parent=[] old=[n0]; " +
		"/r/a/b exact=true perms=[] parent=[] old=[n0]; " +
		"/r/c exact=true perms=[] parent=[] old=[n0]; "
	if got := describe(tx.committedChanges()); got != want {
		t.Fatalf("changes of rm in a transaction:\n got %s\nwant %s", got, want)
	}
	checkTree(t, st)
}
