package fsnode

import (
	"slices"
	"strconv"
	"strings"
	"testing"
)

func TestParsePort(t *testing.T) {
	tests := []struct {
		in   string
		want uint32
		ok   bool
	}{
		{"0", 0, true},
		{"80", 80, true},
		{"4294967295", 4294967295, true},
		{"4294967296", 0, false},
		{"", 0, false},
		{"080", 0, false},
		{"00", 0, false},
		{"+80", 0, false},
		{"-1", 0, false},
		{" 80", 0, false},
		{"80\n", 0, false},
		{"0x50", 0, false},
		{"8O", 0, false},
		{"99999999999999999999999", 0, false},
		{"٣", 0, false},
	}
	for _, tt := range tests {
		got, ok := parsePort(tt.in)
		if got != tt.want || ok != tt.ok {
			t.Errorf("parsePort(%q) = %d, %v; want %d, %v", tt.in, got, ok, tt.want, tt.ok)
		}
	}
}

func TestParseDomID(t *testing.T) {
	tests := []struct {
		in   string
		want uint16
		ok   bool
	}{
		{"0", 0, true},
		{"1", 1, true},
		{"65535", 65535, true},
		{"65536", 0, false},
		{"01", 0, false},
		{"dom1", 0, false},
		{"", 0, false},
	}
	for _, tt := range tests {
		got, ok := parseDomID(tt.in)
		if uint16(got) != tt.want || ok != tt.ok {
			t.Errorf("parseDomID(%q) = %d, %v; want %d, %v", tt.in, got, ok, tt.want, tt.ok)
		}
	}
}

func TestParseConnID(t *testing.T) {
	if id, ok := parseConnID("18446744073709551615"); !ok || id != 1<<64-1 {
		t.Errorf("max uint64: got %d, %v", id, ok)
	}
	if _, ok := parseConnID("18446744073709551616"); ok {
		t.Error("2^64 accepted")
	}
}

func TestParseCtl(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		want    []ctlCmd
		wantErr bool
	}{
		{"shutdown", "shutdown\n", []ctlCmd{ctlShutdown}, false},
		{"hangup no newline", "hangup", []ctlCmd{ctlHangup}, false},
		{"blanks", "  hangup \t\n", []ctlCmd{ctlHangup}, false},
		{"crlf", "shutdown\r\n", []ctlCmd{ctlShutdown}, false},
		{"two", "shutdown\nhangup\n", []ctlCmd{ctlShutdown, ctlHangup}, false},
		{"empty line from echo", "\n", nil, false},
		{"empty", "", nil, false},
		{"unknown", "close\n", nil, true},
		{"one bad of two", "shutdown\nbogus\n", nil, true},
		{"case matters", "Shutdown", nil, true},
		{"argument", "shutdown now", nil, true},
		{"too long", strings.Repeat("\n", maxCtlWrite+1), nil, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseCtl([]byte(tt.in))
			if (err != nil) != tt.wantErr {
				t.Fatalf("parseCtl(%q) error = %v, wantErr %v", tt.in, err, tt.wantErr)
			}
			if !slices.Equal(got, tt.want) {
				t.Errorf("parseCtl(%q) = %v, want %v", tt.in, got, tt.want)
			}
		})
	}
}

// FuzzParseNames checks that a name is accepted exactly when it is the
// canonical decimal form of a number in range, for every kind of name.
func FuzzParseNames(f *testing.F) {
	for _, s := range []string{"0", "80", "65535", "65536", "4294967295", "4294967296", "007", "", "-1", "+1", "1e3", "18446744073709551615"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		u, err := strconv.ParseUint(s, 10, 64)
		canonical := err == nil && strconv.FormatUint(u, 10) == s

		if p, ok := parsePort(s); ok != (canonical && u <= 1<<32-1) || ok && uint64(p) != u {
			t.Errorf("parsePort(%q) = %d, %v", s, p, ok)
		}
		if d, ok := parseDomID(s); ok != (canonical && u <= 1<<16-1) || ok && uint64(d) != u {
			t.Errorf("parseDomID(%q) = %d, %v", s, d, ok)
		}
		if id, ok := parseConnID(s); ok != canonical || ok && id != u {
			t.Errorf("parseConnID(%q) = %d, %v", s, id, ok)
		}
	})
}

// FuzzParseCtl checks that parseCtl never panics, and that what it accepts
// renders back (one command per line) to something that parses the same.
func FuzzParseCtl(f *testing.F) {
	for _, s := range []string{"shutdown\n", "hangup", "shutdown\nhangup\n", "\n", "", "bogus", " hangup \r\n", "\x00"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		cmds, err := parseCtl(b)
		if err != nil {
			if cmds != nil {
				t.Fatalf("parseCtl(%q) returned commands with an error", b)
			}
			return
		}
		var sb strings.Builder
		for _, c := range cmds {
			sb.WriteString(c.String())
			sb.WriteByte('\n')
		}
		again, err := parseCtl([]byte(sb.String()))
		if err != nil || !slices.Equal(again, cmds) {
			t.Fatalf("round trip of %q: %v, %v; want %v", b, again, err, cmds)
		}
	})
}

func TestParseTgid(t *testing.T) {
	tests := []struct {
		in   string
		want uint32
		ok   bool
	}{
		{"Name:\tcat\nUmask:\t0022\nState:\tS (sleeping)\nTgid:\t4242\nNgid:\t0\nPid:\t4243\n", 4242, true},
		{"Tgid:\t7", 7, true},
		{"Pid:\t1\n", 0, false},
		{"Tgid:\tx\n", 0, false},
		{"Tgid:\t99999999999\n", 0, false},
		{"", 0, false},
	}
	for _, tt := range tests {
		got, ok := parseTgid([]byte(tt.in))
		if got != tt.want || ok != tt.ok {
			t.Errorf("parseTgid(%q) = %d, %v; want %d, %v", tt.in, got, ok, tt.want, tt.ok)
		}
	}
}

// FuzzParseTgid: parseTgid never panics and what it reports is the number
// on a Tgid line.
func FuzzParseTgid(f *testing.F) {
	f.Add([]byte("Name:\tcat\nTgid:\t4242\nPid:\t4243\n"))
	f.Add([]byte("Tgid:"))
	f.Fuzz(func(t *testing.T, b []byte) {
		v, ok := parseTgid(b)
		if ok && !strings.Contains(string(b), "Tgid:") {
			t.Fatalf("parseTgid(%q) = %d without a Tgid line", b, v)
		}
		if ok && !strings.Contains(string(b), strconv.FormatUint(uint64(v), 10)) {
			t.Fatalf("parseTgid(%q) = %d, not in the input", b, v)
		}
	})
}
