package proto

import (
	"os/exec"
	"strings"
	"testing"
)

// TestImports keeps proto a leaf: pure encoding, no I/O stack, no logging.
func TestImports(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", ".").Output()
	if err != nil {
		t.Skipf("go list unavailable: %v", err)
	}
	forbidden := map[string]string{
		"github.com/sirupsen/logrus": "proto never logs",
		"github.com/hanwen/go-fuse":  "nothing below fsnode uses FUSE",
		"idcfs/vchan":                "proto and vchan are independent leaves",
		"idcfs/linkmgr":              "imports flow linkmgr -> proto",
		"net":                        "proto does no I/O",
	}
	for _, dep := range strings.Fields(string(out)) {
		for bad, why := range forbidden {
			if dep == bad || strings.HasPrefix(dep, bad+"/") {
				t.Errorf("proto imports %s: %s", dep, why)
			}
		}
	}
}
