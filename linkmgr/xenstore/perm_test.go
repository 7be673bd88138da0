package xenstore

import (
	"errors"
	"syscall"
	"testing"
)

func TestParsePerm(t *testing.T) {
	tests := []struct {
		in   string
		want Perm
		ok   bool
	}{
		{"n0", Perm{Dom: 0}, true},
		{"r5", Perm{Dom: 5, Read: true}, true},
		{"w5", Perm{Dom: 5, Write: true}, true},
		{"b65535", Perm{Dom: 65535, Read: true, Write: true}, true},
		{"b32757", Perm{Dom: 32757, Read: true, Write: true}, true},
		{"", Perm{}, false},
		{"n", Perm{}, false},
		{"x5", Perm{}, false},
		{"N5", Perm{}, false},
		{"n65536", Perm{}, false},
		{"n05", Perm{}, false},
		{"n0x5", Perm{}, false},
		{"n+5", Perm{}, false},
		{"n-1", Perm{}, false},
		{"n 5", Perm{}, false},
		{"n99999999999", Perm{}, false},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := ParsePerm(tt.in)
			if tt.ok != (err == nil) || got != tt.want {
				t.Fatalf("ParsePerm(%q) = %v, %v", tt.in, got, err)
			}
			if err != nil && !errors.Is(err, ErrBadPerm) {
				t.Fatalf("error %v does not wrap ErrBadPerm", err)
			}
			if err == nil && got.String() != tt.in {
				t.Fatalf("String() = %q, want %q", got.String(), tt.in)
			}
		})
	}
}

func TestErrnoNames(t *testing.T) {
	for _, n := range errnoNames {
		got, ok := ParseErrno(n.name)
		if !ok || got != n.errno || ErrnoName(n.errno) != n.name {
			t.Errorf("%s: ParseErrno = %v %v, ErrnoName = %s", n.name, got, ok, ErrnoName(n.errno))
		}
	}
	if e, ok := ParseErrno("ENOTHING"); ok || e != syscall.EINVAL {
		t.Errorf("unknown name -> %v %v", e, ok)
	}
	if ErrnoName(syscall.EXDEV) != "EINVAL" {
		t.Error("errno outside the table not named EINVAL")
	}
	err := &Error{Op: "read", Path: "/x", Err: syscall.ENOENT}
	if !errors.Is(err, syscall.ENOENT) || err.Error() != "xenstore read /x: ENOENT (no such file or directory)" {
		t.Errorf("Error: %v", err)
	}
}

func TestParseDecimal(t *testing.T) {
	tests := []struct {
		in   string
		tx   bool
		want uint32
		ok   bool
	}{
		{"0", false, 0, true},
		{"65535", false, 65535, true},
		{"65536", false, 0, false},
		{"1", true, 1, true},
		{"0", true, 0, false},
		{"4294967295", true, 4294967295, true},
		{"4294967296", true, 0, false},
		{"007", true, 0, false},
		{"", true, 0, false},
		{"1a", true, 0, false},
	}
	for _, tt := range tests {
		var got uint32
		var ok bool
		if tt.tx {
			got, ok = ParseTxID(tt.in)
		} else {
			got, ok = ParseDomID(tt.in)
		}
		if got != tt.want || ok != tt.ok {
			t.Errorf("parse %q (tx %v) = %d, %v", tt.in, tt.tx, got, ok)
		}
	}
}
