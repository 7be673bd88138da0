package xen

import (
	"errors"
	"fmt"
	"io/fs"
	"path/filepath"
)

var (
	// ErrInvalid is wrapped by errors for arguments the backend rejects
	// before asking the kernel (page counts, domain ids, ports, offsets).
	ErrInvalid = errors.New("xen: invalid argument")
	// ErrForeignChannel is returned by Mapping.SetUnmapNotify for an event
	// channel that this package did not create.
	ErrForeignChannel = errors.New("xen: event channel not from the xen backend")
	// ErrNotifySet is returned by a second Mapping.SetUnmapNotify.
	ErrNotifySet = errors.New("xen: unmap notify already set")
	// ErrUnsupported is returned on platforms other than Linux.
	ErrUnsupported = errors.New("xen: only supported on Linux")
)

// DeviceError reports a Xen device that could not be opened. It unwraps to
// the underlying error, so errors.Is(err, fs.ErrNotExist) tells a missing
// device.
type DeviceError struct {
	Path string
	Err  error
}

func (e *DeviceError) Error() string {
	hint := ""
	switch {
	case errors.Is(e.Err, fs.ErrNotExist):
		hint = fmt.Sprintf(" (not a Xen domain, or the xen-%s module is not loaded)", filepath.Base(e.Path))
	case errors.Is(e.Err, fs.ErrPermission):
		hint = " (the Xen devices need root)"
	}
	return fmt.Sprintf("xen: open %s: %v%s", e.Path, e.Err, hint)
}

// Unwrap returns the underlying error.
func (e *DeviceError) Unwrap() error { return e.Err }

// OpError is an ioctl or mmap on a Xen device that failed.
type OpError struct {
	Op   string // e.g. "gntalloc ALLOC_GREF"
	Peer int    // peer domain, -1 if none
	Err  error
}

func (e *OpError) Error() string {
	if e.Peer >= 0 {
		return fmt.Sprintf("xen: %s (domain %d): %v", e.Op, e.Peer, e.Err)
	}
	return fmt.Sprintf("xen: %s: %v", e.Op, e.Err)
}

// Unwrap returns the underlying error (usually a syscall.Errno).
func (e *OpError) Unwrap() error { return e.Err }
