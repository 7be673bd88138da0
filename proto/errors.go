package proto

import "errors"

// Sentinel errors returned by the decoders. They are wrapped with details;
// test them with errors.Is.
var (
	// ErrShort means the buffer holds fewer bytes than the header or the
	// fixed body requires.
	ErrShort = errors.New("proto: short frame")
	// ErrUnknownType means the type byte names no message of this version.
	ErrUnknownType = errors.New("proto: unknown message type")
	// ErrLength means the header's length is out of bounds for its type.
	ErrLength = errors.New("proto: bad length")
	// ErrConnID means the conn id is 0 where a connection is required, or
	// non-zero on a link-level message.
	ErrConnID = errors.New("proto: bad connection id")
	// ErrVersion means a HELLO announced a version this package cannot speak.
	ErrVersion = errors.New("proto: unsupported version")
	// ErrField means a body field holds a value outside its range.
	ErrField = errors.New("proto: bad field value")
)
