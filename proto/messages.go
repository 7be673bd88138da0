package proto

import (
	"encoding/binary"
	"fmt"
	"strconv"
)

// Message is one decoded frame body. Each concrete type also offers a
// value-receiver AppendFrame, which the multiplexer calls directly so that
// encoding does not box the message.
type Message interface {
	// Type is the message type written into the header.
	Type() Type
	// AppendFrame appends the complete frame (header and body) for
	// connection conn to b.
	AppendFrame(b []byte, conn uint32) []byte
}

// Hello is the first frame each side sends on a new link.
type Hello struct {
	Version  uint16 // highest protocol version the sender speaks (>= 1)
	Dom      uint16 // the sender's domid
	MaxFrame uint32 // largest DATA_ind payload the sender accepts (MinFrame..MaxFrame)
	Features uint64 // feature bits; none are defined in version 1
}

// ConnectReq asks the receiver to open connection Conn to its port DstPort.
type ConnectReq struct {
	DstPort uint32 // port listened on at the receiver
	SrcPort uint32 // the initiator's local port (informational)
	Window  uint32 // bytes the initiator can buffer for this connection
}

// Status is the outcome carried by a ConnectRsp.
type Status uint8

// Connect outcomes. Receivers treat unknown non-zero values as
// StatusRefused.
const (
	StatusAccepted    Status = 0 // connection is open
	StatusRefused     Status = 1 // refused for no more specific reason
	StatusNoPort      Status = 2 // nothing listens on the destination port
	StatusBacklogFull Status = 3 // the listener's accept queue is full
	StatusDenied      Status = 4 // policy forbids this connection
	StatusLimit       Status = 5 // the link has too many connections
)

var statusNames = [...]string{"accepted", "refused", "no such port", "backlog full", "denied", "too many connections"}

func (s Status) String() string {
	if int(s) < len(statusNames) {
		return statusNames[s]
	}
	return "status(" + strconv.Itoa(int(s)) + ")"
}

// ConnectRsp answers a ConnectReq on the same connection id.
type ConnectRsp struct {
	Status Status
	Window uint32 // bytes the acceptor can buffer (meaningful if accepted)
}

// Data is a DATA_ind frame. Payload aliases the decoded buffer.
type Data struct {
	Payload []byte
}

// Credit tells the peer how much it may send on a connection, as in
// virtio-vsock: the peer may have at most BufAlloc bytes in flight beyond
// FwdCnt, the running count of bytes the receiver has consumed.
type Credit struct {
	BufAlloc uint32 // receive buffer size
	FwdCnt   uint64 // total bytes taken out of the buffer so far
}

// ShutdownHow says which directions a SHUTDOWN closes.
type ShutdownHow uint8

// Shutdown bits. Unknown bits are ignored by receivers and dropped by the
// decoder.
const (
	// ShutWrite: the sender will send no more data (the receiver reads EOF
	// after the data already sent).
	ShutWrite ShutdownHow = 1 << 0
	// ShutRead: the sender will read no more data (the receiver's writes
	// fail from now on).
	ShutRead ShutdownHow = 1 << 1

	shutMask = ShutWrite | ShutRead
)

// Shutdown half-closes a connection in the directions named by How.
type Shutdown struct {
	How ShutdownHow
}

// Reason is why a DISCONNECT_ind was sent.
type Reason uint8

// Disconnect reasons. Receivers treat unknown values like ReasonReset.
const (
	ReasonNormal   Reason = 0 // orderly close after both sides shut down
	ReasonReset    Reason = 1 // the application reset the connection
	ReasonProtocol Reason = 2 // the peer broke the protocol
	ReasonCredit   Reason = 3 // the peer sent more than its credit
	ReasonShutdown Reason = 4 // the sender's daemon is going away
	ReasonIdle     Reason = 5 // the link had no connections for too long
	ReasonTimeout  Reason = 6 // an expected answer did not come in time
	ReasonLimit    Reason = 7 // a resource limit was hit
)

var reasonNames = [...]string{"normal", "reset", "protocol error", "credit overrun", "shutdown", "idle", "timeout", "limit"}

func (r Reason) String() string {
	if int(r) < len(reasonNames) {
		return reasonNames[r]
	}
	return "reason(" + strconv.Itoa(int(r)) + ")"
}

