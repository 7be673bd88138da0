//go:build !linux

package shm

import (
	"errors"

	"idcfs/vchan"
)

// ErrUnsupported is returned by Open on systems other than Linux.
var ErrUnsupported = errors.New("shm: simulated Xen host needs Linux")

// Backend is the shm backend for one simulated domain (Linux only).
type Backend struct{}

// Open fails with ErrUnsupported off Linux.
func Open(dir string, self vchan.DomID) (*Backend, error) { return nil, ErrUnsupported }
