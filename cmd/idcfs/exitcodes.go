package main

import (
	"errors"
	"fmt"
)

// Exit codes of idcfs. Scripts (scripts/idc-setup, the systemd unit, the
// test suites) rely on them, so they never change meaning.
const (
	// ExitOK: success, including a clean stop on SIGINT or SIGTERM.
	ExitOK = 0
	// ExitFailure: any error not covered below (a runtime failure after
	// start-up, a simulated domain that did not come up, ...).
	ExitFailure = 1
	// ExitUsage: bad command line (unknown subcommand or flag, bad value).
	ExitUsage = 2
	// ExitBackend: the vchan backend is unavailable (no /dev/xen, a Xen
	// backend missing from this build, an unusable --shm-dir).
	ExitBackend = 3
	// ExitMount: the FUSE mount failed (no /dev/fuse, not root, bad or
	// busy mount point).
	ExitMount = 4
	// ExitXenstore: Xenstore could not be reached, or this domain's id
	// could not be read from it.
	ExitXenstore = 5
)

// exitError carries the exit code an error should end the process with.
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string { return e.err.Error() }
func (e *exitError) Unwrap() error { return e.err }

// withCode tags err with an exit code; nil stays nil.
func withCode(code int, err error) error {
	if err == nil {
		return nil
	}
	return &exitError{code: code, err: err}
}

// usageErrorf is a command-line error (ExitUsage).
func usageErrorf(format string, args ...any) error {
	return &exitError{code: ExitUsage, err: fmt.Errorf(format, args...)}
}

// exitCode maps the error returned by run to the process exit code.
func exitCode(err error) int {
	if err == nil {
		return ExitOK
	}
	var ee *exitError
	if errors.As(err, &ee) {
		return ee.code
	}
	return ExitFailure
}
