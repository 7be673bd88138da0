package xenstore

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"io"
	"strconv"
	"syscall"
	"unicode/utf8"
)

// Limits of the wire protocol.
const (
	HeaderSize       = 16   // bytes of the message header
	MaxPayload       = 4096 // payload limit of xenstored
	MaxPayloadDevice = 4080 // payload limit through /dev/xen/xenbus (header + payload fit in a page)
	MaxAbsPath       = 3072 // longest absolute path
	MaxRelPath       = 2048 // longest relative path
)

// Op is a Xenstore message type.
type Op uint32

// Message types, as numbered in xs_wire.h.
const (
	OpControl            Op = 0
	OpDirectory          Op = 1
	OpRead               Op = 2
	OpGetPerms           Op = 3
	OpWatch              Op = 4
	OpUnwatch            Op = 5
	OpTransactionStart   Op = 6
	OpTransactionEnd     Op = 7
	OpIntroduce          Op = 8
	OpRelease            Op = 9
	OpGetDomainPath      Op = 10
	OpWrite              Op = 11
	OpMkdir              Op = 12
	OpRm                 Op = 13
	OpSetPerms           Op = 14
	OpWatchEvent         Op = 15
	OpError              Op = 16
	OpIsDomainIntroduced Op = 17
	OpResume             Op = 18
	OpSetTarget          Op = 19
	OpResetWatches       Op = 21
	OpDirectoryPart      Op = 22
	OpGetFeature         Op = 23
	OpSetFeature         Op = 24
	OpGetQuota           Op = 25
	OpSetQuota           Op = 26
)

var opNames = map[Op]string{
	OpControl:            "CONTROL",
	OpDirectory:          "DIRECTORY",
	OpRead:               "READ",
	OpGetPerms:           "GET_PERMS",
	OpWatch:              "WATCH",
	OpUnwatch:            "UNWATCH",
	OpTransactionStart:   "TRANSACTION_START",
	OpTransactionEnd:     "TRANSACTION_END",
	OpIntroduce:          "INTRODUCE",
	OpRelease:            "RELEASE",
	OpGetDomainPath:      "GET_DOMAIN_PATH",
	OpWrite:              "WRITE",
	OpMkdir:              "MKDIR",
	OpRm:                 "RM",
	OpSetPerms:           "SET_PERMS",
	OpWatchEvent:         "WATCH_EVENT",
	OpError:              "ERROR",
	OpIsDomainIntroduced: "IS_DOMAIN_INTRODUCED",
	OpResume:             "RESUME",
	OpSetTarget:          "SET_TARGET",
	OpResetWatches:       "RESET_WATCHES",
	OpDirectoryPart:      "DIRECTORY_PART",
	OpGetFeature:         "GET_FEATURE",
	OpSetFeature:         "SET_FEATURE",
	OpGetQuota:           "GET_QUOTA",
	OpSetQuota:           "SET_QUOTA",
}

// Known reports whether o is a message type defined by the protocol.
func (o Op) Known() bool {
	_, ok := opNames[o]
	return ok
}

func (o Op) String() string {
	if s, ok := opNames[o]; ok {
		return s
	}
	return "Op(" + strconv.FormatUint(uint64(o), 10) + ")"
}

// Message is one Xenstore message: header fields and payload.
type Message struct {
	Op      Op
	ReqID   uint32
	TxID    uint32
	Payload []byte
}

// AppendMarshal appends the encoded message to b. It fails with an error
// wrapping ErrTooLarge if the payload exceeds MaxPayload.
func (m *Message) AppendMarshal(b []byte) ([]byte, error) {
	if len(m.Payload) > MaxPayload {
		return b, fmt.Errorf("%w: %d bytes", ErrTooLarge, len(m.Payload))
	}
	b = binary.LittleEndian.AppendUint32(b, uint32(m.Op))
	b = binary.LittleEndian.AppendUint32(b, m.ReqID)
	b = binary.LittleEndian.AppendUint32(b, m.TxID)
	b = binary.LittleEndian.AppendUint32(b, uint32(len(m.Payload)))
	return append(b, m.Payload...), nil
}

// header holds a decoded header.
type header struct {
	op          Op
	reqID, txID uint32
	length      uint32
}

func decodeHeader(b []byte) header {
	return header{
		op:     Op(binary.LittleEndian.Uint32(b[0:])),
		reqID:  binary.LittleEndian.Uint32(b[4:]),
		txID:   binary.LittleEndian.Uint32(b[8:]),
		length: binary.LittleEndian.Uint32(b[12:]),
	}
}

