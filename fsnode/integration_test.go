package fsnode

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"idcfs/linkmgr"
)

// Tests on real mounts. Mount I/O runs in goroutines through raw
// syscalls (os.File would put FUSE fds on the netpoller), every fd is
// O_CLOEXEC so that child processes never inherit one, and child
// processes only touch the mount by path.

const ioTimeout = 10 * time.Second

func needFUSE(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root and /dev/fuse (run the TestIntegration tests as root)")
	}
	if _, err := os.Stat("/dev/fuse"); err != nil {
		t.Skipf("needs root and /dev/fuse: %v", err)
	}
}

// mountAt mounts m on a fresh directory that every user can reach and
// unmounts it when the test ends.
func mountAt(t *testing.T, m *linkmgr.Manager) string {
	t.Helper()
	_, dir := mountFS(t, m)
	return dir
}

// mountFS is mountAt that also returns the mount.
func mountFS(t *testing.T, m *linkmgr.Manager) (*Mounted, string) {
	t.Helper()
	dir := t.TempDir()
	// t.TempDir's parents are 0700; other users must reach the mount.
	for d := dir; d != os.TempDir() && d != "/"; d = filepath.Dir(d) {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	mt, err := Mount(dir, m, Options{Log: testLog(t), Debug: os.Getenv("IDCFS_FUSE_DEBUG") != "", PruneInterval: 100 * time.Millisecond})
	if err != nil {
		t.Fatalf("Mount: %v", err)
	}
	t.Cleanup(func() {
		if err := mt.Shutdown(); err != nil {
			t.Errorf("Shutdown: %v", err)
		}
	})
	return mt, dir
}

func retryEINTR[T any](f func() (T, error)) (T, error) {
	for {
		v, err := f()
		if !errors.Is(err, syscall.EINTR) {
			return v, err
		}
	}
}

func sysOpen(path string, flags int) (int, error) {
	return retryEINTR(func() (int, error) { return syscall.Open(path, flags|syscall.O_CLOEXEC, 0o644) })
}

func sysRead(fd int, p []byte) (int, error) {
	return retryEINTR(func() (int, error) { return syscall.Read(fd, p) })
}

func sysWriteAll(fd int, p []byte) error {
	for len(p) > 0 {
		n, err := retryEINTR(func() (int, error) { return syscall.Write(fd, p) })
		if err != nil {
			return err
		}
		p = p[n:]
	}
	return nil
}

func sysReadAll(fd int) ([]byte, error) {
	var out []byte
	buf := make([]byte, 64<<10)
	for {
		n, err := sysRead(fd, buf)
		if err != nil {
			return out, err
		}
		if n == 0 {
			return out, nil
		}
		out = append(out, buf[:n]...)
	}
}

type result[T any] struct {
	v   T
	err error
}

// goDo runs f in a goroutine; wait collects its result or fails the test
// after ioTimeout.
func goDo[T any](f func() (T, error)) chan result[T] {
	ch := make(chan result[T], 1)
	go func() {
		v, err := f()
		ch <- result[T]{v, err}
	}()
	return ch
}

func wait[T any](t *testing.T, ch chan result[T], what string) (T, error) {
	t.Helper()
	select {
	case r := <-ch:
		return r.v, r.err
	case <-time.After(ioTimeout):
		t.Fatalf("%s: no result after %v", what, ioTimeout)
		var zero T
		return zero, nil
	}
}

func mustOpen(t *testing.T, path string, flags int) int {
	t.Helper()
	fd, err := sysOpen(path, flags)
	if err != nil {
		t.Fatalf("open %s: %v", path, err)
	}
	return fd
}

func closeFD(t *testing.T, fd int) {
	t.Helper()
	if err := syscall.Close(fd); err != nil {
		t.Errorf("close: %v", err)
	}
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(ioTimeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func ls(t *testing.T, dir string) []string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatalf("ls %s: %v", dir, err)
	}
	names := make([]string, len(ents))
	for i, e := range ents {
		names[i] = e.Name()
	}
	return names
}

func listed(t *testing.T, dir, name string) bool {
	return slices.Contains(ls(t, dir), name)
}

// acceptBG starts an accept on listen/<port> and waits until the port is
// bound, so that a connect right after cannot be refused.
func acceptBG(t *testing.T, mnt string, port int, flags int) chan result[int] {
	t.Helper()
	p := strconv.Itoa(port)
	ch := goDo(func() (int, error) { return sysOpen(filepath.Join(mnt, "listen", p), flags) })
	waitFor(t, "listen/"+p+" to be bound", func() bool { return listed(t, filepath.Join(mnt, "listen"), p) })
	return ch
}

// findConn returns the id of the connection whose status has every line
// in want.
func findConn(t *testing.T, mnt string, want ...string) string {
	t.Helper()
	var found string
	waitFor(t, fmt.Sprintf("a connection with %q", want), func() bool {
		for _, id := range ls(t, filepath.Join(mnt, "conn")) {
			b, err := os.ReadFile(filepath.Join(mnt, "conn", id, "status"))
			if err != nil {
				continue
			}
			ok := true
			for _, w := range want {
				ok = ok && bytes.Contains(b, []byte(w+"\n"))
			}
			if ok {
				found = id
				return true
			}
		}
		return false
	})
	return found
}

func writeFile(path, s string) error {
	fd, err := sysOpen(path, syscall.O_WRONLY|syscall.O_TRUNC)
	if err != nil {
		return err
	}
	defer syscall.Close(fd)
	return sysWriteAll(fd, []byte(s))
}

func TestIntegrationLoopback(t *testing.T) {
	needFUSE(t)
	mnt := mountAt(t, newLoopManager(t, 1))
	listen := filepath.Join(mnt, "listen")
	connect := func(port int) string { return filepath.Join(mnt, "connect", "1", strconv.Itoa(port)) }

	t.Run("Self", func(t *testing.T) {
		b, err := os.ReadFile(filepath.Join(mnt, "self"))
		if err != nil || string(b) != "1\n" {
			t.Errorf("self = %q, %v", b, err)
		}
		if got := ls(t, mnt); !slices.Equal(got, []string{"conn", "connect", "links", "listen", "self"}) {
			t.Errorf("ls / = %v", got)
		}
	})

	t.Run("OneShotAndPortStaysBound", func(t *testing.T) {
		for round := range 2 {
			acc := acceptBG(t, mnt, 7000, syscall.O_RDONLY)
			// As `echo hello > connect/1/7000` does it.
			fd := mustOpen(t, connect(7000), syscall.O_WRONLY|syscall.O_CREAT|syscall.O_TRUNC)
			if err := sysWriteAll(fd, []byte("hello\n")); err != nil {
				t.Fatal(err)
			}
			closeFD(t, fd)
			sfd, err := wait(t, acc, "accept")
			if err != nil {
				t.Fatalf("round %d accept: %v", round, err)
			}
			got, err := sysReadAll(sfd)
			closeFD(t, sfd)
			if err != nil || string(got) != "hello\n" {
				t.Fatalf("round %d: read %q, %v", round, got, err)
			}
			if !listed(t, listen, "7000") {
				t.Fatalf("round %d: port 7000 no longer listed", round)
			}
		}
		if err := os.Remove(filepath.Join(listen, "7000")); err != nil {
			t.Fatal(err)
		}
		if listed(t, listen, "7000") {
			t.Error("7000 still listed after rm")
		}
		if _, err := sysOpen(connect(7000), syscall.O_RDWR); !errors.Is(err, syscall.ECONNREFUSED) {
			t.Errorf("connect after rm: %v, want ECONNREFUSED", err)
		}
	})

	t.Run("Errors", func(t *testing.T) {
		if _, err := sysOpen(connect(7999), syscall.O_RDWR); !errors.Is(err, syscall.ECONNREFUSED) {
			t.Errorf("connect to unbound port: %v, want ECONNREFUSED", err)
		}
		if _, err := sysOpen(filepath.Join(mnt, "connect", "77", "80"), syscall.O_RDWR); !errors.Is(err, syscall.EHOSTUNREACH) {
			t.Errorf("connect to unknown domain: %v, want EHOSTUNREACH", err)
		}
		for _, p := range []string{"connect/x/80", "connect/1/080", "listen/70000000000", "conn/99999", "links/99"} {
			if _, err := os.Stat(filepath.Join(mnt, p)); !errors.Is(err, syscall.ENOENT) {
				t.Errorf("stat %s: %v, want ENOENT", p, err)
			}
		}
		if err := os.Remove(filepath.Join(listen, "7998")); !errors.Is(err, syscall.ENOENT) {
			t.Errorf("rm of unbound port: %v, want ENOENT", err)
		}
		if err := os.WriteFile(filepath.Join(mnt, "self"), []byte("2"), 0); !errors.Is(err, syscall.EACCES) {
			t.Errorf("writing self: %v, want EACCES", err)
		}
	})

	t.Run("RequestResponseRDWR", func(t *testing.T) {
		acc := acceptBG(t, mnt, 7001, syscall.O_RDWR)
		srv := goDo(func() (string, error) {
			r, err := <-acc, error(nil)
			if r.err != nil {
				return "", r.err
			}
			defer syscall.Close(r.v)
			buf := make([]byte, 100)
			n, err := sysRead(r.v, buf)
			if err != nil {
				return "", err
			}
			return string(buf[:n]), sysWriteAll(r.v, []byte("OK "+string(buf[:n])))
		})
		fd := mustOpen(t, connect(7001), syscall.O_RDWR)
		defer closeFD(t, fd)
		if _, err := syscall.Seek(fd, 0, 0); !errors.Is(err, syscall.ESPIPE) {
			t.Errorf("lseek on a connection: %v, want ESPIPE", err)
		}
		if _, err := syscall.Pwrite(fd, []byte("x"), 0); !errors.Is(err, syscall.ESPIPE) {
			t.Errorf("pwrite on a connection: %v, want ESPIPE", err)
		}
		if err := sysWriteAll(fd, []byte("GET\n")); err != nil {
			t.Fatal(err)
		}
		req, err := wait(t, srv, "server")
		if err != nil || req != "GET\n" {
			t.Fatalf("server got %q, %v", req, err)
		}
		got, err := sysReadAll(fd)
		if err != nil || string(got) != "OK GET\n" {
			t.Errorf("client read %q, %v; want the reply then EOF", got, err)
		}
	})

	t.Run("HalfCloseByLastWriter", func(t *testing.T) {
		acc := acceptBG(t, mnt, 7002, syscall.O_RDWR)
		w := mustOpen(t, connect(7002), syscall.O_WRONLY)
		id := findConn(t, mnt, "remote dom(1):7002", fmt.Sprintf("pid %d", os.Getpid()))
		r := mustOpen(t, filepath.Join(mnt, "conn", id, "data"), syscall.O_RDONLY)
		defer closeFD(t, r)
		sfd, err := wait(t, acc, "accept")
		if err != nil {
			t.Fatal(err)
		}
		defer closeFD(t, sfd)
		if err := sysWriteAll(w, []byte("request")); err != nil {
			t.Fatal(err)
		}
		closeFD(t, w) // the last writer: the server reads EOF
		got, err := sysReadAll(sfd)
		if err != nil || string(got) != "request" {
			t.Fatalf("server read %q, %v", got, err)
		}
		if err := sysWriteAll(sfd, []byte("response")); err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, 100)
		n, err := sysRead(r, buf)
		if err != nil || string(buf[:n]) != "response" {
			t.Errorf("client read %q, %v", buf[:n], err)
		}
	})

	t.Run("EPIPEAfterPeerClose", func(t *testing.T) {
		acc := acceptBG(t, mnt, 7003, syscall.O_RDWR)
		fd := mustOpen(t, connect(7003), syscall.O_RDWR)
		defer closeFD(t, fd)
		sfd, err := wait(t, acc, "accept")
		if err != nil {
			t.Fatal(err)
		}
		closeFD(t, sfd)
		res := goDo(func() (int, error) {
			for i := 0; ; i++ {
				if err := sysWriteAll(fd, []byte("x")); err != nil {
					return i, err
				}
				time.Sleep(time.Millisecond)
			}
		})
		if _, err := wait(t, res, "write after peer close"); !errors.Is(err, syscall.EPIPE) {
			t.Errorf("write after peer close: %v, want EPIPE", err)
		}
		if got, err := sysReadAll(fd); err != nil || len(got) != 0 {
			t.Errorf("read after peer close: %q, %v; want EOF", got, err)
		}
	})

	t.Run("CtlShutdownAndHangup", func(t *testing.T) {
		acc := acceptBG(t, mnt, 7004, syscall.O_RDWR)
		fd := mustOpen(t, connect(7004), syscall.O_RDWR)
		defer closeFD(t, fd)
		sfd, err := wait(t, acc, "accept")
		if err != nil {
			t.Fatal(err)
		}
		defer closeFD(t, sfd)
		sid := findConn(t, mnt, "local dom(1):7004")
		ctl := filepath.Join(mnt, "conn", sid, "ctl")
		if b, err := os.ReadFile(ctl); err != nil || string(b) != sid+"\n" {
			t.Errorf("read ctl = %q, %v", b, err)
		}
		if err := writeFile(ctl, "bogus\n"); !errors.Is(err, syscall.EINVAL) {
			t.Errorf("bogus ctl: %v, want EINVAL", err)
		}
		if err := sysWriteAll(sfd, []byte("last words")); err != nil {
			t.Fatal(err)
		}
		if err := writeFile(ctl, "shutdown\n"); err != nil {
			t.Fatalf("shutdown: %v", err)
		}
		if got, err := sysReadAll(fd); err != nil || string(got) != "last words" {
			t.Errorf("client read after shutdown: %q, %v", got, err)
		}
		if err := sysWriteAll(fd, []byte("reply")); err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, 10)
		if n, err := sysRead(sfd, buf); err != nil || string(buf[:n]) != "reply" {
			t.Errorf("server read %q, %v", buf[:n], err)
		}
		if err := writeFile(ctl, "hangup\n"); err != nil {
			t.Fatalf("hangup: %v", err)
		}
		// Until the reset arrives over the link the client still reads
		// the EOF of the shutdown.
		waitFor(t, "ECONNRESET on the client", func() bool {
			_, err := sysRead(fd, buf)
			if err != nil && !errors.Is(err, syscall.ECONNRESET) {
				t.Fatalf("client read after hangup: %v, want ECONNRESET", err)
			}
			return err != nil
		})
	})

	t.Run("StatusAndVanishing", func(t *testing.T) {
		acc := acceptBG(t, mnt, 7005, syscall.O_RDWR)
		fd := mustOpen(t, connect(7005), syscall.O_RDWR)
		sfd, err := wait(t, acc, "accept")
		if err != nil {
			t.Fatal(err)
		}
		if err := sysWriteAll(fd, []byte("12345")); err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, 10)
		if _, err := sysRead(sfd, buf); err != nil {
			t.Fatal(err)
		}
		sid := findConn(t, mnt, "local dom(1):7005")
		b, err := os.ReadFile(filepath.Join(mnt, "conn", sid, "status"))
		if err != nil {
			t.Fatal(err)
		}
		for _, want := range []string{
			"id " + sid, "local dom(1):7005", "bytes_in 5", "bytes_out 0",
			"uid 0", fmt.Sprintf("pid %d", os.Getpid()), "readers 1", "writers 1",
		} {
			if !bytes.Contains(b, []byte(want+"\n")) {
				t.Errorf("status lacks %q:\n%s", want, b)
			}
		}
		if !bytes.HasPrefix(b, []byte("id "+sid+"\nstate ")) {
			t.Errorf("status does not start with id and state:\n%s", b)
		}
		// Loopback: one entry for this domain, with the link's two ends.
		if got := ls(t, filepath.Join(mnt, "links")); !slices.Equal(got, []string{"1"}) {
			t.Errorf("ls links = %v, want [1]", got)
		}
		lt, err := os.ReadFile(filepath.Join(mnt, "links", "1"))
		if err != nil || !bytes.Contains(lt, []byte("role loopback-server\n")) || !bytes.Contains(lt, []byte("role loopback-client\n")) {
			t.Errorf("links/1: %v\n%s", err, lt)
		}
		closeFD(t, fd)
		closeFD(t, sfd)
		waitFor(t, "conn/"+sid+" to vanish", func() bool {
			_, err := os.Stat(filepath.Join(mnt, "conn", sid))
			return errors.Is(err, syscall.ENOENT) && !listed(t, filepath.Join(mnt, "conn"), sid)
		})
	})

	t.Run("NonblockingAccept", func(t *testing.T) {
		p := filepath.Join(listen, "7006")
		if _, err := sysOpen(p, syscall.O_RDONLY|syscall.O_NONBLOCK); !errors.Is(err, syscall.EAGAIN) {
			t.Fatalf("O_NONBLOCK accept: %v, want EAGAIN", err)
		}
		if !listed(t, listen, "7006") {
			t.Error("a failed O_NONBLOCK accept did not leave the port bound")
		}
		fd := mustOpen(t, connect(7006), syscall.O_RDWR)
		defer closeFD(t, fd)
		sfd, err := retryEINTR(func() (int, error) {
			for {
				fd, err := sysOpen(p, syscall.O_RDONLY|syscall.O_NONBLOCK)
				if !errors.Is(err, syscall.EAGAIN) {
					return fd, err
				}
				time.Sleep(5 * time.Millisecond)
			}
		})
		if err != nil {
			t.Fatalf("O_NONBLOCK accept with a pending connection: %v", err)
		}
		closeFD(t, sfd)
	})

	t.Run("RmUnbinds", func(t *testing.T) {
		acc := acceptBG(t, mnt, 7007, syscall.O_RDWR)
		fd := mustOpen(t, connect(7007), syscall.O_RDWR)
		defer closeFD(t, fd)
		sfd, err := wait(t, acc, "accept")
		if err != nil {
			t.Fatal(err)
		}
		defer closeFD(t, sfd)
		blocked := goDo(func() (int, error) { return sysOpen(filepath.Join(listen, "7007"), syscall.O_RDONLY) })
		time.Sleep(50 * time.Millisecond)
		if err := os.Remove(filepath.Join(listen, "7007")); err != nil {
			t.Fatal(err)
		}
		if _, err := wait(t, blocked, "blocked accept"); !errors.Is(err, syscall.ECONNABORTED) {
			t.Errorf("blocked accept after rm: %v, want ECONNABORTED", err)
		}
		if _, err := sysOpen(connect(7007), syscall.O_RDWR); !errors.Is(err, syscall.ECONNREFUSED) {
			t.Errorf("connect after rm: %v, want ECONNREFUSED", err)
		}
		if err := sysWriteAll(fd, []byte("alive")); err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, 10)
		if n, err := sysRead(sfd, buf); err != nil || string(buf[:n]) != "alive" {
			t.Errorf("established connection after rm: %q, %v", buf[:n], err)
		}
	})

	t.Run("Permissions", func(t *testing.T) { testPermissions(t, mnt) })
	t.Run("Interrupt", func(t *testing.T) { testInterrupt(t, mnt) })
}

