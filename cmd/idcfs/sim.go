package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/sirupsen/logrus"
	"golang.org/x/sys/unix"

	"idcfs/linkmgr"
	"idcfs/linkmgr/xenstore"
	"idcfs/linkmgr/xenstored"
	"idcfs/vchan"
)

// stopGrace is how long `idcfs sim` lets its domains stop after SIGTERM
// before it kills them.
const stopGrace = 5 * time.Second

// maxUnixPath is the longest socket path sockaddr_un holds (with its NUL).
const maxUnixPath = 107

type simConfig struct {
	dir          string
	doms         []vchan.DomID
	logLevel     string
	debugFuse    bool
	idleTimeout  time.Duration
	readyTimeout time.Duration
	ringSize     int
	window       int
	maxWindow    int
	cpuProfile   bool
	// logLevelGiven: --log-level was on the command line; the domains
	// get it too (otherwise their own default applies).
	logLevelGiven bool
}

func parseSimFlags(args []string, stderr io.Writer) (*simConfig, error) {
	c := &simConfig{}
	fs := newFlagSet("sim", "sim --dir DIR [flags] DOMID...", stderr)
	fs.StringVar(&c.dir, "dir", "", "directory of the simulated host (required): Xenstore sockets, mounts dom<N>, logs; its shared memory too if DIR is on tmpfs, else under /dev/shm")
	fs.BoolVar(&c.debugFuse, "debug-fuse", false, "domains log every FUSE request")
	fs.DurationVar(&c.idleTimeout, "idle-timeout", 0, "passed to each domain's 'idcfs mount'")
	fs.IntVar(&c.ringSize, "ring-size", 0, "passed to each domain's 'idcfs mount'")
	fs.IntVar(&c.window, "window", 0, "passed to each domain's 'idcfs mount'")
	fs.IntVar(&c.maxWindow, "max-window", 0, "passed to each domain's 'idcfs mount'")
	fs.BoolVar(&c.cpuProfile, "cpu-profile", false, "each domain writes a Go CPU profile to DIR/dom<N>.cpu.pprof (kept, like the logs)")
	fs.DurationVar(&c.readyTimeout, "ready-timeout", 30*time.Second, "give up if a domain's mount does not answer within this time")
	lvl := logLevelFlag(fs)
	pos, err := parseInterspersed(fs, args)
	if err != nil {
		return nil, err
	}
	c.logLevel = *lvl
	c.logLevelGiven = flagGiven(fs, "log-level")
	if c.dir == "" {
		return nil, usageErrorf("sim: --dir DIR is required")
	}
	if len(pos) == 0 {
		return nil, usageErrorf("sim: name at least one domain id, e.g. 'idcfs sim --dir %s 1 2'", c.dir)
	}
	c.doms, err = parseDomIDs(pos)
	if err != nil {
		return nil, err
	}
	for _, d := range c.doms {
		if d == 0 {
			return nil, usageErrorf("sim: domain 0 is the simulated host itself; name guest domains (1, 2, ...)")
		}
	}
	return c, nil
}

// simDomain is one simulated domain: an `idcfs mount` child process.
type simDomain struct {
	id      vchan.DomID
	mnt     string // DIR/dom<N>
	pidFile string
	logPath string
	xsSock  string

	cmd     *exec.Cmd
	exited  chan struct{} // closed once cmd.Wait returned
	waitErr error         // valid after exited is closed
	gone    bool          // its death was handled (ReleaseDomain, mount detached)
}

func (d *simDomain) alive() bool {
	select {
	case <-d.exited:
		return false
	default:
		return true
	}
}

// simHost is the state of a running `idcfs sim`.
type simHost struct {
	cfg    *simConfig
	log    *logrus.Entry
	exe    string
	xsDir  string
	shmDir string
	lock   *os.File

	store *xenstored.Server
	xs0   *xenstore.Client
	doms  []*simDomain
	dead  chan *simDomain
}

// runSim is `idcfs sim`: a simulated Xen host in one directory.
func runSim(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	cfg, err := parseSimFlags(args, stderr)
	if errors.Is(err, errHelp) {
		return nil
	}
	if err != nil {
		return err
	}
	log, err := newLogger(cfg.logLevel, stderr)
	if err != nil {
		return err
	}
	log = log.WithField("component", "sim")
	ctx, stop := shutdownContext(ctx)
	defer stop()

	if os.Geteuid() != 0 {
		return withCode(ExitMount, errors.New("idcfs sim mounts a FUSE filesystem per domain directly on /dev/fuse, which needs root: run it as root"))
	}
	h := &simHost{cfg: cfg, log: log}
	if err := h.prepare(); err != nil {
		return err
	}
	defer h.cleanup()

	if err := h.startStore(ctx); err != nil {
		if ctx.Err() != nil {
			return nil // stopped during start-up
		}
		return err
	}
	for _, id := range cfg.doms {
		if err := h.startDomain(id); err != nil {
			return err
		}
	}
	if err := h.waitReady(ctx); err != nil {
		return err
	}
	if ctx.Err() != nil {
		return nil // stopped before every domain was up
	}
	h.printReady(stdout)
	return h.serve(ctx)
}

