// Package deps checks that imports flow one way:
// cmd/idcfs -> fsnode -> linkmgr -> {proto, vchan}, and that no package of
// the project uses cgo (idcfs is one static binary).
package deps

import (
	"os/exec"
	"strings"
	"testing"
)

const module = "idcfs"

// rules lists, for each package tree, the imports it must never pull in
// (directly or indirectly) and why. A forbidden path covers its subtree;
// exact names only that one package.
var rules = []struct {
	tree      string
	forbidden []string
	exact     []string
	why       string
}{
	{tree: "idcfs/proto", forbidden: []string{"idcfs/vchan", "idcfs/linkmgr", "idcfs/fsnode", "github.com/sirupsen/logrus", "github.com/hanwen/go-fuse/v2"},
		why: "proto only encodes and decodes: no I/O, no logging, no transport"},
	{tree: "idcfs/vchan", forbidden: []string{"idcfs/proto", "idcfs/linkmgr", "idcfs/fsnode", "github.com/sirupsen/logrus", "github.com/hanwen/go-fuse/v2"},
		why: "vchan is a leaf transport below the link manager; it reports errors and does not log"},
	{tree: "idcfs/linkmgr", forbidden: []string{"idcfs/fsnode", "idcfs/cmd", "github.com/hanwen/go-fuse/v2"},
		why: "nothing below fsnode knows about FUSE"},
	{tree: "idcfs/linkmgr/xenstore", forbidden: []string{"idcfs/linkmgr/xenstored", "idcfs/vchan", "idcfs/proto", "github.com/sirupsen/logrus"}, exact: []string{"idcfs/linkmgr"},
		why: "the Xenstore client is a leaf: it knows nothing of rings or links, and reports errors instead of logging"},
	{tree: "idcfs/linkmgr/xenstored", forbidden: []string{"idcfs/vchan", "idcfs/proto"}, exact: []string{"idcfs/linkmgr"},
		why: "the embedded store serves the link manager and shares only the client's codec"},
	{tree: "idcfs/fsnode", forbidden: []string{"idcfs/cmd"},
		why: "only cmd/idcfs reads flags and signals"},
}

func goList(t *testing.T, args ...string) string {
	t.Helper()
	out, err := exec.Command("go", append([]string{"list"}, args...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("go list %v: %v\n%s", args, err, out)
	}
	return string(out)
}

func TestImportDirection(t *testing.T) {
	if _, err := exec.LookPath("go"); err != nil {
		t.Skip("needs the go command on PATH")
	}
	out := goList(t, "-f", "{{.ImportPath}} {{join .Deps \" \"}}", module+"/...")
	seen := 0
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		fields := strings.Fields(line)
		if len(fields) == 0 {
			continue
		}
		pkg, deps := fields[0], fields[1:]
		for _, r := range rules {
			if pkg != r.tree && !strings.HasPrefix(pkg, r.tree+"/") {
				continue
			}
			seen++
			for _, d := range deps {
				for _, f := range r.forbidden {
					if d == f || strings.HasPrefix(d, f+"/") {
						t.Errorf("%s imports %s: %s", pkg, d, r.why)
					}
				}
				for _, f := range r.exact {
					if d == f {
						t.Errorf("%s imports %s: %s", pkg, d, r.why)
					}
				}
			}
		}
	}
	if seen == 0 {
		t.Fatalf("go list matched none of the checked package trees:\n%s", out)
	}
}

func TestNoCgo(t *testing.T) {
	if _, err := exec.LookPath("go"); err != nil {
		t.Skip("needs the go command on PATH")
	}
	out := goList(t, "-f", "{{.ImportPath}} {{len .CgoFiles}}", module+"/...")
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		f := strings.Fields(line)
		if len(f) == 2 && f[1] != "0" {
			t.Errorf("%s has cgo files; idcfs must build as one static binary", f[0])
		}
	}
}
