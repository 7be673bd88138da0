// Package fsnode is the FUSE face of idcfs: the go-fuse node and handle types
// that present the link manager's connections as files, and the one place in
// idcfs where Go errors become errnos (see errno.go).
//
// The tree under the mount root:
//
//	self                   this domain's id
//	listen/<port>          open = accept one connection on a bound port
//	connect/<domid>/<port> open = connect to a peer's port
//	conn/<id>/status       state, addresses and byte counters of a connection
//	conn/<id>/ctl          write "shutdown" or "hangup"; read the id
//	conn/<id>/data         another handle on an existing connection
//	links/<domid>          state and counters of the link to a peer
//
// An open connection file is a byte stream (FOPEN_DIRECT_IO, FOPEN_STREAM,
// FOPEN_NONSEEKABLE). Every call that can wait for a peer (open of listen/
// and connect/ files, read, write) returns EINTR as soon as the kernel
// interrupts the request, so a signal always ends a blocked process.
//
// The package owns no connection state beyond handle counts: connections,
// listeners and links belong to linkmgr. It does not parse flags or handle
// signals; cmd/idcfs calls Mount and Mounted.Shutdown. docs/files.md
// describes the file interface for users.
package fsnode
