package shm

import (
	"encoding/binary"
	"fmt"
)

// Event-socket wire format. All integers little-endian.
//
// Handshake, one message each way right after connect:
//
//	hello (binder -> listener), 16 bytes, with one descriptor (SCM_RIGHTS)
//	   0  [4]  magic "XEVT"
//	   4  u8   version (2)
//	   5  u8   type: msgHello
//	   6  u16  binder's domain
//	   8  u32  binder's local port
//	  12  u32  listener port the binder means to bind
//
//	reply (listener -> binder), 16 bytes; an accept carries one descriptor
//	   0  [4]  magic "XEVT"
//	   4  u8   version (2)
//	   5  u8   type: msgAccept or msgRefuse
//	   6  u16  listener's domain
//	   8  u32  listener's port
//	  12  u32  refusal code (0 on accept)
//
// The descriptor is the sender's eventfd: the receiver notifies the sender
// by adding 1 to it. Events never travel on the socket.
//
// Then a stream of tokens in both directions:
//
//	tokNotice  1 + 16 bytes     "if I vanish, clear byte off of grant granter/ref"
//	tokCancel  1 + 16 bytes     withdraw that notice
//	tokBye     1 byte           orderly close; EOF after it is not a death
//
// The 16-byte body of a notice is: u16 granter, u16 offset (< 4096), u32
// ref, u64 inode number of the grant file. The inode tells the page apart
// from an earlier grant with the same ref that someone may still map.
const (
	wireVersion = 2
	helloLen    = 16

	msgHello  = 1
	msgAccept = 2
	msgRefuse = 3

	tokNotice = 0x02
	tokCancel = 0x03
	tokBye    = 0x04

	noticeLen = 17
)

var wireMagic = [4]byte{'X', 'E', 'V', 'T'}

// Refusal codes of a reply.
const (
	refuseNone       = 0
	refuseWrongPeer  = 1 // the port is reserved for another domain
	refuseBound      = 2 // the port is already bound
	refuseWrongPort  = 3 // the socket is not the port the binder asked for
	refuseBadEventfd = 4 // the hello did not carry exactly one eventfd
	refuseMaxDefined = refuseBadEventfd
)

// hello is the handshake message: msgHello from the binder, msgAccept or
// msgRefuse from the listener.
type hello struct {
	typ    uint8
	domain uint16
	port   uint32
	arg    uint32 // hello: wanted listener port; reply: refusal code
}

func (h hello) append(b []byte) []byte {
	b = append(b, wireMagic[:]...)
	b = append(b, wireVersion, h.typ)
	b = binary.LittleEndian.AppendUint16(b, h.domain)
	b = binary.LittleEndian.AppendUint32(b, h.port)
	return binary.LittleEndian.AppendUint32(b, h.arg)
}

// parseHello decodes a handshake message; extra trailing bytes are an error
// because the handshake is exactly helloLen bytes on the stream.
func parseHello(b []byte) (hello, error) {
	if len(b) != helloLen {
		return hello{}, fmt.Errorf("%w: handshake of %d bytes, want %d", ErrProtocol, len(b), helloLen)
	}
	if [4]byte(b[0:4]) != wireMagic {
		return hello{}, fmt.Errorf("%w: bad handshake magic %q", ErrProtocol, b[0:4])
	}
	if b[4] != wireVersion {
		return hello{}, fmt.Errorf("%w: handshake version %d, want %d", ErrProtocol, b[4], wireVersion)
	}
	h := hello{
		typ:    b[5],
		domain: binary.LittleEndian.Uint16(b[6:]),
		port:   binary.LittleEndian.Uint32(b[8:]),
		arg:    binary.LittleEndian.Uint32(b[12:]),
	}
	switch h.typ {
	case msgHello, msgAccept:
		if h.typ == msgAccept && h.arg != refuseNone {
			return hello{}, fmt.Errorf("%w: accept with refusal code %d", ErrProtocol, h.arg)
		}
	case msgRefuse:
		if h.arg == refuseNone || h.arg > refuseMaxDefined {
			return hello{}, fmt.Errorf("%w: refusal code %d", ErrProtocol, h.arg)
		}
	default:
		return hello{}, fmt.Errorf("%w: handshake type %d", ErrProtocol, h.typ)
	}
	if h.domain >= domidFirstReserved {
		return hello{}, fmt.Errorf("%w: handshake domain %d", ErrProtocol, h.domain)
	}
	if h.port == 0 || h.port > maxPort {
		return hello{}, fmt.Errorf("%w: handshake port %d", ErrProtocol, h.port)
	}
	return h, nil
}

// notice is the body of tokNotice and tokCancel.
type notice struct {
	granter uint16
	offset  uint16
	ref     uint32
	ino     uint64
}

func (n notice) append(b []byte, tok byte) []byte {
	b = append(b, tok)
	b = binary.LittleEndian.AppendUint16(b, n.granter)
	b = binary.LittleEndian.AppendUint16(b, n.offset)
	b = binary.LittleEndian.AppendUint32(b, n.ref)
	return binary.LittleEndian.AppendUint64(b, n.ino)
}

func parseNotice(b []byte) (notice, error) {
	n := notice{
		granter: binary.LittleEndian.Uint16(b[0:]),
		offset:  binary.LittleEndian.Uint16(b[2:]),
		ref:     binary.LittleEndian.Uint32(b[4:]),
		ino:     binary.LittleEndian.Uint64(b[8:]),
	}
	if n.granter >= domidFirstReserved || n.offset >= pageSize || n.ref == 0 {
		return notice{}, fmt.Errorf("%w: notice granter %d offset %d ref %d", ErrProtocol, n.granter, n.offset, n.ref)
	}
	return n, nil
}

// streamHandler receives what a streamDecoder decodes.
type streamHandler interface {
	notice(n notice, cancel bool)
	bye()
}

// streamDecoder decodes the token stream that follows the handshake. Frames
// may be split across reads; the decoder keeps the partial frame.
type streamDecoder struct {
	part  [noticeLen]byte
	npart int
	bye   bool
}

// feed decodes p. The first error is final: the stream is garbage from there
// on and the caller drops the connection. Anything after tokBye is an error.
func (d *streamDecoder) feed(p []byte, h streamHandler) error {
	for len(p) > 0 {
		if d.npart > 0 {
			k := copy(d.part[d.npart:], p)
			d.npart += k
			p = p[k:]
			if d.npart < noticeLen {
				return nil
			}
			d.npart = 0
			if err := d.frame(d.part[:], h); err != nil {
				return err
			}
			continue
		}
		if d.bye {
			return fmt.Errorf("%w: data after bye", ErrProtocol)
		}
		switch p[0] {
		case tokBye:
			d.bye = true
			p = p[1:]
			h.bye()
		case tokNotice, tokCancel:
			if len(p) < noticeLen {
				d.npart = copy(d.part[:], p)
				return nil
			}
			if err := d.frame(p[:noticeLen], h); err != nil {
				return err
			}
			p = p[noticeLen:]
		default:
			return fmt.Errorf("%w: unknown token %#x", ErrProtocol, p[0])
		}
	}
	return nil
}

// frame handles one complete notice or cancel frame.
func (d *streamDecoder) frame(f []byte, h streamHandler) error {
	n, err := parseNotice(f[1:])
	if err != nil {
		return err
	}
	h.notice(n, f[0] == tokCancel)
	return nil
}