// prepare creates DIR, takes its lock and clears what a killed earlier
// simulation left there.
func (h *simHost) prepare() error {
	dir, err := filepath.Abs(h.cfg.dir)
	if err != nil {
		return err
	}
	h.cfg.dir = dir
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	lock, err := os.OpenFile(filepath.Join(dir, "sim.lock"), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return err
	}
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		lock.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return fmt.Errorf("another 'idcfs sim' runs in %s", dir)
		}
		return fmt.Errorf("locking %s: %w", dir, err)
	}
	h.lock = lock
	exe, err := os.Executable()
	if err != nil {
		return fmt.Errorf("finding the idcfs binary to start the domains: %w", err)
	}
	h.exe = exe
	h.xsDir = filepath.Join(dir, "xs")
	h.shmDir = simShmDir(dir)
	// We hold the lock, so whatever is here is stale. Unix sockets and
	// shared pages of a dead simulation would only confuse the new one.
	for _, p := range []string{h.xsDir, h.shmDir} {
		if err := os.RemoveAll(p); err != nil {
			return err
		}
	}
	if err := os.MkdirAll(h.xsDir, 0o700); err != nil {
		return err
	}
	longest := filepath.Join(h.shmDir, "evtchn", "65535", "4294967295")
	if len(longest) > maxUnixPath {
		return usageErrorf("sim: --dir %s is too long for the Unix socket paths under it (keep it under about 70 characters)", dir)
	}
	h.dead = make(chan *simDomain, len(h.cfg.doms))
	return nil
}

// simShmDir is where the simulated host keeps its grant pages and event
// channel sockets: DIR/shm when DIR is on tmpfs, else a directory on
// /dev/shm named after DIR (so a later run in DIR finds and clears what a
// killed one left), else DIR/shm. Grant pages are files: on a disk file
// system the kernel would write every dirty ring page back to the disk.
func simShmDir(dir string) string {
	if onTmpfs(dir) || !onTmpfs("/dev/shm") {
		return filepath.Join(dir, "shm")
	}
	sum := sha256.Sum256([]byte(dir))
	return filepath.Join("/dev/shm", "idcfs-sim-"+hex.EncodeToString(sum[:6]))
}

func onTmpfs(path string) bool {
	var st unix.Statfs_t
	return unix.Statfs(path, &st) == nil && st.Type == unix.TMPFS_MAGIC
}

// startStore runs the embedded Xenstore: a privileged socket for dom0 (this
// process) and one socket per simulated domain; then grants the domains the
// permissions they need to link.
func (h *simHost) startStore(ctx context.Context) error {
	h.store = xenstored.New(h.log.WithField("component", "xenstored"))
	dom0 := filepath.Join(h.xsDir, "dom0.sock")
	if err := h.store.Listen(dom0, 0); err != nil {
		return fmt.Errorf("xenstored: %w", err)
	}
	for _, id := range h.cfg.doms {
		sock := filepath.Join(h.xsDir, fmt.Sprintf("dom%d.sock", id))
		if err := h.store.Listen(sock, uint32(id)); err != nil {
			return fmt.Errorf("xenstored: domain %d: %w", id, err)
		}
		if err := h.store.IntroduceDomain(uint32(id)); err != nil {
			return fmt.Errorf("xenstored: %w", err)
		}
	}
	xs0, err := xenstore.DialContext(ctx, dom0)
	if err != nil {
		return withCode(ExitXenstore, err)
	}
	h.xs0 = xs0
	sctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := linkmgr.Setup(sctx, xs0, h.cfg.doms); err != nil {
		return fmt.Errorf("setting up Xenstore for domains %v: %w", h.cfg.doms, err)
	}
	return nil
}