// Disconnect is DISCONNECT_ind: on conn 0 it drops the whole link.
type Disconnect struct {
	Reason Reason
}

// Type implementations.
func (Hello) Type() Type      { return TypeHello }
func (ConnectReq) Type() Type { return TypeConnectReq }
func (ConnectRsp) Type() Type { return TypeConnectRsp }
func (Data) Type() Type       { return TypeData }
func (Credit) Type() Type     { return TypeCredit }
func (Shutdown) Type() Type   { return TypeShutdown }
func (Disconnect) Type() Type { return TypeDisconnect }

var le = binary.LittleEndian

// AppendFrame appends a HELLO frame (always conn 0; the conn argument is
// ignored).
func (m Hello) AppendFrame(b []byte, _ uint32) []byte {
	b = AppendHeader(b, Header{Type: TypeHello, Length: bodyLen[TypeHello]})
	b = le.AppendUint16(b, m.Version)
	b = le.AppendUint16(b, m.Dom)
	b = le.AppendUint32(b, m.MaxFrame)
	return le.AppendUint64(b, m.Features)
}

// AppendFrame appends a CONNECT_req frame.
func (m ConnectReq) AppendFrame(b []byte, conn uint32) []byte {
	b = AppendHeader(b, Header{Type: TypeConnectReq, Conn: conn, Length: bodyLen[TypeConnectReq]})
	b = le.AppendUint32(b, m.DstPort)
	b = le.AppendUint32(b, m.SrcPort)
	return le.AppendUint32(b, m.Window)
}

// AppendFrame appends a CONNECT_rsp frame.
func (m ConnectRsp) AppendFrame(b []byte, conn uint32) []byte {
	b = AppendHeader(b, Header{Type: TypeConnectRsp, Conn: conn, Length: bodyLen[TypeConnectRsp]})
	b = append(b, byte(m.Status), 0, 0, 0)
	return le.AppendUint32(b, m.Window)
}

// AppendFrame appends a DATA_ind frame holding the whole payload. The
// multiplexer instead writes the header with AppendHeader and hands the
// payload to the ring separately, to avoid a copy.
func (m Data) AppendFrame(b []byte, conn uint32) []byte {
	b = AppendHeader(b, Header{Type: TypeData, Conn: conn, Length: uint32(len(m.Payload))})
	return append(b, m.Payload...)
}

// AppendFrame appends a CREDIT frame.
func (m Credit) AppendFrame(b []byte, conn uint32) []byte {
	b = AppendHeader(b, Header{Type: TypeCredit, Conn: conn, Length: bodyLen[TypeCredit]})
	b = le.AppendUint32(b, m.BufAlloc)
	b = le.AppendUint32(b, 0)
	return le.AppendUint64(b, m.FwdCnt)
}

// AppendFrame appends a SHUTDOWN frame.
func (m Shutdown) AppendFrame(b []byte, conn uint32) []byte {
	b = AppendHeader(b, Header{Type: TypeShutdown, Conn: conn, Length: bodyLen[TypeShutdown]})
	return append(b, byte(m.How&shutMask), 0, 0, 0)
}

// AppendFrame appends a DISCONNECT_ind frame; conn 0 addresses the link.
func (m Disconnect) AppendFrame(b []byte, conn uint32) []byte {
	b = AppendHeader(b, Header{Type: TypeDisconnect, Conn: conn, Length: bodyLen[TypeDisconnect]})
	return append(b, byte(m.Reason), 0, 0, 0)
}

func short(t Type, body []byte) error {
	return fmt.Errorf("%w: %s body of %d bytes, need %d", ErrShort, t, len(body), bodyLen[t])
}

// ParseHello decodes a HELLO body. It rejects version 0 and a max frame
// below MinFrame, and clamps a max frame above MaxFrame.
func ParseHello(body []byte) (Hello, error) {
	if len(body) < int(bodyLen[TypeHello]) {
		return Hello{}, short(TypeHello, body)
	}
	m := Hello{
		Version:  le.Uint16(body[0:]),
		Dom:      le.Uint16(body[2:]),
		MaxFrame: le.Uint32(body[4:]),
		Features: le.Uint64(body[8:]),
	}
	if m.Version == 0 {
		return Hello{}, fmt.Errorf("%w: 0", ErrVersion)
	}
	if m.MaxFrame < MinFrame {
		return Hello{}, fmt.Errorf("%w: max frame %d below %d", ErrField, m.MaxFrame, MinFrame)
	}
	m.MaxFrame = min(m.MaxFrame, MaxFrame)
	return m, nil
}

