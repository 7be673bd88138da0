package heap

import (
	"errors"
	"fmt"
	"io/fs"
)

var (
	// ErrBadGrant is returned by Map for a reference that does not exist,
	// was revoked, or was not shared with the mapping domain by the named
	// peer.
	ErrBadGrant = errors.New("heap: no such grant for this domain")
	// ErrNotContiguous is returned by Map when the references are not
	// consecutive pages of one Share call.
	ErrNotContiguous = errors.New("heap: grant references are not one contiguous share")
	// ErrBadPort is returned by Bind for a port that does not exist, is
	// already bound, or was not allocated for the binding domain.
	ErrBadPort = errors.New("heap: no unbound port for this domain")
	// ErrInvalid is returned for an argument out of range (page count,
	// notify offset, a second unmap notify, an empty path).
	ErrInvalid = errors.New("heap: invalid argument")
	// ErrNotFound is returned by Store.Lookup for a path nobody published.
	// It wraps fs.ErrNotExist.
	ErrNotFound = fmt.Errorf("heap: path not published: %w", fs.ErrNotExist)
)
