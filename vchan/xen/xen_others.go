//go:build !linux

package xen

import "idcfs/vchan"

// Backend is the Xen backend; on this platform every call fails with
// ErrUnsupported.
type Backend struct{}

// Open fails with ErrUnsupported.
func Open() (*Backend, error) { return nil, ErrUnsupported }

// Close does nothing.
func (b *Backend) Close() error { return nil }

// Share fails with ErrUnsupported.
func (b *Backend) Share(vchan.DomID, int) (vchan.Mapping, error) { return nil, ErrUnsupported }

// Map fails with ErrUnsupported.
func (b *Backend) Map(vchan.DomID, []uint32, bool) (vchan.Mapping, error) {
	return nil, ErrUnsupported
}

// AllocUnbound fails with ErrUnsupported.
func (b *Backend) AllocUnbound(vchan.DomID) (vchan.EventChannel, error) { return nil, ErrUnsupported }

// Bind fails with ErrUnsupported.
func (b *Backend) Bind(vchan.DomID, uint32) (vchan.EventChannel, error) { return nil, ErrUnsupported }
