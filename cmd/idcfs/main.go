// Command idcfs presents connections between Xen domains as files.
//
// One idcfs daemon runs in each domain (`idcfs mount`) and mounts a FUSE
// filesystem, /idc by default, in which listen/<port>, connect/<domid>/<port>
// and conn/<id>/ are connections. On a machine without Xen, `idcfs sim`
// brings up a simulated host: an embedded Xenstore, the shared-memory vchan
// backend and one `idcfs mount` process per simulated domain.
//
// This package is the only one that reads flags, the environment or signals,
// or ends the process; the exit codes are the Exit* constants. Run
// `idcfs help` for the subcommands.
package main

import (
	"context"
	"fmt"
	"io"
	"os"
)

func main() {
	err := run(context.Background(), os.Args[1:], os.Stdout, os.Stderr)
	if err != nil {
		fmt.Fprintln(os.Stderr, "idcfs:", err)
	}
	os.Exit(exitCode(err))
}

const usageText = `usage: idcfs COMMAND [flags] [args]

commands:
  mount [flags] [MOUNTPOINT]     run this domain's daemon in the foreground (default mount point /idc)
  sim --dir DIR DOMID...         simulate a Xen host: embedded Xenstore, shm backend and one
                                 'idcfs mount' process per domain, mounted at DIR/dom<N>
  setup [--xenstore PATH] DOMID...
                                 (dom0) grant the Xenstore permissions that let these domains link
  xenstored --socket PATH [--domain N=PATH ...]
                                 run the embedded Xenstore alone
  vchan listen|connect ...       raw vchan tool (where this build has it)
  version                        print the version
  help                           print this text

Run 'idcfs COMMAND -h' for a command's flags.

exit codes:
  0  success, or stopped by SIGINT/SIGTERM
  1  failure
  2  bad command line
  3  vchan backend unavailable (no /dev/xen: use 'idcfs sim' on a machine without Xen)
  4  FUSE mount failed
  5  Xenstore unreachable, or own domain id unreadable
`

// run executes one command line and returns the error main maps to an exit
// code. stdout carries the machine-readable lines (ready, version); logs go
// to stderr.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, usageText)
		return usageErrorf("no command given")
	}
	cmd, rest := args[0], args[1:]
	switch cmd {
	case "mount":
		return runMount(ctx, rest, stdout, stderr)
	case "sim":
		return runSim(ctx, rest, stdout, stderr)
	case "setup":
		return runSetup(ctx, rest, stdout, stderr)
	case "xenstored":
		return runXenstored(ctx, rest, stdout, stderr)
	case "vchan":
		return runVchanCommand(ctx, rest, stderr)
	case "version", "--version", "-version":
		fmt.Fprintln(stdout, versionString())
		return nil
	case "help", "-h", "--help", "-help":
		fmt.Fprint(stdout, usageText)
		return nil
	}
	fmt.Fprint(stderr, usageText)
	return usageErrorf("unknown command %q", cmd)
}
