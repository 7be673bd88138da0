package main

import (
	"context"
	"errors"
	"io"
)

// runVchanCommand dispatches `idcfs vchan`.
func runVchanCommand(ctx context.Context, args []string, stderr io.Writer) error {
	return withCode(ExitBackend, errors.New("this build of idcfs has no 'vchan' command yet"))
}
