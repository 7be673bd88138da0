package xenstore

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
)

// Default locations, as libxenstore has them.
const (
	DefaultRunDir  = "/var/run/xenstored"
	DeviceXenbus   = "/dev/xen/xenbus"
	DeviceProcXen  = "/proc/xen/xenbus"
	socketBaseName = "socket"
)

// Dial connects to Xenstore. With a non-empty path it connects to that path:
// a Unix socket is dialled, anything else (the xenbus device) is opened
// read-write. With path "" it follows libxenstore's order: $XENSTORED_PATH if
// set; else the socket in $XENSTORED_RUNDIR (default /var/run/xenstored);
// else /dev/xen/xenbus, then /proc/xen/xenbus.
//
// Through the device the payload limit is MaxPayloadDevice and requests are
// sent one at a time, as the kernel's reply routing requires on older
// kernels.
func Dial(path string) (*Client, error) {
	return DialContext(context.Background(), path)
}

// DialContext is Dial with a context bounding the connect.
func DialContext(ctx context.Context, path string) (*Client, error) {
	if path != "" {
		return dialPath(ctx, path)
	}
	var candidates []string
	if p := os.Getenv("XENSTORED_PATH"); p != "" {
		candidates = []string{p}
	} else {
		dir := os.Getenv("XENSTORED_RUNDIR")
		if dir == "" {
			dir = DefaultRunDir
		}
		candidates = []string{dir + "/" + socketBaseName, DeviceXenbus, DeviceProcXen}
	}
	var errs []error
	for _, p := range candidates {
		c, err := dialPath(ctx, p)
		if err == nil {
			return c, nil
		}
		errs = append(errs, err)
	}
	return nil, fmt.Errorf("xenstore: no connection: %w", errors.Join(errs...))
}

func dialPath(ctx context.Context, path string) (*Client, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, err
	}
	if fi.Mode().Type() == os.ModeSocket {
		var d net.Dialer
		conn, err := d.DialContext(ctx, "unix", path)
		if err != nil {
			return nil, err
		}
		return NewClient(conn), nil
	}
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return nil, err
	}
	return newClient(f, MaxPayloadDevice, true), nil
}