// startDomain starts `idcfs mount` for domain id, mounted at DIR/dom<id>.
func (h *simHost) startDomain(id vchan.DomID) error {
	name := fmt.Sprintf("dom%d", id)
	d := &simDomain{
		id:      id,
		mnt:     filepath.Join(h.cfg.dir, name),
		pidFile: filepath.Join(h.cfg.dir, name+".pid"),
		logPath: filepath.Join(h.cfg.dir, name+".log"),
		xsSock:  filepath.Join(h.xsDir, name+".sock"),
		exited:  make(chan struct{}),
	}
	if err := prepareMountpoint(d.mnt); err != nil {
		return err
	}
	logf, err := os.OpenFile(d.logPath, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return err
	}
	defer logf.Close() // the child has its own copy
	args := []string{"mount",
		"--backend", backendShm,
		"--shm-dir", h.shmDir,
		"--domid", strconv.Itoa(int(id)),
		"--xenstore", d.xsSock,
	}
	if h.cfg.logLevelGiven {
		args = append(args, "--log-level", h.cfg.logLevel)
	}
	if h.cfg.debugFuse {
		args = append(args, "--debug-fuse")
	}
	if h.cfg.idleTimeout > 0 {
		args = append(args, "--idle-timeout", h.cfg.idleTimeout.String())
	}
	if h.cfg.ringSize > 0 {
		args = append(args, "--ring-size", strconv.Itoa(h.cfg.ringSize))
	}
	if h.cfg.window > 0 {
		args = append(args, "--window", strconv.Itoa(h.cfg.window))
	}
	if h.cfg.maxWindow > 0 {
		args = append(args, "--max-window", strconv.Itoa(h.cfg.maxWindow))
	}
	if h.cfg.cpuProfile {
		args = append(args, "--cpu-profile", filepath.Join(h.cfg.dir, name+".cpu.pprof"))
	}
	args = append(args, d.mnt)
	d.cmd = exec.Command(h.exe, args...)
	d.cmd.Stdout = logf
	d.cmd.Stderr = logf
	d.cmd.Dir = "/"
	d.cmd.SysProcAttr = &syscall.SysProcAttr{
		// Ctrl-C in the terminal reaches only the sim, which stops the
		// domains in order; if the sim itself dies, they are told to stop.
		Setpgid:   true,
		Pdeathsig: syscall.SIGTERM,
	}
	if err := d.cmd.Start(); err != nil {
		return fmt.Errorf("starting domain %d: %w", id, err)
	}
	h.doms = append(h.doms, d)
	if err := os.WriteFile(d.pidFile, []byte(strconv.Itoa(d.cmd.Process.Pid)+"\n"), 0o644); err != nil {
		h.log.WithError(err).WithField("domid", id).Warn("writing pid file failed")
	}
	h.log.WithFields(logrus.Fields{"domid": id, "pid": d.cmd.Process.Pid, "mountpoint": d.mnt}).Info("domain started")
	go func() {
		d.waitErr = d.cmd.Wait()
		close(d.exited)
		h.dead <- d
	}()
	return nil
}

// prepareMountpoint creates dir, detaching a stale mount a killed daemon
// left on it (stat fails with ENOTCONN there).
func prepareMountpoint(dir string) error {
	if _, err := os.Stat(dir); errors.Is(err, syscall.ENOTCONN) {
		if err := syscall.Unmount(dir, syscall.MNT_DETACH); err != nil {
			return fmt.Errorf("detaching stale mount %s: %w", dir, err)
		}
	}
	return os.MkdirAll(dir, 0o755)
}

// waitReady returns once every domain's mount answers (DIR/dom<N>/self).
func (h *simHost) waitReady(ctx context.Context) error {
	type result struct {
		d   *simDomain
		err error
	}
	results := make(chan result, len(h.doms))
	deadline := time.Now().Add(h.cfg.readyTimeout)
	for _, d := range h.doms {
		go func() {
			self := filepath.Join(d.mnt, "self")
			for {
				if _, err := os.Stat(self); err == nil {
					results <- result{d, nil}
					return
				}
				select {
				case <-d.exited:
					results <- result{d, fmt.Errorf("domain %d: 'idcfs mount' exited (%v) before its mount answered; see %s", d.id, d.waitErr, d.logPath)}
					return
				case <-time.After(20 * time.Millisecond):
				}
				if time.Now().After(deadline) {
					results <- result{d, fmt.Errorf("domain %d: mount %s did not answer within %v; see %s", d.id, d.mnt, h.cfg.readyTimeout, d.logPath)}
					return
				}
			}
		}()
	}
	timer := time.NewTimer(h.cfg.readyTimeout + time.Second)
	defer timer.Stop()
	for range h.doms {
		select {
		case r := <-results:
			if r.err != nil {
				return r.err
			}
		case <-ctx.Done():
			return nil // stopped before ready: not an error
		case <-timer.C:
			return fmt.Errorf("the domains' mounts did not answer within %v (a stat hangs)", h.cfg.readyTimeout)
		}
	}
	return nil
}

