package fsnode

import (
	"errors"
	"fmt"
	"io"
	"log"
	"runtime/debug"
	"sync"
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"github.com/sirupsen/logrus"

	"idcfs/linkmgr"
)

// Options configures Mount. The zero value is usable.
type Options struct {
	// Log receives everything the filesystem logs, with the fields ino,
	// op, port, conn and peer. Nil discards.
	Log *logrus.Entry
	// Debug turns on go-fuse's tracing of every request, logged at
	// Debug level.
	Debug bool
	// Backlog is the listen backlog of ports bound through listen/.
	// 0 leaves it to the link manager's default.
	Backlog int
	// PruneInterval is how often vanished connections, links and ports
	// are looked for and removed from the kernel's caches. Changes made
	// through the filesystem trigger a look at once. 0 means 1 s.
	PruneInterval time.Duration
}

// Timeouts given to the kernel. Names are cached for a second (the daemon
// tells the kernel when a name it cached goes away); attributes are not
// cached, because a port's owner and mode change when it is bound.
const (
	entryTimeout = time.Second
	attrTimeout  = 0
)

// Mounted is a mounted idcfs filesystem.
type Mounted struct {
	mountpoint string
	server     *fuse.Server
	fsys       *filesystem
	log        *logrus.Entry
	logPipes   []*io.PipeWriter

	pruneStop chan struct{}
	pruneDone chan struct{}

	shutdownOnce sync.Once
	shutdownErr  error
}

// Mount mounts the filesystem for m at mountpoint and serves it until
// Shutdown, or until it is unmounted from outside (see Wait). A stale
// mount left by a crashed daemon is detached first. The mount is open to
// every local user (allow_other) and the kernel enforces the modes the
// filesystem reports (default_permissions). Mount returns once the
// filesystem answers requests.
func Mount(mountpoint string, m *linkmgr.Manager, opts Options) (*Mounted, error) {
	if m == nil {
		return nil, errors.New("fsnode: nil link manager")
	}
	lg := opts.Log
	if lg == nil {
		discard := logrus.New()
		discard.SetOutput(io.Discard)
		lg = logrus.NewEntry(discard)
	}
	if err := clearStale(mountpoint, lg); err != nil {
		return nil, err
	}

	mt := &Mounted{
		mountpoint: mountpoint,
		log:        lg,
		pruneStop:  make(chan struct{}),
		pruneDone:  make(chan struct{}),
	}
	// go-fuse reports through *log.Logger; route it to logrus. Tracing
	// (Debug) goes out at Debug level, diagnostics at Warn.
	warnPipe := lg.WriterLevel(logrus.WarnLevel)
	mt.logPipes = append(mt.logPipes, warnPipe)
	warnLog := log.New(warnPipe, "", 0)
	mountLog := warnLog
	if opts.Debug {
		debugPipe := lg.WriterLevel(logrus.DebugLevel)
		mt.logPipes = append(mt.logPipes, debugPipe)
		mountLog = log.New(debugPipe, "", 0)
	}

	f := newFilesystem(m, lg, opts.Backlog)
	mt.fsys = f
	et, at := entryTimeout, time.Duration(attrTimeout)
	fsOpts := &fs.Options{
		MountOptions: fuse.MountOptions{
			AllowOther:        true,
			Options:           []string{"default_permissions"},
			FsName:            "idcfs",
			Name:              "idcfs",
			MaxWrite:          1 << 20,
			DirectMount:       true,
			DirectMountStrict: true,
			// Replies to reads are bytes already copied out of the ring.
			// With splice on, go-fuse tries to send every full 1 MiB reply
			// through a pipe, which fails here and logs a warning each time
			// (measured: ~600 lines per GiB read, and no faster).
			DisableSplice: true,
			Debug:         opts.Debug,
			Logger:        mountLog,
			PanicHandler: func(v any) fuse.Status {
				lg.WithField("panic", fmt.Sprint(v)).WithField("stack", string(debug.Stack())).Error("panic in FUSE handler")
				return fuse.EIO
			},
		},
		EntryTimeout:   &et,
		AttrTimeout:    &at,
		Logger:         warnLog,
		RootStableAttr: &fs.StableAttr{Ino: inoRoot},
	}
	server, err := fs.Mount(mountpoint, f.root, fsOpts)
	if err != nil {
		f.shutdown()
		mt.closeLogs()
		return nil, fmt.Errorf("fsnode: mount %s: %w", mountpoint, err)
	}
	mt.server = server
	// fs.Mount waited for the kernel's INIT; make sure the mountpoint now
	// shows our root before saying the filesystem is ready.
	var st syscall.Stat_t
	if err := syscall.Stat(mountpoint, &st); err != nil || st.Ino != inoRoot {
		f.shutdown()
		if uerr := server.Unmount(); uerr != nil {
			_ = syscall.Unmount(mountpoint, syscall.MNT_DETACH)
		}
		mt.closeLogs()
		if err == nil {
			err = fmt.Errorf("root inode %d, want %d", st.Ino, inoRoot)
		}
		return nil, fmt.Errorf("fsnode: mount %s does not answer: %w", mountpoint, err)
	}

	interval := opts.PruneInterval
	if interval <= 0 {
		interval = time.Second
	}
	go f.pruneLoop(interval, mt.pruneStop, mt.pruneDone)

	lg.WithField("mountpoint", mountpoint).Info("mounted")
	return mt, nil
}

