// Package proto encodes and decodes the frames of the idcfs link protocol.
//
// A link is one byte stream in each direction between two domains (a vchan
// ring pair). Both directions carry a sequence of frames. Every frame is a
// fixed 12-byte little-endian header followed by Length bytes of body:
//
//	 0      1      2      3      4      5      6      7      8      9     10     11
//	+------+------+------+------+------+------+------+------+------+------+------+------+
//	| type |flags |   reserved  |        conn id (u32)      |       length (u32)        |
//	+------+------+------+------+------+------+------+------+------+------+------+------+
//	| body: length bytes ...
//
// Senders write zero in flags and reserved; receivers ignore both. Conn id 0
// addresses the link itself (HELLO, link-wide DISCONNECT_ind); every other
// message names a connection. The ring server allocates odd connection ids,
// the ring client even ones, so the two sides never collide.
//
// Bodies (all integers little-endian; a receiver accepts a body longer than
// shown and ignores the extra bytes, so later versions can append fields):
//
//	HELLO          (conn 0)   version u16 | domid u16 | max frame u32 | features u64        16 bytes
//	CONNECT_req    (conn id)  dst port u32 | src port u32 | window u32                      12 bytes
//	CONNECT_rsp    (conn id)  status u8 | reserved [3] | window u32                          8 bytes
//	DATA_ind       (conn id)  payload, 1..max frame bytes                                 variable
//	CREDIT         (conn id)  buf alloc u32 | reserved u32 | fwd cnt u64                    16 bytes
//	SHUTDOWN       (conn id)  how u8 | reserved [3]                                          4 bytes
//	DISCONNECT_ind (any)      reason u8 | reserved [3]                                       4 bytes
//
// Control bodies are at most MaxControlBody bytes; DATA_ind payloads at most
// the max frame the receiver announced in its HELLO (never above MaxFrame).
//
// The package does no I/O, starts no goroutines and never logs. Encoding
// appends to a caller's buffer; header and fixed-body parsing allocate nothing,
// so the multiplexer can decode on its data path without garbage. docs/protocol.md
// specifies the same format byte by byte together with the rules of the
// exchange.
package proto
