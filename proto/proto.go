package proto

import (
	"encoding/binary"
	"fmt"
	"strconv"
)

// Version is the protocol version this package speaks. A HELLO carries the
// highest version its sender speaks; the link runs at the lower of the two.
const Version = 1

// Sizes and bounds.
const (
	// HeaderLen is the size of the fixed frame header.
	HeaderLen = 12
	// MaxControlBody bounds the body of every message except DATA_ind. Fixed
	// bodies may grow in later versions up to this size.
	MaxControlBody = 64
	// MaxFrame is the absolute ceiling on a DATA_ind payload. A HELLO that
	// announces more is clamped to it.
	MaxFrame = 1 << 20
	// MinFrame is the smallest max frame a HELLO may announce.
	MinFrame = 256
	// DefaultMaxFrame is the max frame idcfs announces unless configured
	// otherwise: big enough for bulk transfers, small enough that frames of
	// other connections interleave on the ring.
	DefaultMaxFrame = 64 << 10
)

// Type is the message type, the first byte of a frame.
type Type uint8

// Message types.
const (
	TypeHello      Type = 1 // link setup, conn 0
	TypeConnectReq Type = 2 // open a connection
	TypeConnectRsp Type = 3 // answer to TypeConnectReq
	TypeData       Type = 4 // DATA_ind: payload bytes of a connection
	TypeCredit     Type = 5 // receive window update
	TypeShutdown   Type = 6 // per-direction half-close
	TypeDisconnect Type = 7 // DISCONNECT_ind: advisory, never answered
)

var typeNames = [...]string{
	TypeHello:      "HELLO",
	TypeConnectReq: "CONNECT_req",
	TypeConnectRsp: "CONNECT_rsp",
	TypeData:       "DATA_ind",
	TypeCredit:     "CREDIT",
	TypeShutdown:   "SHUTDOWN",
	TypeDisconnect: "DISCONNECT_ind",
}

// Known reports whether t is a message type of this version.
func (t Type) Known() bool { return t >= TypeHello && t <= TypeDisconnect }

func (t Type) String() string {
	if t.Known() {
		return typeNames[t]
	}
	return "type(" + strconv.Itoa(int(t)) + ")"
}

// bodyLen is the fixed body size of each control type (0 for DATA_ind).
var bodyLen = [...]uint32{
	TypeHello:      16,
	TypeConnectReq: 12,
	TypeConnectRsp: 8,
	TypeData:       0,
	TypeCredit:     16,
	TypeShutdown:   4,
	TypeDisconnect: 4,
}

// BodyLen is the size of t's fixed body in this version (0 for DATA_ind and
// unknown types). A received body may be longer.
func BodyLen(t Type) int {
	if !t.Known() {
		return 0
	}
	return int(bodyLen[t])
}

// Header is a decoded frame header.
type Header struct {
	Type   Type
	Conn   uint32 // connection id, 0 for link-level messages
	Length uint32 // body length in bytes
}

// AppendHeader appends the 12-byte encoding of h to b. The flags and reserved
// bytes are written as zero.
func AppendHeader(b []byte, h Header) []byte {
	b = append(b, byte(h.Type), 0, 0, 0)
	b = binary.LittleEndian.AppendUint32(b, h.Conn)
	return binary.LittleEndian.AppendUint32(b, h.Length)
}

// PutHeader writes h into b[:HeaderLen], which must be at least HeaderLen
// long (it panics otherwise, like binary.LittleEndian.PutUint32).
func PutHeader(b []byte, h Header) {
	_ = b[HeaderLen-1]
	b[0], b[1], b[2], b[3] = byte(h.Type), 0, 0, 0
	binary.LittleEndian.PutUint32(b[4:], h.Conn)
	binary.LittleEndian.PutUint32(b[8:], h.Length)
}

// ParseHeader decodes and validates the header at the start of b. maxData is
// the largest DATA_ind payload the caller accepts (its announced max frame);
// values above MaxFrame are treated as MaxFrame. It rejects unknown types, a
// length out of bounds for the type and a conn id that does not fit the type.
// It does not look past b[:HeaderLen] and allocates nothing.
func ParseHeader(b []byte, maxData uint32) (Header, error) {
	if len(b) < HeaderLen {
		return Header{}, fmt.Errorf("%w: %d of %d header bytes", ErrShort, len(b), HeaderLen)
	}
	h := Header{
		Type:   Type(b[0]),
		Conn:   binary.LittleEndian.Uint32(b[4:]),
		Length: binary.LittleEndian.Uint32(b[8:]),
	}
	if err := h.Check(maxData); err != nil {
		return Header{}, err
	}
	return h, nil
}

// Check validates a header as ParseHeader does.
func (h Header) Check(maxData uint32) error {
	if !h.Type.Known() {
		return fmt.Errorf("%w: %d", ErrUnknownType, uint8(h.Type))
	}
	if maxData > MaxFrame {
		maxData = MaxFrame
	}
	switch h.Type {
	case TypeData:
		if h.Length == 0 || h.Length > maxData {
			return fmt.Errorf("%w: %s of %d bytes (limit %d)", ErrLength, h.Type, h.Length, maxData)
		}
	default:
		if h.Length < bodyLen[h.Type] || h.Length > MaxControlBody {
			return fmt.Errorf("%w: %s body of %d bytes (want %d..%d)", ErrLength, h.Type, h.Length, bodyLen[h.Type], MaxControlBody)
		}
	}
	switch h.Type {
	case TypeHello:
		if h.Conn != 0 {
			return fmt.Errorf("%w: %s on conn %d", ErrConnID, h.Type, h.Conn)
		}
	case TypeDisconnect:
		// conn 0 drops the whole link, any other id one connection.
	default:
		if h.Conn == 0 {
			return fmt.Errorf("%w: %s on conn 0", ErrConnID, h.Type)
		}
	}
	return nil
}

// FrameLen is the total size of the frame h heads.
func (h Header) FrameLen() int { return HeaderLen + int(h.Length) }

func (h Header) String() string {
	return fmt.Sprintf("%s conn=%d len=%d", h.Type, h.Conn, h.Length)
}