func (h *simHost) printReady(w io.Writer) {
	var ids []string
	for _, d := range h.doms {
		ids = append(ids, strconv.Itoa(int(d.id)))
	}
	a, b := h.doms[0], h.doms[0]
	if len(h.doms) > 1 {
		b = h.doms[1]
	}
	dir := h.cfg.dir
	fmt.Fprintf(w, "ready: simulated Xen host in %s, domains %s mounted at %s/dom<N>\n",
		dir, strings.Join(ids, " "), dir)
	fmt.Fprintf(w, `
Try, from another shell:
  cat %[1]s/self
  # domain %[3]d accepts a connection on port 80; domain %[4]d connects and sends a line
  cat %[1]s/listen/80 &
  echo hello > %[2]s/connect/%[3]d/80
  # connections and links as domain %[3]d sees them; unbind port 80
  ls %[1]s/conn %[1]s/links; cat %[1]s/links/%[4]d
  rm %[1]s/listen/80
  # simulate domain %[4]d crashing
  kill -9 $(cat %[5]s/dom%[4]d.pid)
Logs: %[5]s/dom<N>.log. Ctrl-C stops the host and removes its state.
`, a.mnt, b.mnt, a.id, b.id, dir)
}

// serve runs until a signal, handling the death of a domain's daemon: the
// others keep running, Xenstore fires @releaseDomain for the dead one, and
// its stale mount is detached.
func (h *simHost) serve(ctx context.Context) error {
	for {
		select {
		case <-ctx.Done():
			h.log.Info("signal received, stopping the domains")
			return nil
		case d := <-h.dead:
			h.domainDied(d)
			if h.aliveCount() == 0 {
				return errors.New("every simulated domain's daemon has exited")
			}
		}
	}
}

func (h *simHost) aliveCount() int {
	n := 0
	for _, d := range h.doms {
		if !d.gone {
			n++
		}
	}
	return n
}

func (h *simHost) domainDied(d *simDomain) {
	if d.gone {
		return
	}
	d.gone = true
	l := h.log.WithField("domid", d.id)
	if d.waitErr != nil {
		l = l.WithError(d.waitErr)
	}
	l.Warn("domain's daemon exited; releasing the domain")
	if err := h.store.ReleaseDomain(uint32(d.id)); err != nil {
		h.log.WithField("domid", d.id).WithError(err).Warn("releasing domain failed")
	}
	detach(h.log, d.mnt)
	os.Remove(d.pidFile)
}

// detach lazily unmounts dir if something is mounted there.
func detach(log *logrus.Entry, dir string) {
	err := syscall.Unmount(dir, syscall.MNT_DETACH)
	switch {
	case err == nil:
		log.WithField("mountpoint", dir).Info("detached mount")
	case errors.Is(err, syscall.EINVAL), errors.Is(err, syscall.ENOENT):
		// not a mount point (any more)
	default:
		log.WithField("mountpoint", dir).WithError(err).Warn("detaching mount failed")
	}
}

// cleanup stops every domain still running (SIGTERM, then SIGKILL after
// stopGrace), detaches what is left mounted and removes the host's state.
// Logs are kept.
func (h *simHost) cleanup() {
	for _, d := range h.doms {
		if d.alive() {
			if err := d.cmd.Process.Signal(syscall.SIGTERM); err != nil && !errors.Is(err, os.ErrProcessDone) {
				h.log.WithField("domid", d.id).WithError(err).Warn("SIGTERM failed")
			}
		}
	}
	grace := time.After(stopGrace)
	for _, d := range h.doms {
		select {
		case <-d.exited:
		case <-grace:
		}
	}
	for _, d := range h.doms {
		if d.alive() {
			h.log.WithField("domid", d.id).Warn("domain did not stop in time; killing it")
			d.cmd.Process.Kill()
			<-d.exited
		}
	}
	for _, d := range h.doms {
		if d.waitErr != nil && !d.gone {
			h.log.WithField("domid", d.id).WithError(d.waitErr).Warn("domain's daemon did not stop cleanly")
		}
		detach(h.log, d.mnt)
		if err := os.Remove(d.mnt); err != nil && !errors.Is(err, os.ErrNotExist) {
			h.log.WithField("mountpoint", d.mnt).WithError(err).Warn("removing mount point failed")
		}
		os.Remove(d.pidFile)
	}
	if h.xs0 != nil {
		h.xs0.Close()
	}
	if h.store != nil {
		h.store.Close()
	}
	for _, p := range []string{h.xsDir, h.shmDir} {
		if err := os.RemoveAll(p); err != nil {
			h.log.WithError(err).Warn("removing simulated host state failed")
		}
	}
	if h.lock != nil {
		os.Remove(h.lock.Name())
		h.lock.Close()
	}
	h.log.WithField("dir", h.cfg.dir).Info("simulated host stopped; logs kept")
}
