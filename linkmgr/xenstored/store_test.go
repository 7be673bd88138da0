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
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			st := newStore()
			base := &op{v: st, exists: exists}
			base.write("/a", []byte("v"))
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