// runAs runs a shell script as uid/gid 65534 (nobody) in directory dir and
// returns its combined output. The shell changes into dir itself: a child
// that touched the mount between fork and exec could deadlock against
// this process, which serves the mount (go-fuse fs/api.go, "Deadlocks").
func runAs(t *testing.T, dir, script string) string {
	t.Helper()
	cmd := exec.Command("/bin/sh", "-c", `cd "$1" || exit 1`+"\n"+script, "sh", dir)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	out, err := cmd.CombinedOutput()
	if err != nil {
		var ee *exec.ExitError
		if !errors.As(err, &ee) {
			t.Skipf("cannot run a command as nobody: %v", err)
		}
	}
	return string(out)
}

func testPermissions(t *testing.T, mnt string) {
	// Root binds 7100; nobody may neither accept on it nor remove it,
	// may not bind a port below 1024, but may bind its own and connect.
	acc := acceptBG(t, mnt, 7100, syscall.O_RDONLY)
	out := runAs(t, mnt, `
		(exec 3<listen/7100) 2>/dev/null || echo accept-denied
		rm -f listen/7100 2>/dev/null || echo rm-denied
		(exec 3<listen/80) 2>/dev/null || echo bind80-denied
		printf hi >connect/1/7100 && echo connect-ok
		(exec 3<connect/1/7999) 2>/dev/null || echo refused
		rm -f self 2>&1
	`)
	for _, want := range []string{"accept-denied", "rm-denied", "bind80-denied", "connect-ok", "refused",
		"rm: cannot remove 'self': Permission denied"} {
		if !strings.Contains(out, want+"\n") {
			t.Errorf("as nobody: no %q in output:\n%s", want, out)
		}
	}
	sfd, err := wait(t, acc, "accept")
	if err != nil {
		t.Fatal(err)
	}
	got, _ := sysReadAll(sfd)
	closeFD(t, sfd)
	if string(got) != "hi" {
		t.Errorf("read %q from nobody's connection", got)
	}
	if !listed(t, filepath.Join(mnt, "listen"), "7100") {
		t.Error("nobody removed root's port")
	}

	// A port nobody binds is nobody's: it shows up with that owner and
	// root may remove it.
	runAs(t, mnt, `(exec 3<listen/7101) & sleep 0.3; kill $! 2>/dev/null; wait`)
	var st syscall.Stat_t
	if err := syscall.Stat(filepath.Join(mnt, "listen", "7101"), &st); err != nil {
		t.Fatal(err)
	}
	if st.Uid != 65534 || st.Mode&0o777 != 0o600 {
		t.Errorf("nobody's port: uid %d mode %o, want 65534 0600", st.Uid, st.Mode&0o777)
	}
	if err := os.Remove(filepath.Join(mnt, "listen", "7101")); err != nil {
		t.Errorf("root rm of nobody's port: %v", err)
	}
	os.Remove(filepath.Join(mnt, "listen", "7100"))
}

