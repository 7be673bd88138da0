package linkmgr

import (
	"os/exec"
	"strings"
	"testing"
)

// TestImports keeps linkmgr below the filesystem layer.
func TestImports(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", ".").Output()
	if err != nil {
		t.Skipf("go list unavailable: %v", err)
	}
	forbidden := map[string]string{
		"github.com/hanwen/go-fuse": "nothing below fsnode uses FUSE",
		"idcfs/fsnode":              "imports flow fsnode -> linkmgr",
		"idcfs/cmd":                 "imports flow cmd -> linkmgr",
	}
	for _, dep := range strings.Fields(string(out)) {
		for bad, why := range forbidden {
			if dep == bad || strings.HasPrefix(dep, bad+"/") {
				t.Errorf("linkmgr imports %s: %s", dep, why)
			}
		}
	}
}