// ParseMessage decodes one message from the start of b, whose payload may be
// at most maxPayload bytes. It returns the message and the number of bytes
// it used; extra bytes after the message are left alone. A short buffer gives
// io.ErrUnexpectedEOF (io.EOF when b is empty); a length past maxPayload gives
// an error wrapping ErrProtocol. The type is not checked: see Op.Known. The
// returned payload is a copy.
func ParseMessage(b []byte, maxPayload int) (*Message, int, error) {
	if len(b) == 0 {
		return nil, 0, io.EOF
	}
	if len(b) < HeaderSize {
		return nil, 0, io.ErrUnexpectedEOF
	}
	h := decodeHeader(b)
	if uint64(h.length) > uint64(maxPayload) {
		return nil, 0, fmt.Errorf("%w: payload length %d exceeds %d", ErrProtocol, h.length, maxPayload)
	}
	n := HeaderSize + int(h.length)
	if len(b) < n {
		return nil, 0, io.ErrUnexpectedEOF
	}
	m := &Message{Op: h.op, ReqID: h.reqID, TxID: h.txID, Payload: bytes.Clone(b[HeaderSize:n])}
	if m.Payload == nil {
		m.Payload = []byte{}
	}
	return m, n, nil
}

// ReadMessage reads one message from r, whose payload may be at most
// maxPayload bytes. It returns io.EOF if r ends cleanly before a message,
// io.ErrUnexpectedEOF if it ends inside one, and an error wrapping
// ErrProtocol for a length past maxPayload (the rest of the stream is then
// unusable). The type is not checked: see Op.Known.
func ReadMessage(r io.Reader, maxPayload int) (*Message, error) {
	var hb [HeaderSize]byte
	if _, err := io.ReadFull(r, hb[:]); err != nil {
		return nil, err
	}
	h := decodeHeader(hb[:])
	if uint64(h.length) > uint64(maxPayload) {
		return nil, fmt.Errorf("%w: payload length %d exceeds %d", ErrProtocol, h.length, maxPayload)
	}
	m := &Message{Op: h.op, ReqID: h.reqID, TxID: h.txID, Payload: make([]byte, h.length)}
	if _, err := io.ReadFull(r, m.Payload); err != nil {
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return nil, err
	}
	return m, nil
}

// AppendString appends s and its zero terminator.
func AppendString(b []byte, s string) []byte {
	return append(append(b, s...), 0)
}

// SplitStrings splits a payload made only of zero-terminated strings. Every
// string must be valid UTF-8 and the payload must end with a terminator (an
// empty payload gives no strings). Anything else gives an error wrapping
// ErrProtocol.
func SplitStrings(p []byte) ([]string, error) {
	if len(p) == 0 {
		return nil, nil
	}
	if p[len(p)-1] != 0 {
		return nil, fmt.Errorf("%w: unterminated string", ErrProtocol)
	}
	var out []string
	for len(p) > 0 {
		i := bytes.IndexByte(p, 0)
		s := p[:i]
		if !utf8.Valid(s) {
			return nil, fmt.Errorf("%w: string is not UTF-8", ErrProtocol)
		}
		out = append(out, string(s))
		p = p[i+1:]
	}
	return out, nil
}

// ParseString parses a payload that must be exactly one zero-terminated
// UTF-8 string with no other zero byte, as xenstored requires of
// single-argument requests.
func ParseString(p []byte) (string, error) {
	if len(p) == 0 || p[len(p)-1] != 0 {
		return "", fmt.Errorf("%w: unterminated string", ErrProtocol)
	}
	s := p[:len(p)-1]
	if bytes.IndexByte(s, 0) >= 0 {
		return "", fmt.Errorf("%w: more than one string", ErrProtocol)
	}
	if !utf8.Valid(s) {
		return "", fmt.Errorf("%w: string is not UTF-8", ErrProtocol)
	}
	return string(s), nil
}

// ParsePerms parses a list of permission entries as carried by GET_PERMS
// replies and SET_PERMS requests (after the path): at least one entry.
func ParsePerms(strs []string) ([]Perm, error) {
	if len(strs) == 0 {
		return nil, fmt.Errorf("%w: empty permission list", ErrBadPerm)
	}
	perms := make([]Perm, len(strs))
	for i, s := range strs {
		p, err := ParsePerm(s)
		if err != nil {
			return nil, err
		}
		perms[i] = p
	}
	return perms, nil
}

// ParseWatchEvent parses the payload of a WATCH_EVENT: "path\0token\0".
// Any bytes after the token's terminator are ignored, for newer servers.
func ParseWatchEvent(p []byte) (Event, error) {
	i := bytes.IndexByte(p, 0)
	if i < 0 {
		return Event{}, fmt.Errorf("%w: watch event without path terminator", ErrProtocol)
	}
	rest := p[i+1:]
	j := bytes.IndexByte(rest, 0)
	if j < 0 {
		return Event{}, fmt.Errorf("%w: watch event without token terminator", ErrProtocol)
	}
	path, token := p[:i], rest[:j]
	if len(path) == 0 || !utf8.Valid(path) || !utf8.Valid(token) {
		return Event{}, fmt.Errorf("%w: malformed watch event", ErrProtocol)
	}
	return Event{Path: string(path), Token: string(token)}, nil
}

// ParseError parses the payload of an ERROR reply: an errno name and its
// terminator. Unknown names map to EINVAL with the name kept.
func ParseError(p []byte) (errno syscall.Errno, name string, err error) {
	name, err = ParseString(p)
	if err != nil {
		return 0, "", err
	}
	if name == "" {
		return 0, "", fmt.Errorf("%w: empty error name", ErrProtocol)
	}
	errno, _ = ParseErrno(name)
	return errno, name, nil
}
