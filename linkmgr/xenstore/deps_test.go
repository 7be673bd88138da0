package xenstore_test

import (
	"os/exec"
	"strings"
	"testing"
)

// TestImports keeps the Xenstore client a leaf below the link manager.
func TestImports(t *testing.T) {
	goTool, err := exec.LookPath("go")
	if err != nil {
		t.Skip("go tool not in PATH; cannot list dependencies")
	}
	out, err := exec.Command(goTool, "list", "-deps", "idcfs/linkmgr/xenstore").Output()
	if err != nil {
		t.Skipf("go list: %v", err)
	}
	forbidden := []struct{ pkg, why string }{
		{"github.com/hanwen/go-fuse/v2/", "only fsnode and cmd use FUSE"},
		{"github.com/sirupsen/logrus", "the client reports errors to its callers and does not log"},
		{"idcfs/linkmgr", "the link manager uses the client, not the other way round"},
		{"idcfs/linkmgr/xenstored", "the store uses the client's codec, not the other way round"},
		{"idcfs/vchan", "Xenstore knows nothing of rings"},
		{"idcfs/proto", "Xenstore knows nothing of the link protocol"},
		{"idcfs/fsnode", "imports flow fsnode -> linkmgr"},
	}
	for _, dep := range strings.Fields(string(out)) {
		for _, f := range forbidden {
			if dep == strings.TrimSuffix(f.pkg, "/") || (strings.HasSuffix(f.pkg, "/") && strings.HasPrefix(dep, f.pkg)) {
				t.Errorf("xenstore depends on %s: %s", dep, f.why)
			}
		}
	}
}