// procState returns the state letter from the contents of /proc/<pid>/stat:
// the field after the command name, which is in parentheses and may itself
// contain spaces and parentheses.
func procState(stat []byte) (byte, error) {
	i := bytes.LastIndexByte(stat, ')')
	if i < 0 || i+2 >= len(stat) || stat[i+1] != ' ' {
		return 0, fmt.Errorf("malformed stat %q", stat)
	}
	return stat[i+2], nil
}

// blockedInFUSE waits until pid sleeps in a FUSE request and fails if it
// is ever seen in D state.
func blockedInFUSE(t *testing.T, pid int) {
	t.Helper()
	waitFor(t, "the child to block in FUSE", func() bool {
		stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			t.Fatalf("child gone: %v", err)
		}
		st, err := procState(stat)
		if err != nil {
			t.Fatal(err)
		}
		if st == 'D' {
			t.Fatalf("child in D state")
		}
		wchan, _ := os.ReadFile(fmt.Sprintf("/proc/%d/wchan", pid))
		return st == 'S' && bytes.Contains(wchan, []byte("request_wait_answer"))
	})
}

// startChild starts argv and returns a function that sends SIGINT once the
// child blocks in the mount and checks that it is gone within a second.
func startChild(t *testing.T, argv ...string) (interrupt func()) {
	t.Helper()
	cmd := exec.Command(argv[0], argv[1:]...)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := goDo(func() (struct{}, error) { return struct{}{}, cmd.Wait() })
	t.Cleanup(func() { cmd.Process.Kill() })
	return func() {
		t.Helper()
		blockedInFUSE(t, cmd.Process.Pid)
		start := time.Now()
		if err := cmd.Process.Signal(syscall.SIGINT); err != nil {
			t.Fatal(err)
		}
		select {
		case <-done:
			t.Logf("%v ended %v after SIGINT", argv, time.Since(start))
		case <-time.After(time.Second):
			stat, _ := os.ReadFile(fmt.Sprintf("/proc/%d/stat", cmd.Process.Pid))
			stack, _ := os.ReadFile(fmt.Sprintf("/proc/%d/stack", cmd.Process.Pid))
			t.Fatalf("%v still there a second after SIGINT: %s\n%s", argv, stat, stack)
		}
	}
}

