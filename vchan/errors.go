package vchan

import (
	"errors"
	"fmt"
)

var (
	// ErrPeerClosed is returned by Write (and reported by Err) once the peer
	// closed its end or died. Read returns io.EOF instead, after the data
	// left in the ring.
	ErrPeerClosed = errors.New("vchan: peer closed")
	// ErrBroken is wrapped by every *BrokenError: the peer wrote something
	// into the shared page that the protocol does not allow.
	ErrBroken = errors.New("vchan: peer broke the ring protocol")
	// ErrRingSize is returned by NewServer when a requested ring size is
	// negative or larger than MaxRingSize.
	ErrRingSize = errors.New("vchan: ring size out of range")
	// ErrBadLayout is returned by NewClient when the control page does not
	// describe a legal ring layout (for example a zeroed, stale page: the
	// server is not ready; retry later).
	ErrBadLayout = errors.New("vchan: invalid ring layout in control page")
	// ErrBadRef is returned by NewClient for a zero ring reference or port.
	ErrBadRef = errors.New("vchan: invalid ring reference or event channel port")
	// ErrMisaligned is returned when a backend hands out memory that is not
	// 4-byte aligned or shorter than asked for.
	ErrMisaligned = errors.New("vchan: backend mapping misaligned or short")
)

// BrokenError says what a hostile or buggy peer wrote. It wraps ErrBroken.
type BrokenError struct {
	// What names the field or check that failed.
	What string
	// Value is the offending value as read (after the one atomic load).
	Value uint64
}

func (e *BrokenError) Error() string {
	return fmt.Sprintf("%v: %s (%#x)", ErrBroken, e.What, e.Value)
}

// Unwrap returns ErrBroken.
func (e *BrokenError) Unwrap() error { return ErrBroken }
