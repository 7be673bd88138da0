package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestSimShmDir: the grant pages of a simulated host go to tmpfs whenever
// there is one, at a place that depends only on --dir.
func TestSimShmDir(t *testing.T) {
	if !onTmpfs("/dev/shm") {
		t.Skip("no tmpfs at /dev/shm on this machine")
	}
	onShm, err := os.MkdirTemp("/dev/shm", "simdir-")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(onShm)
	if got, want := simShmDir(onShm), filepath.Join(onShm, "shm"); got != want {
		t.Errorf("--dir on tmpfs: shm dir %s, want %s", got, want)
	}
	disk := t.TempDir()
	if onTmpfs(disk) {
		t.Logf("%s is tmpfs too: only the tmpfs case is checked", disk)
		return
	}
	got := simShmDir(disk)
	if !strings.HasPrefix(got, "/dev/shm/idcfs-sim-") || !onTmpfs(filepath.Dir(got)) {
		t.Errorf("--dir %s off tmpfs: shm dir %s, want one under /dev/shm", disk, got)
	}
	if again := simShmDir(disk); again != got {
		t.Errorf("shm dir of %s changed between calls: %s, then %s", disk, got, again)
	}
	if other := simShmDir(disk + "x"); other == got {
		t.Errorf("two host dirs share the shm dir %s", got)
	}
}