// childStack describes where a child process is blocked, for failures.
func childStack(pid int) string {
	stack, _ := os.ReadFile(fmt.Sprintf("/proc/%d/stack", pid))
	stat, _ := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	return string(stat) + "\n" + string(stack)
}

func testInterrupt(t *testing.T, mnt string) {
	// Blocked in open (accept).
	startChild(t, "cat", filepath.Join(mnt, "listen", "7200"))()

	// Blocked in read on an established connection.
	acc := acceptBG(t, mnt, 7201, syscall.O_RDWR)
	interrupt := startChild(t, "cat", filepath.Join(mnt, "connect", "1", "7201"))
	sfd, err := wait(t, acc, "accept")
	if err != nil {
		t.Fatal(err)
	}
	// The accept can return before the dialer has heard back; a signal
	// then would end the connect, not a read.
	findConn(t, mnt, "remote dom(1):7201")
	interrupt()
	// The reader's death closed its end: the server side reads EOF.
	if got, err := sysReadAll(sfd); err != nil || len(got) != 0 {
		t.Errorf("server read after the client died: %q, %v", got, err)
	}
	closeFD(t, sfd)

	// Blocked in write, for lack of credit: nobody reads the other end.
	acc = acceptBG(t, mnt, 7202, syscall.O_RDONLY)
	interrupt = startChild(t, "dd", "if=/dev/zero", "of="+filepath.Join(mnt, "connect", "1", "7202"), "bs=64k", "status=none")
	sfd, err = wait(t, acc, "accept")
	if err != nil {
		t.Fatal(err)
	}
	findConn(t, mnt, "remote dom(1):7202")
	interrupt()
	closeFD(t, sfd)
}

