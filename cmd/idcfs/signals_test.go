package main

import (
	"context"
	"os"
	"syscall"
	"testing"
	"time"
)

// TestShutdownContextAbsorbsDuplicates: the first signal cancels the
// context; copies that follow while the command cleans up must not kill the
// process (if they did, this test binary would die).
func TestShutdownContextAbsorbsDuplicates(t *testing.T) {
	ctx, stop := shutdownContext(context.Background())
	defer stop()
	self, err := os.FindProcess(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if ctx.Err() != nil {
		t.Fatal("cancelled before any signal")
	}
	for _, sig := range []os.Signal{syscall.SIGINT, syscall.SIGINT} {
		if err := self.Signal(sig); err != nil {
			t.Fatal(err)
		}
	}
	select {
	case <-ctx.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("SIGINT did not cancel the context")
	}
	// After the watcher is released the handler stays installed.
	stop()
	if err := self.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	time.Sleep(200 * time.Millisecond)
}
