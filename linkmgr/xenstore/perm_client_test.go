package xenstore_test

import (
	"errors"
	"slices"
	"syscall"
	"testing"

	"idcfs/linkmgr/xenstore"
)

// TestPermissionDenials runs two unprivileged domains, each on its own
// socket, against each other.
func TestPermissionDenials(t *testing.T) {
	e := newEnv(t)
	e.needEmbedded()
	ctx := ctxT(t)
	d1, d2 := e.domain(1), e.domain(2)
	home1 := "/local/domain/1"

	// Each domain learns its own id from its home.
	for dom, c := range map[string]*xenstore.Client{"1": d1, "2": d2} {
		if v, err := c.Read(ctx, "domid"); err != nil || v != dom {
			t.Fatalf("dom%s reads domid %q, %v", dom, v, err)
		}
	}
	// The home is read-only for its domain; data/ is its own.
	mustErrno(t, d1.Write(ctx, "x", "1"), syscall.EACCES)
	if err := d1.Write(ctx, "data/secret", "s"); err != nil {
		t.Fatalf("dom1 write own data: %v", err)
	}
	perms, err := d1.GetPerms(ctx, "data/secret")
	if err != nil || !slices.Equal(perms, []xenstore.Perm{{Dom: 1}}) {
		t.Fatalf("perms of a node dom1 created: %v, %v", perms, err)
	}

	tests := []struct {
		name string
		do   func() error
		want syscall.Errno
	}{
		{"read other's node", func() error { _, err := d2.Read(ctx, home1+"/data/secret"); return err }, syscall.EACCES},
		{"existence is hidden", func() error { _, err := d2.Read(ctx, home1+"/data/none"); return err }, syscall.EACCES},
		{"list other's dir", func() error { _, err := d2.Directory(ctx, home1+"/data"); return err }, syscall.EACCES},
		{"write other's node", func() error { return d2.Write(ctx, home1+"/data/secret", "x") }, syscall.EACCES},
		{"create under other's dir", func() error { return d2.Write(ctx, home1+"/data/new", "x") }, syscall.EACCES},
		{"mkdir under other's dir", func() error { return d2.Mkdir(ctx, home1+"/data/new") }, syscall.EACCES},
		{"rm other's node", func() error { return d2.Rm(ctx, home1+"/data/secret") }, syscall.EACCES},
		{"set perms on other's node", func() error {
			return d2.SetPerms(ctx, home1+"/data/secret", []xenstore.Perm{{Dom: 1}, {Dom: 2, Read: true}})
		}, syscall.EACCES},
		{"create at the root", func() error { return d1.Write(ctx, "/toplevel", "x") }, syscall.EACCES},
		{"give node away", func() error { return d1.SetPerms(ctx, "data/secret", []xenstore.Perm{{Dom: 2}}) }, syscall.EPERM},
		{"too many entries", func() error {
			return d1.SetPerms(ctx, "data/secret", []xenstore.Perm{{Dom: 1}, {Dom: 2}, {Dom: 3}, {Dom: 4}, {Dom: 5}, {Dom: 6}})
		}, syscall.ENOSPC},
		{"read dom0's node", func() error { _, err := d1.Read(ctx, "/local/domain/0/domid"); return err }, syscall.EACCES},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) { mustErrno(t, tt.do(), tt.want) })
	}

	// dom1 grants dom2 read access: dom2 may read but still not write.
	if err := d1.SetPerms(ctx, "data/secret", []xenstore.Perm{{Dom: 1}, {Dom: 2, Read: true}}); err != nil {
		t.Fatalf("grant: %v", err)
	}
	if v, err := d2.Read(ctx, home1+"/data/secret"); err != nil || v != "s" {
		t.Fatalf("dom2 read after grant: %q, %v", v, err)
	}
	mustErrno(t, d2.Write(ctx, home1+"/data/secret", "x"), syscall.EACCES)

	// Reading needs permission on the node only, not its parents.
	if _, err := d2.Directory(ctx, home1+"/data"); !errors.Is(err, syscall.EACCES) {
		t.Fatalf("dom2 lists dom1's data: %v", err)
	}

	// The first entry's letter is everyone else's access.
	if err := d1.Write(ctx, "data/public", "p"); err != nil {
		t.Fatal(err)
	}
	if err := d1.SetPerms(ctx, "data/public", []xenstore.Perm{{Dom: 1, Read: true}, {Dom: 2}}); err != nil {
		t.Fatal(err)
	}
	d3 := e.domain(3)
	if v, err := d3.Read(ctx, home1+"/data/public"); err != nil || v != "p" {
		t.Fatalf("dom3 reads a node whose default is r: %q, %v", v, err)
	}
	mustErrno(t, func() error { _, err := d2.Read(ctx, home1+"/data/public"); return err }(), syscall.EACCES)

	// Creating a node needs write access to the parent, and read access
	// too: without it the caller may not learn that the node is absent.
	if err := d1.Mkdir(ctx, "data/inbox"); err != nil {
		t.Fatal(err)
	}
	if err := d1.SetPerms(ctx, "data/inbox", []xenstore.Perm{{Dom: 1}, {Dom: 2, Write: true}}); err != nil {
		t.Fatal(err)
	}
	mustErrno(t, d2.Write(ctx, home1+"/data/inbox/msg", "hi"), syscall.EACCES)
	if err := d1.SetPerms(ctx, "data/inbox", []xenstore.Perm{{Dom: 1}, {Dom: 2, Read: true, Write: true}}); err != nil {
		t.Fatal(err)
	}
	if err := d2.Write(ctx, home1+"/data/inbox/msg", "hi"); err != nil {
		t.Fatalf("dom2 create with read-write access: %v", err)
	}
	// dom2 owns what it creates; the rest of the list is inherited.
	perms, err = d2.GetPerms(ctx, home1+"/data/inbox/msg")
	if err != nil || !slices.Equal(perms, []xenstore.Perm{{Dom: 2}, {Dom: 2, Read: true, Write: true}}) {
		t.Fatalf("perms of dom2's node: %v, %v", perms, err)
	}
	// dom1 owns the directory but not the new node: it cannot read it.
	mustErrno(t, func() error { _, err := d1.Read(ctx, "data/inbox/msg"); return err }(), syscall.EACCES)

	// dom0 sees everything, and a node dom0 creates keeps the parent's owner.
	if v, err := e.priv.Read(ctx, home1+"/data/secret"); err != nil || v != "s" {
		t.Fatalf("dom0 read: %q, %v", v, err)
	}
	if err := e.priv.Write(ctx, home1+"/data/from0", "z"); err != nil {
		t.Fatal(err)
	}
	if perms, _ := e.priv.GetPerms(ctx, home1+"/data/from0"); len(perms) == 0 || perms[0].Dom != 1 {
		t.Fatalf("dom0-created node under dom1's data: perms %v", perms)
	}

	// A non-existent owner is refused.
	mustErrno(t, e.priv.SetPerms(ctx, home1+"/data/from0", []xenstore.Perm{{Dom: 999}}), syscall.ENOENT)
	// dom0 may hand a node to another domain.
	if err := e.priv.SetPerms(ctx, home1+"/data/from0", []xenstore.Perm{{Dom: 2}}); err != nil {
		t.Fatal(err)
	}
	if err := d2.Write(ctx, home1+"/data/from0", "mine"); err != nil {
		t.Fatalf("new owner writes: %v", err)
	}
}