func TestProcState(t *testing.T) {
	tests := []struct {
		in   string
		want byte
		ok   bool
	}{
		{"123 (cat) S 1 2 3", 'S', true},
		{"123 (a b) c) D 1", 'D', true},
		{"1 ((sd-pam)) R 0", 'R', true},
		{"123 (cat)", 0, false},
		{"123 (cat)S", 0, false},
		{"", 0, false},
	}
	for _, tt := range tests {
		got, err := procState([]byte(tt.in))
		if (err == nil) != tt.ok || got != tt.want {
			t.Errorf("procState(%q) = %q, %v", tt.in, got, err)
		}
	}
}

func FuzzProcState(f *testing.F) {
	f.Add([]byte("123 (cat) S 1 2 3"))
	f.Add([]byte("1 ((x)) D"))
	f.Add([]byte(")"))
	f.Fuzz(func(t *testing.T, b []byte) {
		st, err := procState(b)
		if err != nil {
			return
		}
		i := bytes.LastIndexByte(b, ')')
		if st != b[i+2] || b[i+1] != ' ' {
			t.Fatalf("procState(%q) = %q", b, st)
		}
	})
}

func TestIntegrationTwoDomains(t *testing.T) {
	needFUSE(t)
	host := newTestHost(t, 1, 2)
	a := mountAt(t, host.manager(1))
	b := mountAt(t, host.manager(2))

	for mnt, want := range map[string]string{a: "1\n", b: "2\n"} {
		if got, err := os.ReadFile(filepath.Join(mnt, "self")); err != nil || string(got) != want {
			t.Errorf("%s/self = %q, %v; want %q", mnt, got, err, want)
		}
	}

	t.Run("OneShot", func(t *testing.T) {
		acc := acceptBG(t, a, 80, syscall.O_RDONLY)
		fd := mustOpen(t, filepath.Join(b, "connect", "1", "80"), syscall.O_WRONLY|syscall.O_TRUNC)
		if err := sysWriteAll(fd, []byte("from 2\n")); err != nil {
			t.Fatal(err)
		}
		sfd, err := wait(t, acc, "accept")
		if err != nil {
			t.Fatal(err)
		}
		id := findConn(t, a, "local dom(1):80")
		st, err := os.ReadFile(filepath.Join(a, "conn", id, "status"))
		if err != nil || !bytes.Contains(st, []byte("\nremote dom(2):")) {
			t.Errorf("status on dom 1: %v\n%s", err, st)
		}
		closeFD(t, fd)
		got, err := sysReadAll(sfd)
		closeFD(t, sfd)
		if err != nil || string(got) != "from 2\n" {
			t.Errorf("dom 1 read %q, %v", got, err)
		}
	})

	t.Run("Links", func(t *testing.T) {
		if got := ls(t, filepath.Join(a, "connect")); !slices.Contains(got, "2") {
			t.Errorf("ls connect on dom 1 = %v, want 2 listed", got)
		}
		if got := ls(t, filepath.Join(b, "links")); !slices.Contains(got, "1") {
			t.Errorf("ls links on dom 2 = %v, want 1 listed", got)
		}
		text, err := os.ReadFile(filepath.Join(a, "links", "2"))
		if err != nil {
			t.Fatal(err)
		}
		for _, key := range []string{"peer 2\n", "state ", "role ", "read_ring ", "write_ring ", "conns ", "bytes_in ", "bytes_out ", "frames_in ", "frames_out "} {
			if !bytes.Contains(text, []byte(key)) {
				t.Errorf("links/2 lacks %q:\n%s", key, text)
			}
		}
		if bytes.Contains(text, []byte("bytes_in 0\n")) {
			t.Errorf("links/2 counted no bytes after a transfer:\n%s", text)
		}
	})

	t.Run("Errors", func(t *testing.T) {
		if _, err := sysOpen(filepath.Join(b, "connect", "1", "81"), syscall.O_RDWR); !errors.Is(err, syscall.ECONNREFUSED) {
			t.Errorf("connect to an unbound port of dom 1: %v, want ECONNREFUSED", err)
		}
		if _, err := sysOpen(filepath.Join(b, "connect", "3", "80"), syscall.O_RDWR); !errors.Is(err, syscall.EHOSTUNREACH) {
			t.Errorf("connect to a domain that does not exist: %v, want EHOSTUNREACH", err)
		}
	})

	t.Run("ResetOnLinkLoss", func(t *testing.T) {
		acc := acceptBG(t, a, 90, syscall.O_RDWR)
		fd := mustOpen(t, filepath.Join(b, "connect", "1", "90"), syscall.O_RDWR)
		defer closeFD(t, fd)
		sfd, err := wait(t, acc, "accept")
		if err != nil {
			t.Fatal(err)
		}
		defer closeFD(t, sfd)
		blocked := goDo(func() (int, error) { return sysRead(sfd, make([]byte, 10)) })
		time.Sleep(50 * time.Millisecond)
		host.heap.Kill(2) // domain 2 dies: the link breaks
		if _, err := wait(t, blocked, "read on dom 1"); !errors.Is(err, syscall.ECONNRESET) {
			t.Errorf("read after the peer domain died: %v, want ECONNRESET", err)
		}
		if err := sysWriteAll(sfd, []byte("x")); err == nil {
			t.Error("write after the peer domain died succeeded")
		}
		waitFor(t, "links/2 to vanish on dom 1", func() bool {
			_, err := os.Stat(filepath.Join(a, "links", "2"))
			return errors.Is(err, syscall.ENOENT)
		})
	})
}

