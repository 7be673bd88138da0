package main

import (
	"errors"
	"io"
	"os"

	"idcfs/vchan"
	"idcfs/vchan/shm"
)

// Backend names accepted by --backend.
const (
	backendXen = "xen"
	backendShm = "shm"
)

// xenDevDir exists in a Xen domain whose kernel has the Xen drivers loaded.
const xenDevDir = "/dev/xen"

// errNoXen explains what to do on a machine without Xen.
var errNoXen = errors.New("no " + xenDevDir + " here, so this is not a Xen domain " +
	"(or its Xen drivers are not loaded); on a machine without Xen, run " +
	"'idcfs sim --dir DIR 1 2' to simulate a host with two domains")

// defaultBackend is xen where /dev/xen exists, otherwise "" (none).
func defaultBackend() string {
	if _, err := os.Stat(xenDevDir); err == nil {
		return backendXen
	}
	return ""
}

// openBackend opens the vchan backend of domain self. The returned closer
// releases it after the link manager is closed.
func openBackend(name, shmDir string, self vchan.DomID) (vchan.Backend, io.Closer, error) {
	switch name {
	case backendShm:
		if shmDir == "" {
			return nil, nil, usageErrorf("--backend shm needs --shm-dir (the simulated host's shared directory)")
		}
		b, err := shm.Open(shmDir, self)
		if err != nil {
			return nil, nil, withCode(ExitBackend, err)
		}
		return b, b, nil
	case backendXen:
		if _, err := os.Stat(xenDevDir); err != nil {
			return nil, nil, withCode(ExitBackend, errNoXen)
		}
		return openXenBackend(self)
	case "":
		return nil, nil, withCode(ExitBackend, errNoXen)
	}
	return nil, nil, usageErrorf("unknown --backend %q (want %s or %s)", name, backendXen, backendShm)
}
