package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"idcfs/linkmgr"
	"idcfs/linkmgr/xenstore"
)

// runSetup is `idcfs setup DOMID...`, run in dom0: it grants the Xenstore
// permissions that let the named domains set up links with each other.
func runSetup(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("setup", "setup [--xenstore PATH] DOMID...", stderr)
	xsPath := fs.String("xenstore", "", "Xenstore socket or device (default $XENSTORED_PATH, /var/run/xenstored/socket, /dev/xen/xenbus)")
	timeout := fs.Duration("timeout", 30*time.Second, "give up after this long")
	lvl := logLevelFlag(fs)
	pos, err := parseInterspersed(fs, args)
	if errors.Is(err, errHelp) {
		return nil
	}
	if err != nil {
		return err
	}
	if len(pos) == 0 {
		return usageErrorf("setup: name the domains that may link, e.g. 'idcfs setup 1 2'")
	}
	doms, err := parseDomIDs(pos)
	if err != nil {
		return err
	}
	log, err := newLogger(*lvl, stderr)
	if err != nil {
		return err
	}
	ctx, stop := shutdownContext(ctx)
	defer stop()
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	xs, err := xenstore.DialContext(ctx, *xsPath)
	if err != nil {
		return withCode(ExitXenstore, err)
	}
	defer xs.Close()
	if err := linkmgr.Setup(ctx, xs, doms); err != nil {
		return withCode(ExitXenstore, fmt.Errorf("setup of domains %v: %w", doms, err))
	}
	log.WithField("domains", fmt.Sprint(doms)).Info("domains may now link")
	fmt.Fprintf(stdout, "ok: domains %v may link\n", doms)
	return nil
}