func TestIntegrationShutdownWakesEverything(t *testing.T) {
	needFUSE(t)
	mt, mnt := mountFS(t, newLoopManager(t, 1))

	blockedAccept := acceptBG(t, mnt, 7300, syscall.O_RDONLY)

	acc := acceptBG(t, mnt, 7301, syscall.O_RDWR)
	quiet := mustOpen(t, filepath.Join(mnt, "connect", "1", "7301"), syscall.O_RDWR)
	sfd, err := wait(t, acc, "accept")
	if err != nil {
		t.Fatal(err)
	}
	blockedRead := goDo(func() (int, error) {
		defer syscall.Close(sfd)
		return sysRead(sfd, make([]byte, 10))
	})

	acc = acceptBG(t, mnt, 7302, syscall.O_RDONLY)
	wfd := mustOpen(t, filepath.Join(mnt, "connect", "1", "7302"), syscall.O_WRONLY)
	unread, err := wait(t, acc, "accept")
	if err != nil {
		t.Fatal(err)
	}
	blockedWrite := goDo(func() (int, error) {
		defer syscall.Close(wfd)
		total := 0
		buf := make([]byte, 64<<10)
		for {
			n, err := syscall.Write(wfd, buf) // nobody reads: blocks once the window is full
			if errors.Is(err, syscall.EINTR) {
				continue
			}
			if err != nil {
				return total, err
			}
			total += n
		}
	})
	time.Sleep(200 * time.Millisecond)

	shut := goDo(func() (struct{}, error) { return struct{}{}, mt.Shutdown() })
	if _, err := wait(t, blockedAccept, "blocked accept"); !errors.Is(err, syscall.ECONNABORTED) {
		t.Errorf("accept at shutdown: %v, want ECONNABORTED", err)
	}
	if n, err := wait(t, blockedRead, "blocked read"); n != 0 || err != nil {
		t.Errorf("read at shutdown: %d, %v; want EOF", n, err)
	}
	if n, err := wait(t, blockedWrite, "blocked write"); !errors.Is(err, syscall.EPIPE) {
		t.Errorf("write at shutdown after %d bytes: %v, want EPIPE", n, err)
	}
	// The unmount completes once the last open file is closed.
	closeFD(t, quiet)
	closeFD(t, unread)
	if _, err := wait(t, shut, "Shutdown"); err != nil {
		t.Errorf("Shutdown: %v", err)
	}
	var st syscall.Statfs_t
	if err := syscall.Statfs(mnt, &st); err != nil || st.Type == 0x65735546 {
		t.Errorf("still a FUSE mount after Shutdown (statfs type %#x, %v)", st.Type, err)
	}
}