// ParseConnectReq decodes a CONNECT_req body.
func ParseConnectReq(body []byte) (ConnectReq, error) {
	if len(body) < int(bodyLen[TypeConnectReq]) {
		return ConnectReq{}, short(TypeConnectReq, body)
	}
	return ConnectReq{
		DstPort: le.Uint32(body[0:]),
		SrcPort: le.Uint32(body[4:]),
		Window:  le.Uint32(body[8:]),
	}, nil
}

// ParseConnectRsp decodes a CONNECT_rsp body.
func ParseConnectRsp(body []byte) (ConnectRsp, error) {
	if len(body) < int(bodyLen[TypeConnectRsp]) {
		return ConnectRsp{}, short(TypeConnectRsp, body)
	}
	return ConnectRsp{Status: Status(body[0]), Window: le.Uint32(body[4:])}, nil
}

// ParseCredit decodes a CREDIT body.
func ParseCredit(body []byte) (Credit, error) {
	if len(body) < int(bodyLen[TypeCredit]) {
		return Credit{}, short(TypeCredit, body)
	}
	return Credit{BufAlloc: le.Uint32(body[0:]), FwdCnt: le.Uint64(body[8:])}, nil
}

// ParseShutdown decodes a SHUTDOWN body, dropping unknown bits.
func ParseShutdown(body []byte) (Shutdown, error) {
	if len(body) < int(bodyLen[TypeShutdown]) {
		return Shutdown{}, short(TypeShutdown, body)
	}
	return Shutdown{How: ShutdownHow(body[0]) & shutMask}, nil
}

// ParseDisconnect decodes a DISCONNECT_ind body.
func ParseDisconnect(body []byte) (Disconnect, error) {
	if len(body) < int(bodyLen[TypeDisconnect]) {
		return Disconnect{}, short(TypeDisconnect, body)
	}
	return Disconnect{Reason: Reason(body[0])}, nil
}

// Parse decodes the complete frame at the start of b: header, then body.
// It returns the header, the message (a value of one of the types above;
// Data.Payload aliases b) and the number of bytes the frame occupies. On
// error the message is a plain nil. Extra bytes after the frame are left
// for the next call. The multiplexer uses ParseHeader and the Parse*
// body functions instead, which do not box the message.
func Parse(b []byte, maxData uint32) (Header, Message, int, error) {
	h, err := ParseHeader(b, maxData)
	if err != nil {
		return Header{}, nil, 0, err
	}
	n := h.FrameLen()
	if len(b) < n {
		return Header{}, nil, 0, fmt.Errorf("%w: %s needs %d bytes, have %d", ErrShort, h.Type, n, len(b))
	}
	m, err := ParseBody(h, b[HeaderLen:n])
	if err != nil {
		return Header{}, nil, 0, err
	}
	return h, m, n, nil
}

// ParseBody decodes body (exactly h.Length bytes) as a message of type h.Type.
func ParseBody(h Header, body []byte) (Message, error) {
	var (
		m   Message
		err error
	)
	switch h.Type {
	case TypeHello:
		m, err = unbox(ParseHello(body))
	case TypeConnectReq:
		m, err = unbox(ParseConnectReq(body))
	case TypeConnectRsp:
		m, err = unbox(ParseConnectRsp(body))
	case TypeData:
		if len(body) == 0 {
			return nil, fmt.Errorf("%w: empty %s", ErrLength, h.Type)
		}
		m = Data{Payload: body}
	case TypeCredit:
		m, err = unbox(ParseCredit(body))
	case TypeShutdown:
		m, err = unbox(ParseShutdown(body))
	case TypeDisconnect:
		m, err = unbox(ParseDisconnect(body))
	default:
		return nil, fmt.Errorf("%w: %d", ErrUnknownType, uint8(h.Type))
	}
	if err != nil {
		return nil, err
	}
	return m, nil
}

// unbox turns a typed (value, error) pair into a Message that is a plain nil
// on error.
func unbox[T Message](v T, err error) (Message, error) {
	if err != nil {
		return nil, err
	}
	return v, nil
}
