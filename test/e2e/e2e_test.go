// Package e2e runs the shell end-to-end suite (run.sh) against a simulated
// Xen host, so that `go test ./...` covers it where it can run: as root on a
// machine with /dev/fuse. Elsewhere the test skips and says why.
package e2e

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// suiteTimeout bounds the whole suite; run.sh itself aims for well under
// three minutes, the rest is building idcfs on a busy machine.
const suiteTimeout = 6 * time.Minute

var caseLine = regexp.MustCompile(`(?m)^(PASS|FAIL) (\S+)`)

func TestIntegrationE2E(t *testing.T) {
	if testing.Short() {
		t.Skip("skipping the end-to-end suite in -short mode")
	}
	if os.Geteuid() != 0 {
		t.Skip("the end-to-end suite mounts FUSE filesystems directly: run the tests as root")
	}
	if _, err := os.Stat("/dev/fuse"); err != nil {
		t.Skipf("the end-to-end suite needs /dev/fuse (try: modprobe fuse): %v", err)
	}
	bash, err := exec.LookPath("bash")
	if err != nil {
		t.Skipf("the end-to-end suite is a bash script: %v", err)
	}
	gobin := filepath.Join(os.Getenv("GOROOT"), "bin", "go")
	if _, err := os.Stat(gobin); err != nil {
		if gobin, err = exec.LookPath("go"); err != nil {
			t.Skipf("building idcfs needs the go command: %v", err)
		}
	}

	// Build idcfs here, with the same toolchain, so run.sh needs no go.
	// Under -race, the daemons get the race detector too; run.sh fails on
	// any race they report.
	bin := filepath.Join(t.TempDir(), "idcfs")
	args := []string{"build", "-o", bin}
	if raceEnabled {
		args = append(args, "-race")
	}
	build := exec.Command(gobin, append(args, "idcfs/cmd/idcfs")...)
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build idcfs/cmd/idcfs: %v\n%s", err, out)
	}

	ctx, cancel := context.WithTimeout(context.Background(), suiteTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, bash, "run.sh")
	cmd.Env = append(os.Environ(), "IDCFS_BIN="+bin)
	var out bytes.Buffer
	cmd.Stdout = &out
	cmd.Stderr = &out
	// On timeout, SIGTERM lets run.sh's trap stop the simulated host and
	// unmount; WaitDelay then stops waiting for it.
	cmd.Cancel = func() error { return cmd.Process.Signal(os.Interrupt) }
	cmd.WaitDelay = 20 * time.Second
	err = cmd.Run()
	text := out.String()
	t.Log("run.sh output:\n" + text)

	if strings.HasPrefix(strings.TrimSpace(text), "SKIP") {
		t.Skip(strings.TrimSpace(text))
	}
	if ctx.Err() != nil {
		t.Fatalf("run.sh did not finish within %v", suiteTimeout)
	}
	cases := caseLine.FindAllStringSubmatch(text, -1)
	t.Logf("idcfs built with -race: %v", raceEnabled)
	if len(cases) == 0 {
		t.Fatalf("run.sh reported no case (exit: %v)", err)
	}
	for _, c := range cases {
		if c[1] == "FAIL" {
			t.Errorf("case %s failed", c[2])
		}
	}
	if err != nil && !t.Failed() {
		t.Fatalf("run.sh failed without a failing case: %v", err)
	}
}