func TestIntegrationUnmountFromOutside(t *testing.T) {
	needFUSE(t)
	mt, mnt := mountFS(t, newLoopManager(t, 1))
	waited := goDo(func() (struct{}, error) { mt.Wait(); return struct{}{}, nil })
	if err := syscall.Unmount(mnt, 0); err != nil {
		t.Fatalf("umount: %v", err)
	}
	wait(t, waited, "Wait after umount")
	if err := mt.Shutdown(); err != nil {
		t.Errorf("Shutdown after umount: %v", err)
	}
}

func TestIntegrationStaleMountIsCleared(t *testing.T) {
	needFUSE(t)
	// A mount whose server is gone answers ENOTCONN, as after a crash.
	m := newLoopManager(t, 1)
	mt, mnt := mountFS(t, m)
	mt.fsys.shutdown()
	abortConnection(t, mnt)
	var st syscall.Stat_t
	if err := syscall.Stat(mnt, &st); !errors.Is(err, syscall.ENOTCONN) {
		t.Skipf("could not make a stale mount (stat: %v)", err)
	}
	mt2, err := Mount(mnt, m, Options{Log: testLog(t)})
	if err != nil {
		t.Fatalf("Mount over a stale mount: %v", err)
	}
	defer mt2.Shutdown()
	if b, err := os.ReadFile(filepath.Join(mnt, "self")); err != nil || string(b) != "1\n" {
		t.Errorf("self on the new mount: %q, %v", b, err)
	}
}

// abortConnection aborts the FUSE connection of the mount at mnt through
// fusectl, which leaves the mount stale as a daemon crash would.
func abortConnection(t *testing.T, mnt string) {
	t.Helper()
	var st syscall.Stat_t
	if err := syscall.Stat(mnt, &st); err != nil {
		t.Fatal(err)
	}
	const ctl = "/sys/fs/fuse/connections"
	minor := (st.Dev & 0xff) | ((st.Dev >> 12) & 0xfff00) // the connection's id
	abort := filepath.Join(ctl, strconv.FormatUint(minor, 10), "abort")
	if _, err := os.Stat(abort); err != nil {
		if err := syscall.Mount("none", ctl, "fusectl", 0, ""); err != nil && !errors.Is(err, syscall.EBUSY) {
			t.Skipf("fusectl not available: %v", err)
		}
	}
	if err := os.WriteFile(abort, []byte("1"), 0); err != nil {
		t.Skipf("cannot abort the connection: %v", err)
	}
}