// clearStale detaches a mount whose daemon died: such a mountpoint answers
// stat with ENOTCONN, and mounting over it fails until it is unmounted.
func clearStale(mountpoint string, lg *logrus.Entry) error {
	var st syscall.Stat_t
	err := syscall.Stat(mountpoint, &st)
	if !errors.Is(err, syscall.ENOTCONN) {
		return nil
	}
	lg.WithField("mountpoint", mountpoint).Warn("detaching stale mount")
	if err := syscall.Unmount(mountpoint, syscall.MNT_DETACH); err != nil {
		return fmt.Errorf("fsnode: detach stale mount %s: %w", mountpoint, err)
	}
	return nil
}

// Shutdown ends every blocked operation (accepts and connects fail with
// ECONNABORTED, reads see EOF, writes fail with EPIPE), closes every port
// and connection opened through the filesystem, unmounts it (lazily if it
// is busy) and waits for the server to stop. The server stops when the
// kernel lets go of the mount: with a lazy unmount, once the last file
// open on it is closed; a caller that must not wait for other processes
// bounds Shutdown with a timer of its own. It may be called more than once
// and after an unmount from outside; later calls return the first result.
func (mt *Mounted) Shutdown() error {
	mt.shutdownOnce.Do(func() {
		mt.fsys.shutdown()
		close(mt.pruneStop)
		<-mt.pruneDone

		err := mt.server.Unmount()
		if err != nil {
			mt.log.WithError(err).Debug("unmount failed; detaching")
			derr := syscall.Unmount(mt.mountpoint, syscall.MNT_DETACH)
			if derr != nil && !errors.Is(derr, syscall.EINVAL) {
				mt.shutdownErr = fmt.Errorf("fsnode: unmount %s: %w (detach: %v)", mt.mountpoint, err, derr)
			}
		}
		mt.server.Wait()
		mt.closeLogs()
		mt.log.WithField("mountpoint", mt.mountpoint).Info("unmounted")
	})
	return mt.shutdownErr
}

// Wait returns when the filesystem has been unmounted, by Shutdown or from
// outside.
func (mt *Mounted) Wait() {
	mt.server.Wait()
}

func (mt *Mounted) closeLogs() {
	for _, p := range mt.logPipes {
		_ = p.Close()
	}
	mt.logPipes = nil
}

// shutdown wakes everything that waits: blocked opens through life,
// accepts by closing the listeners, reads and writes by closing the
// connections. New opens fail with ECONNABORTED.
func (f *filesystem) shutdown() {
	f.mu.Lock()
	if f.closing {
		f.mu.Unlock()
		return
	}
	f.closing = true
	ports := make([]*port, 0, len(f.ports))
	for num, p := range f.ports {
		ports = append(ports, p)
		delete(f.ports, num)
	}
	entries := make([]*connEntry, 0, len(f.conns))
	for _, e := range f.conns {
		entries = append(entries, e)
	}
	f.mu.Unlock()

	f.stopLife()
	for _, p := range ports {
		_ = p.l.Close()
	}
	for _, e := range entries {
		_ = e.c.Close()
	}
}
