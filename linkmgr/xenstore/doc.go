// Package xenstore is a pure-Go Xenstore client and the Xenstore wire codec.
//
// It owns the byte format of Xenstore messages, the mapping of Xenstore error
// names to errnos, the permission syntax, and a Client that multiplexes many
// concurrent requests, transactions and watches over one connection. It does
// not implement a store: the embedded store used on hosts without Xen lives
// in idcfs/linkmgr/xenstored and uses this package's codec.
//
// # Wire format
//
// Every message, in both directions, is a 16-byte header of four
// little-endian uint32 followed by exactly len payload bytes:
//
//	offset  0: type    message type (Op)
//	offset  4: req_id  chosen by the client, echoed in the reply
//	offset  8: tx_id   transaction id, 0 outside a transaction
//	offset 12: len     payload length, at most MaxPayload (4096),
//	                   MaxPayloadDevice (4080) through /dev/xen/xenbus
//	offset 16: payload len bytes
//
// String arguments in payloads are each terminated by a zero byte, except the
// value of a WRITE, which runs to the end of the payload. Errors come back as
// a message of type OpError whose payload is an errno name such as "ENOENT\x00".
//
// # Connections
//
// Dial connects the way libxenstore does: $XENSTORED_PATH when set, else the
// xenstored Unix socket, else the xenbus device. NewClient takes any
// io.ReadWriteCloser (a net.Conn in tests). A Client runs one reader goroutine,
// owned by the Client and stopped by Close.
//
// # Errors
//
// A request the store refused returns *Error, which unwraps to a
// syscall.Errno, so errors.Is(err, syscall.ENOENT) works. Once the client is
// closed, or the connection broke, every call fails with an error wrapping
// net.ErrClosed (and ErrProtocol if the peer broke the protocol).
package xenstore
