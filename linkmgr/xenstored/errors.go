package xenstored

import "errors"

// Sentinel errors of the Go API.
var (
	// ErrClosed is returned after Close.
	ErrClosed = errors.New("xenstored: server closed")
	// ErrDomainExists is returned by IntroduceDomain for a domain already
	// introduced (domain 0 always is).
	ErrDomainExists = errors.New("xenstored: domain already introduced")
	// ErrNoDomain is returned by ReleaseDomain for a domain not introduced,
	// and for domain 0, which cannot be released.
	ErrNoDomain = errors.New("xenstored: no such domain")
	// ErrBadDomain is returned for a domain id outside 0..65535.
	ErrBadDomain = errors.New("xenstored: domain id out of range")
)
