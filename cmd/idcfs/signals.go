package main

import (
	"context"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"
)

// duplicateGrace is how long after the first SIGINT or SIGTERM further ones
// are taken as copies of it. timeout(1), for one, delivers its signal twice:
// to the command and to its process group. After this, a further signal
// ends the process the default way (a second Ctrl-C when a stop hangs).
const duplicateGrace = time.Second

// shutdownContext returns a context cancelled by the first SIGINT or
// SIGTERM. Unlike signal.NotifyContext, the handler stays installed until
// the process exits, so a duplicate arriving while the command cleans up
// cannot kill it half way. The returned function releases the watcher.
func shutdownContext(parent context.Context) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithCancel(parent)
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	released := make(chan struct{})
	go func() {
		select {
		case <-sigs:
			cancel()
		case <-released:
			return
		}
		grace := time.NewTimer(duplicateGrace)
		defer grace.Stop()
		for {
			select {
			case <-sigs:
			case <-grace.C:
				signal.Reset(syscall.SIGINT, syscall.SIGTERM)
				return
			case <-released:
				return
			}
		}
	}()
	var once sync.Once
	return ctx, func() {
		once.Do(func() { close(released) })
		cancel()
	}
}
