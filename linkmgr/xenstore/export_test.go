package xenstore

import "io"

// NewDeviceClient returns a client that behaves as it does on the xenbus
// device (payload limit MaxPayloadDevice, one request at a time), so tests
// can run it over a pipe.
func NewDeviceClient(rw io.ReadWriteCloser) *Client {
	return newClient(rw, MaxPayloadDevice, true)
}
