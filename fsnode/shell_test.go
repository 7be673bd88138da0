package fsnode

import (
	"os/exec"
	"strings"
	"testing"
)

// The shell examples of docs/files.md, run by /bin/sh against a loopback
// mount. The scripts change into the mount themselves: a child process
// must not touch the mount before it has exec'd (see runAs).

const connIDFunc = `
conn_id() {
    for s in conn/*/status; do
        if grep -qx "pid $$" "$s" && grep -qx "$1" "$s"; then
            s=${s#conn/}; echo "${s%/status}"; return 0
        fi
    done
    return 1
}
`

func runShell(t *testing.T, mnt, script string) (string, error) {
	t.Helper()
	cmd := exec.Command("/bin/sh", "-c", `cd "$1" || exit 1`+"\n"+connIDFunc+script, "sh", mnt)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// startShell starts a script in the background; wait returns its output.
func startShell(t *testing.T, mnt, script string) (finish func() string) {
	t.Helper()
	var sb strings.Builder
	cmd := exec.Command("/bin/sh", "-c", `cd "$1" || exit 1`+"\n"+connIDFunc+script, "sh", mnt)
	cmd.Stdout, cmd.Stderr = &sb, &sb
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := goDo(func() (struct{}, error) { return struct{}{}, cmd.Wait() })
	return func() string {
		t.Helper()
		if _, err := wait(t, done, "shell script"); err != nil {
			t.Errorf("script failed: %v\n%s", err, sb.String())
		}
		return sb.String()
	}
}

func TestIntegrationShellExamples(t *testing.T) {
	needFUSE(t)
	mnt := mountAt(t, newLoopManager(t, 1))

	t.Run("OneShot", func(t *testing.T) {
		srv := startShell(t, mnt, `cat listen/7000`)
		waitFor(t, "port 7000", func() bool { return listed(t, mnt+"/listen", "7000") })
		if out, err := runShell(t, mnt, `echo hello >connect/1/7000`); err != nil {
			t.Fatalf("%v: %s", err, out)
		}
		if got := srv(); got != "hello\n" {
			t.Errorf("server printed %q", got)
		}
	})

	t.Run("AnswerEachClient", func(t *testing.T) {
		srv := startShell(t, mnt, `
			for i in 1 2; do
				{ read -r req; echo "you said: $req"; } <>listen/7001 >&0
			done`)
		waitFor(t, "port 7001", func() bool { return listed(t, mnt+"/listen", "7001") })
		for _, word := range []string{"one", "two"} {
			out, err := runShell(t, mnt, `
				exec 3<>connect/1/7001
				echo "`+word+`" >&3
				read -r reply <&3
				echo "$reply"
				exec 3>&-`)
			if err != nil || out != "you said: "+word+"\n" {
				t.Errorf("client %s: %q, %v", word, out, err)
			}
		}
		srv()
	})

	t.Run("HalfClose", func(t *testing.T) {
		srv := startShell(t, mnt, `
			exec 3<listen/7002
			id=$(conn_id "local dom(1):7002") || { echo no id; exit 1; }
			req=$(cat <&3)
			echo "got $(printf '%s\n' "$req" | wc -l) lines" >conn/$id/data
			exec 3<&-`)
		waitFor(t, "port 7002", func() bool { return listed(t, mnt+"/listen", "7002") })
		out, err := runShell(t, mnt, `
			exec 4>connect/1/7002
			id=$(conn_id "remote dom(1):7002") || { echo no id; exit 1; }
			exec 3<conn/$id/data
			printf 'line 1\nline 2\n' >&4
			exec 4>&-
			cat <&3
			exec 3<&-`)
		if err != nil || out != "got 2 lines\n" {
			t.Errorf("client: %q, %v", out, err)
		}
		if got := srv(); got != "" {
			t.Errorf("server printed %q", got)
		}
	})

	t.Run("CtlShutdown", func(t *testing.T) {
		srv := startShell(t, mnt, `
			exec 3<>listen/7003
			id=$(conn_id "local dom(1):7003") || { echo no id; exit 1; }
			echo bye >&3
			echo shutdown >conn/$id/ctl
			read -r answer <&3
			echo "server read: $answer"`)
		waitFor(t, "port 7003", func() bool { return listed(t, mnt+"/listen", "7003") })
		out, err := runShell(t, mnt, `
			exec 3<>connect/1/7003
			cat <&3
			echo thanks >&3
			exec 3>&-`)
		if err != nil || out != "bye\n" {
			t.Errorf("client: %q, %v", out, err)
		}
		if got := srv(); got != "server read: thanks\n" {
			t.Errorf("server printed %q", got)
		}
	})

	t.Run("ErrorMessages", func(t *testing.T) {
		out, _ := runShell(t, mnt, `
			cat connect/1/7999 2>&1
			cat listen/07000 2>&1
			echo nonsense >conn/999/ctl 2>&1
			timeout 0.3 cat listen/7004 || echo "timeout: $?"
			rm -f self 2>&1
			chmod 666 listen/7004 2>&1
			echo 1 >self 2>&1`)
		for _, want := range []string{"Connection refused", "No such file or directory", "timeout: 124",
			"rm: cannot remove 'self': Operation not permitted",
			"chmod: changing permissions of 'listen/7004': Operation not permitted",
			"self: Permission denied"} {
			if !strings.Contains(out, want) {
				t.Errorf("no %q in:\n%s", want, out)
			}
		}
	})
}
