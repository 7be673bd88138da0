package main

import (
	"context"
	"errors"
	"io"
)

// runVchanCommand dispatches `idcfs vchan` (vchan_cmd.go) with a root log
// entry on stderr; the command's own --log-level adjusts its level.
func runVchanCommand(ctx context.Context, args []string, stderr io.Writer) error {
	log, err := newLogger("info", stderr)
	if err != nil {
		return err
	}
	err = runVchan(ctx, args, log)
	if errors.Is(err, errHelp) {
		return nil
	}
	return err
}
