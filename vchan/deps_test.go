package vchan_test

import (
	"os/exec"
	"strings"
	"testing"
)

// TestImports keeps vchan a leaf: it must not reach up the stack or into
// FUSE, and the ring must not depend on the wire format.
func TestImports(t *testing.T) {
	goTool, err := exec.LookPath("go")
	if err != nil {
		t.Skip("go tool not in PATH; cannot list dependencies")
	}
	out, err := exec.Command(goTool, "list", "-deps", "idcfs/vchan", "idcfs/vchan/heap").Output()
	if err != nil {
		t.Skipf("go list: %v", err)
	}
	forbidden := map[string]string{
		"github.com/hanwen/go-fuse/v2": "only fsnode and cmd use FUSE",
		"idcfs/proto":                  "proto and vchan never import each other",
		"idcfs/linkmgr":                "imports flow linkmgr -> vchan",
		"idcfs/fsnode":                 "imports flow fsnode -> linkmgr -> vchan",
		"github.com/sirupsen/logrus":   "the ring does not log; callers do",
	}
	for _, dep := range strings.Fields(string(out)) {
		for bad, why := range forbidden {
			if dep == bad || strings.HasPrefix(dep, bad+"/") {
				t.Errorf("vchan depends on %s: %s", dep, why)
			}
		}
	}
}
