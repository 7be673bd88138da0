package main

import (
	"io"

	"idcfs/vchan"
	"idcfs/vchan/xen"
)

// openXenBackend opens the real Xen backend (grant tables and event
// channels through /dev/xen). The domain id is not needed by the devices;
// the link manager gets it separately.
func openXenBackend(self vchan.DomID) (vchan.Backend, io.Closer, error) {
	b, err := xen.Open()
	if err != nil {
		return nil, nil, withCode(ExitBackend, err)
	}
	return b, b, nil
}
