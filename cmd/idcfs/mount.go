package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"os"
	"path/filepath"
	"runtime/pprof"
	"strings"
	"syscall"
	"time"

	"github.com/sirupsen/logrus"

	"idcfs/fsnode"
	"idcfs/linkmgr"
	"idcfs/linkmgr/xenstore"
	"idcfs/vchan"
)

// defaultMountpoint is where a domain's daemon mounts without an argument.
const defaultMountpoint = "/idc"

// shutdownWait bounds how long a stopping daemon waits for the kernel to let
// go of the mount (a process holding an idle fd keeps a lazily unmounted
// filesystem alive). Exiting then closes /dev/fuse, which ends the mount.
const shutdownWait = 5 * time.Second

// readyTimeout bounds the wait for the fresh mount to answer.
const readyTimeout = 10 * time.Second

type mountConfig struct {
	mountpoint     string
	backend        string
	domid          int
	xenstorePath   string
	shmDir         string
	logLevel       string
	debugFuse      bool
	idleTimeout    time.Duration
	connectTimeout time.Duration
	ringSize       int
	window         int
	maxWindow      int
	cpuProfile     string
}

// The daemon's ring size and window: the largest ring libxenvchan allows,
// and a window as large, so that one connection can keep the ring full
// between two CREDITs. A FUSE read or write of a connection file moves up
// to 1 MiB; with smaller rings each read returns about one ring's worth.
const (
	defaultRingSize = vchan.MaxRingSize
	defaultWindow   = 1 << 20
)

func parseMountFlags(args []string, stderr io.Writer) (*mountConfig, error) {
	c := &mountConfig{}
	fs := newFlagSet("mount", "mount [flags] [MOUNTPOINT]   (default "+defaultMountpoint+")", stderr)
	fs.StringVar(&c.backend, "backend", defaultBackend(), "vchan backend: xen or shm (default xen where "+xenDevDir+" exists)")
	fs.IntVar(&c.domid, "domid", -1, "this domain's id (default: read 'domid' from Xenstore)")
	fs.StringVar(&c.xenstorePath, "xenstore", "", "Xenstore socket or device (default $XENSTORED_PATH, /var/run/xenstored/socket, /dev/xen/xenbus)")
	fs.StringVar(&c.shmDir, "shm-dir", "", "simulated host directory (--backend shm)")
	fs.BoolVar(&c.debugFuse, "debug-fuse", false, "log every FUSE request")
	fs.DurationVar(&c.idleTimeout, "idle-timeout", 0, "tear a link down after it carried no connection this long (0: the link manager's default)")
	fs.DurationVar(&c.connectTimeout, "connect-timeout", 0, "give up setting up a link after this long (0: the link manager's default)")
	fs.IntVar(&c.ringSize, "ring-size", defaultRingSize, "bytes of each ring of the links this domain serves (0: the link manager's default, 128 KiB)")
	fs.IntVar(&c.window, "window", defaultWindow, "receive buffer each connection starts with, in bytes (0: the link manager's default, 256 KiB)")
	fs.IntVar(&c.maxWindow, "max-window", 0, "the most a connection's receive buffer grows to while its reader keeps up, and so the most a connection whose reader stops can hold (0: the link manager's default, 4 MiB; never below --window)")
	fs.StringVar(&c.cpuProfile, "cpu-profile", "", "write a Go CPU profile of the daemon's whole run to this file")
	lvl := logLevelFlag(fs)
	pos, err := parseInterspersed(fs, args)
	if err != nil {
		return nil, err
	}
	c.logLevel = *lvl
	if c.debugFuse && !flagGiven(fs, "log-level") {
		// The FUSE trace is logged at debug level.
		c.logLevel = "debug"
	}
	switch len(pos) {
	case 0:
		c.mountpoint = defaultMountpoint
	case 1:
		c.mountpoint = pos[0]
	default:
		return nil, usageErrorf("mount: one mount point expected, got %q", pos)
	}
	switch c.backend {
	case backendXen, backendShm, "":
	default:
		return nil, usageErrorf("mount: unknown --backend %q (want %s or %s)", c.backend, backendXen, backendShm)
	}
	if c.domid > 0xFFFE {
		return nil, usageErrorf("mount: --domid %d out of range", c.domid)
	}
	if c.idleTimeout < 0 || c.connectTimeout < 0 {
		return nil, usageErrorf("mount: timeouts must not be negative")
	}
	if c.ringSize < 0 || c.ringSize > vchan.MaxRingSize || c.window < 0 || c.maxWindow < 0 {
		return nil, usageErrorf("mount: --ring-size must be 0..%d, --window and --max-window not negative", vchan.MaxRingSize)
	}
	return c, nil
}

