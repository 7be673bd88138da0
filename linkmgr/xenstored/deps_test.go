package xenstored_test

import (
	"os/exec"
	"strings"
	"testing"
)

// TestImports keeps the embedded store down to the Xenstore codec and
// logrus.
func TestImports(t *testing.T) {
	goTool, err := exec.LookPath("go")
	if err != nil {
		t.Skip("go tool not in PATH; cannot list dependencies")
	}
	out, err := exec.Command(goTool, "list", "-deps", "idcfs/linkmgr/xenstored").Output()
	if err != nil {
		t.Skipf("go list: %v", err)
	}
	forbidden := []struct{ pkg, why string }{
		{"github.com/hanwen/go-fuse/v2/", "only fsnode and cmd use FUSE"},
		{"idcfs/linkmgr", "the store serves the link manager, it does not use it"},
		{"idcfs/vchan", "the store knows nothing of rings"},
		{"idcfs/proto", "the store knows nothing of the link protocol"},
		{"idcfs/fsnode", "imports flow fsnode -> linkmgr"},
	}
	for _, dep := range strings.Fields(string(out)) {
		for _, f := range forbidden {
			if dep == strings.TrimSuffix(f.pkg, "/") || (strings.HasSuffix(f.pkg, "/") && strings.HasPrefix(dep, f.pkg)) {
				t.Errorf("xenstored depends on %s: %s", dep, f.why)
			}
		}
	}
}
