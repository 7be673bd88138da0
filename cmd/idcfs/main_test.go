package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"io"
	"slices"
	"strings"
	"testing"

	"idcfs/vchan"
)

func TestParseInterspersed(t *testing.T) {
	tests := []struct {
		name    string
		args    []string
		wantPos []string
		wantDir string
		wantErr bool
	}{
		{"flags first", []string{"--dir", "/d", "1", "2"}, []string{"1", "2"}, "/d", false},
		{"flags last", []string{"1", "2", "--dir", "/d"}, []string{"1", "2"}, "/d", false},
		{"flags between", []string{"1", "--dir=/d", "2"}, []string{"1", "2"}, "/d", false},
		{"double dash", []string{"--dir", "/d", "--", "-3"}, []string{"-3"}, "/d", false},
		{"no args", nil, nil, "", false},
		{"unknown flag", []string{"1", "--bogus"}, nil, "", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fs := newFlagSet("x", "x", io.Discard)
			dir := fs.String("dir", "", "")
			pos, err := parseInterspersed(fs, tt.args)
			if tt.wantErr {
				if exitCode(err) != ExitUsage {
					t.Fatalf("err = %v (exit %d), want a usage error", err, exitCode(err))
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(pos, tt.wantPos) || *dir != tt.wantDir {
				t.Errorf("got pos %q dir %q, want %q %q", pos, *dir, tt.wantPos, tt.wantDir)
			}
		})
	}
}

func TestParseInterspersedHelp(t *testing.T) {
	fs := newFlagSet("x", "x", io.Discard)
	if _, err := parseInterspersed(fs, []string{"-h"}); !errors.Is(err, errHelp) {
		t.Fatalf("err = %v, want errHelp", err)
	}
}

func TestParseDomIDs(t *testing.T) {
	got, err := parseDomIDs([]string{"1", "7", "32751"})
	if err != nil {
		t.Fatal(err)
	}
	if want := []vchan.DomID{1, 7, 32751}; !slices.Equal(got, want) {
		t.Errorf("got %v, want %v", got, want)
	}
	for _, bad := range [][]string{{"x"}, {"-1"}, {"65535"}, {"70000"}, {"1", "1"}} {
		if _, err := parseDomIDs(bad); exitCode(err) != ExitUsage {
			t.Errorf("parseDomIDs(%q) = %v, want a usage error", bad, err)
		}
	}
}

func TestDomainSocketsFlag(t *testing.T) {
	var d domainSockets
	fs := flag.NewFlagSet("x", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.Var(&d, "domain", "")
	if err := fs.Parse([]string{"--domain", "1=/a.sock", "--domain=2=/b=c.sock"}); err != nil {
		t.Fatal(err)
	}
	want := domainSockets{{1, "/a.sock"}, {2, "/b=c.sock"}}
	if !slices.Equal(d, want) {
		t.Errorf("got %v, want %v", d, want)
	}
	if d.String() != "1=/a.sock,2=/b=c.sock" {
		t.Errorf("String() = %q", d.String())
	}
	for _, bad := range []string{"1", "=/x", "x=/y", "1="} {
		if err := d.Set(bad); err == nil {
			t.Errorf("Set(%q) succeeded", bad)
		}
	}
}

func TestExitCode(t *testing.T) {
	base := errors.New("boom")
	tests := []struct {
		err  error
		want int
	}{
		{nil, ExitOK},
		{base, ExitFailure},
		{withCode(ExitMount, base), ExitMount},
		{errors.Join(errors.New("x"), withCode(ExitXenstore, base)), ExitXenstore},
		{usageErrorf("bad %d", 1), ExitUsage},
	}
	for _, tt := range tests {
		if got := exitCode(tt.err); got != tt.want {
			t.Errorf("exitCode(%v) = %d, want %d", tt.err, got, tt.want)
		}
	}
	if withCode(ExitMount, nil) != nil {
		t.Error("withCode(nil) is not nil")
	}
	if !errors.Is(withCode(ExitMount, base), base) {
		t.Error("withCode hides the wrapped error")
	}
}

// TestRunCommandLine checks the command lines that are rejected before any
// backend, Xenstore or mount is touched.
func TestRunCommandLine(t *testing.T) {
	tests := []struct {
		args     []string
		want     int
		inOutput string
	}{
		{nil, ExitUsage, "usage: idcfs"},
		{[]string{"frobnicate"}, ExitUsage, "usage: idcfs"},
		{[]string{"help"}, ExitOK, "exit codes:"},
		{[]string{"version"}, ExitOK, "idcfs "},
		{[]string{"mount", "-h"}, ExitOK, "--backend"},
		{[]string{"mount", "--backend", "bogus", "/x"}, ExitUsage, ""},
		{[]string{"mount", "/a", "/b"}, ExitUsage, ""},
		{[]string{"mount", "--domid", "70000", "/x"}, ExitUsage, ""},
		{[]string{"mount", "--backend", "shm", "--log-level", "loud", "/x"}, ExitUsage, ""},
		{[]string{"mount", "--backend", "shm", "--ring-size", "4194304", "/x"}, ExitUsage, ""},
		{[]string{"mount", "--backend", "shm", "--window", "-1", "/x"}, ExitUsage, ""},
		{[]string{"mount", "--backend", "shm", "--max-window", "-1", "/x"}, ExitUsage, ""},
		{[]string{"sim", "1", "2"}, ExitUsage, ""},
		{[]string{"sim", "--dir", "/tmp/x"}, ExitUsage, ""},
		{[]string{"sim", "--dir", "/tmp/x", "0", "1"}, ExitUsage, ""},
		{[]string{"sim", "--dir", "/tmp/x", "1", "1"}, ExitUsage, ""},
		{[]string{"setup"}, ExitUsage, ""},
		{[]string{"setup", "x"}, ExitUsage, ""},
		{[]string{"xenstored"}, ExitUsage, ""},
		{[]string{"xenstored", "--socket", "/x", "extra"}, ExitUsage, ""},
		{[]string{"xenstored", "--socket", "/x", "--domain", "nope"}, ExitUsage, ""},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			var out bytes.Buffer
			err := run(context.Background(), tt.args, &out, &out)
			if got := exitCode(err); got != tt.want {
				t.Fatalf("exit %d (%v), want %d; output:\n%s", got, err, tt.want, out.String())
			}
			if !strings.Contains(out.String(), tt.inOutput) {
				t.Errorf("output lacks %q:\n%s", tt.inOutput, out.String())
			}
		})
	}
}

// TestMountWithoutBackend: with no backend chosen (no /dev/xen and no
// --backend), mount refuses with ExitBackend and points at idcfs sim.
func TestMountWithoutBackend(t *testing.T) {
	var out bytes.Buffer
	err := run(context.Background(), []string{"mount", "--backend", "", t.TempDir()}, &out, &out)
	if exitCode(err) != ExitBackend {
		t.Fatalf("exit %d (%v), want %d", exitCode(err), err, ExitBackend)
	}
	if !strings.Contains(err.Error(), "idcfs sim") {
		t.Errorf("error does not mention idcfs sim: %v", err)
	}
}