// runMount is `idcfs mount`: the daemon of one domain, in the foreground
// until SIGINT or SIGTERM (or until the filesystem is unmounted from
// outside).
func runMount(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	c, err := parseMountFlags(args, stderr)
	if errors.Is(err, errHelp) {
		return nil
	}
	if err != nil {
		return err
	}
	rootLog, err := newLogger(c.logLevel, stderr)
	if err != nil {
		return err
	}
	// Libraries that write to the standard logger (go-fuse among them,
	// where nobody gave it a logger) end up in our log.
	stdw := rootLog.WriterLevel(logrus.WarnLevel)
	defer stdw.Close()
	log.SetFlags(0)
	log.SetOutput(stdw)
	defer log.SetOutput(os.Stderr)

	ctx, stop := shutdownContext(ctx)
	defer stop()

	if c.cpuProfile != "" {
		stopProfile, err := startCPUProfile(c.cpuProfile)
		if err != nil {
			return err
		}
		defer stopProfile()
	}
	if c.backend == "" {
		return withCode(ExitBackend, errNoXen)
	}
	xs, err := xenstore.DialContext(ctx, c.xenstorePath)
	if err != nil {
		return withCode(ExitXenstore, err)
	}
	defer xs.Close()

	self, err := ownDomID(ctx, xs, c.domid)
	if err != nil {
		return err
	}
	dlog := rootLog.WithField("domid", self)

	be, beCloser, err := openBackend(c.backend, c.shmDir, self)
	if err != nil {
		return err
	}
	defer beCloser.Close()

	if err := ensureMountpoint(c.mountpoint); err != nil {
		return withCode(ExitMount, err)
	}

	// The link manager outlives the signal context: on a signal, the
	// mount is shut down first, then the manager is closed.
	mgrCtx, cancelMgr := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelMgr()
	mgr, err := linkmgr.New(mgrCtx, linkmgr.Config{
		Self:           self,
		Backend:        be,
		Xenstore:       xs,
		Log:            dlog.WithField("backend", c.backend),
		IdleTimeout:    c.idleTimeout,
		ConnectTimeout: c.connectTimeout,
		RingSize:       c.ringSize,
		Window:         c.window,
		MaxWindow:      c.maxWindow,
	})
	if err != nil {
		return fmt.Errorf("link manager: %w", err)
	}
	mgrClosed := false
	defer func() {
		if !mgrClosed {
			mgr.Close()
		}
	}()

	m, err := fsnode.Mount(c.mountpoint, mgr, fsnode.Options{Log: dlog, Debug: c.debugFuse})
	if err != nil {
		if errors.Is(err, syscall.EPERM) && os.Geteuid() != 0 {
			err = fmt.Errorf("%w (idcfs mounts /dev/fuse directly, which needs root)", err)
		}
		return withCode(ExitMount, fmt.Errorf("mount %s: %w", c.mountpoint, err))
	}
	unmounted := make(chan struct{})
	go func() {
		m.Wait()
		close(unmounted)
	}()

	if err := waitAnswers(ctx, filepath.Join(c.mountpoint, "self"), unmounted); err != nil {
		m.Shutdown()
		if ctx.Err() != nil {
			dlog.Info("signal received before the mount was ready; stopped")
			return nil
		}
		return withCode(ExitMount, fmt.Errorf("mount %s does not answer: %w", c.mountpoint, err))
	}
	dlog.WithField("mountpoint", c.mountpoint).Info("ready")
	fmt.Fprintf(stdout, "ready domid=%d mountpoint=%s\n", self, c.mountpoint)

	select {
	case <-ctx.Done():
		dlog.Info("signal received, shutting down")
	case <-unmounted:
		dlog.Warn("filesystem unmounted from outside, shutting down")
	}
	// Shutdown ends blocked operations, closes connections and unmounts;
	// it then waits for the kernel to release the mount, which a process
	// holding an idle fd delays indefinitely. Exiting closes /dev/fuse,
	// which ends the detached mount, so the wait is bounded.
	var errs []error
	shut := make(chan error, 1)
	go func() { shut <- m.Shutdown() }()
	select {
	case err := <-shut:
		if err != nil {
			dlog.WithError(err).Warn("unmount failed")
			errs = append(errs, fmt.Errorf("unmount %s: %w", c.mountpoint, err))
		}
	case <-time.After(shutdownWait):
		dlog.Warn("the kernel still holds the detached mount (a process has an fd open); exiting anyway")
	}
	if err := mgr.Close(); err != nil {
		errs = append(errs, fmt.Errorf("closing links: %w", err))
	}
	mgrClosed = true
	dlog.Info("stopped")
	return errors.Join(errs...)
}

// ownDomID is --domid if given, else what Xenstore says ("domid", a path
// relative to this domain's home).
func ownDomID(ctx context.Context, xs *xenstore.Client, flagValue int) (vchan.DomID, error) {
	if flagValue >= 0 {
		return vchan.DomID(flagValue), nil
	}
	rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	v, err := xs.Read(rctx, "domid")
	if err != nil {
		return 0, withCode(ExitXenstore, fmt.Errorf("reading own domain id from Xenstore (give --domid): %w", err))
	}
	d, err := parseDomID(strings.TrimSpace(v))
	if err != nil {
		return 0, withCode(ExitXenstore, fmt.Errorf("Xenstore domid: %w", err))
	}
	return d, nil
}

// ensureMountpoint creates a missing mount point. A stale mount left by a
// crashed daemon is not touched here: fsnode.Mount clears it.
func ensureMountpoint(dir string) error {
	_, err := os.Stat(dir)
	if errors.Is(err, os.ErrNotExist) {
		return os.MkdirAll(dir, 0o755)
	}
	return nil
}

// waitAnswers polls path until stat succeeds: the filesystem serves requests.
func waitAnswers(ctx context.Context, path string, gone <-chan struct{}) error {
	deadline := time.Now().Add(readyTimeout)
	var err error
	for {
		if _, err = os.Stat(path); err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return err
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-gone:
			return errors.New("filesystem went away")
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// startCPUProfile profiles the process into path until the returned
// function is called.
func startCPUProfile(path string) (func(), error) {
	f, err := os.Create(path)
	if err != nil {
		return nil, fmt.Errorf("--cpu-profile: %w", err)
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		return nil, fmt.Errorf("--cpu-profile: %w", err)
	}
	return func() {
		pprof.StopCPUProfile()
		f.Close()
	}, nil
}
