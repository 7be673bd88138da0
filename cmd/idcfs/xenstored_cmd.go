package main

import (
	"context"
	"errors"
	"fmt"
	"io"

	"idcfs/linkmgr/xenstored"
)

// runXenstored is `idcfs xenstored`: the embedded Xenstore on its own, with
// a privileged socket for dom0 and one socket per domain, until SIGINT or
// SIGTERM.
func runXenstored(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("xenstored", "xenstored --socket PATH [--domain N=PATH ...]", stderr)
	sock := fs.String("socket", "", "the privileged (dom0) socket to create (required)")
	var doms domainSockets
	fs.Var(&doms, "domain", "N=PATH: a socket speaking for domain N, which is introduced (repeatable)")
	lvl := logLevelFlag(fs)
	pos, err := parseInterspersed(fs, args)
	if errors.Is(err, errHelp) {
		return nil
	}
	if err != nil {
		return err
	}
	if len(pos) > 0 {
		return usageErrorf("xenstored: unexpected arguments %q", pos)
	}
	if *sock == "" {
		return usageErrorf("xenstored: --socket PATH is required")
	}
	log, err := newLogger(*lvl, stderr)
	if err != nil {
		return err
	}
	ctx, stop := shutdownContext(ctx)
	defer stop()

	s := xenstored.New(log.WithField("component", "xenstored"))
	defer s.Close()
	if err := s.Listen(*sock, 0); err != nil {
		return fmt.Errorf("xenstored: %w", err)
	}
	for _, d := range doms {
		if err := s.Listen(d.path, uint32(d.dom)); err != nil {
			return fmt.Errorf("xenstored: domain %d: %w", d.dom, err)
		}
		if d.dom != 0 {
			if err := s.IntroduceDomain(uint32(d.dom)); err != nil {
				return fmt.Errorf("xenstored: %w", err)
			}
		}
	}
	fmt.Fprintf(stdout, "ready socket=%s\n", *sock)
	<-ctx.Done()
	log.Info("signal received, stopping")
	return nil
}
