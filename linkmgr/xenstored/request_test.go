package xenstored

import (
	"strings"
	"syscall"
	"testing"

	"idcfs/linkmgr/xenstore"
)

func TestParseRequest(t *testing.T) {
	tests := []struct {
		name    string
		op      xenstore.Op
		payload string
		dom     uint32
		want    syscall.Errno
		args    []string
		value   string
	}{
		{"read", xenstore.OpRead, "/a\x00", 0, 0, []string{"/a"}, ""},
		{"read unterminated", xenstore.OpRead, "/a", 0, syscall.EINVAL, nil, ""},
		{"read two strings", xenstore.OpRead, "/a\x00/b\x00", 0, syscall.EINVAL, nil, ""},
		{"read empty payload", xenstore.OpRead, "", 0, syscall.EINVAL, nil, ""},
		{"read not UTF-8", xenstore.OpRead, "/\xff\x00", 0, syscall.EINVAL, nil, ""},
		{"write", xenstore.OpWrite, "/a\x00val", 0, 0, []string{"/a"}, "val"},
		{"write keeps NULs in value", xenstore.OpWrite, "/a\x00v\x00\x00", 0, 0, []string{"/a"}, "v\x00\x00"},
		{"write empty value", xenstore.OpWrite, "/a\x00", 0, 0, []string{"/a"}, ""},
		{"write without path terminator", xenstore.OpWrite, "/a", 0, syscall.EINVAL, nil, ""},
		{"set perms", xenstore.OpSetPerms, "/a\x00n0\x00r1\x00", 0, 0, []string{"/a", "n0", "r1"}, ""},
		{"set perms without entries", xenstore.OpSetPerms, "/a\x00", 0, syscall.EINVAL, nil, ""},
		{"watch", xenstore.OpWatch, "/a\x00tok\x00", 3, 0, []string{"/a", "tok"}, ""},
		{"watch with depth", xenstore.OpWatch, "/a\x00tok\x001\x00", 0, syscall.EINVAL, nil, ""},
		{"watch one string", xenstore.OpWatch, "/a\x00", 0, syscall.EINVAL, nil, ""},
		{"transaction end commit", xenstore.OpTransactionEnd, "T\x00", 0, 0, []string{"T"}, ""},
		{"transaction end bad", xenstore.OpTransactionEnd, "X\x00", 0, syscall.EINVAL, nil, ""},
		{"transaction end long", xenstore.OpTransactionEnd, "TF\x00", 0, syscall.EINVAL, nil, ""},
		{"transaction start ignores payload", xenstore.OpTransactionStart, "junk", 0, 0, nil, ""},
		{"unknown type", 99, "", 0, syscall.ENOSYS, nil, ""},
		{"removed RESTRICT", 20, "", 0, syscall.ENOSYS, nil, ""},
		{"watch event from client", xenstore.OpWatchEvent, "/a\x00t\x00", 0, syscall.ENOSYS, nil, ""},
		{"error from client", xenstore.OpError, "EINVAL\x00", 0, syscall.ENOSYS, nil, ""},
		{"privileged from guest", xenstore.OpIntroduce, "1\x002\x003\x00", 5, syscall.EACCES, nil, ""},
		{"is introduced from guest", xenstore.OpIsDomainIntroduced, "1\x00", 5, syscall.EACCES, nil, ""},
		{"is introduced from dom0", xenstore.OpIsDomainIntroduced, "1\x00", 0, 0, []string{"1"}, ""},
		{"control", xenstore.OpControl, "x\x00", 0, syscall.ENOSYS, nil, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, e := parseRequest(&xenstore.Message{Op: tt.op, ReqID: 7, TxID: 3, Payload: []byte(tt.payload)}, tt.dom)
			if e != tt.want {
				t.Fatalf("errno %v, want %v", e, tt.want)
			}
			if r.reqID != 7 || r.txID != 3 {
				t.Fatalf("ids %d/%d", r.reqID, r.txID)
			}
			if e != 0 {
				return
			}
			if strings.Join(r.args, "|") != strings.Join(tt.args, "|") || string(r.value) != tt.value {
				t.Fatalf("args %q value %q", r.args, r.value)
			}
		})
	}
}

func TestCanonical(t *testing.T) {
	long := func(n int) string { return strings.Repeat("a", n) }
	tests := []struct {
		name    string
		dom     uint32
		path    string
		special bool
		want    string
		errno   syscall.Errno
	}{
		{"root", 0, "/", false, "/", 0},
		{"absolute", 5, "/local/domain/5/data", false, "/local/domain/5/data", 0},
		{"relative", 5, "data/x", false, "/local/domain/5/data/x", 0},
		{"relative dom0", 0, "domid", false, "/local/domain/0/domid", 0},
		{"all characters", 0, "/aZ09-_", false, "/aZ09-_", 0},
		{"empty", 0, "", false, "", syscall.EINVAL},
		{"double slash", 0, "/a//b", false, "", syscall.EINVAL},
		{"trailing slash", 0, "/a/", false, "", syscall.EINVAL},
		{"relative trailing slash", 1, "a/", false, "", syscall.EINVAL},
		{"space", 0, "/a b", false, "", syscall.EINVAL},
		{"dot", 0, "/a.b", false, "", syscall.EINVAL},
		{"at inside", 0, "/a@b", false, "", syscall.EINVAL},
		{"special where not allowed", 0, "@releaseDomain", false, "", syscall.EINVAL},
		{"special", 3, "@releaseDomain", true, "@releaseDomain", 0},
		{"special introduce", 0, "@introduceDomain", true, "@introduceDomain", 0},
		{"unknown special", 0, "@other", true, "", syscall.EINVAL},
		{"special with suffix", 0, "@releaseDomain/5", true, "", syscall.EINVAL},
		{"absolute at limit", 0, "/" + long(xenstore.MaxAbsPath-1), false, "/" + long(xenstore.MaxAbsPath-1), 0},
		{"absolute past limit", 0, "/" + long(xenstore.MaxAbsPath), false, "", syscall.EINVAL},
		{"relative at limit", 7, long(xenstore.MaxRelPath), false, "/local/domain/7/" + long(xenstore.MaxRelPath), 0},
		{"relative past limit", 7, long(xenstore.MaxRelPath + 1), false, "", syscall.EINVAL},
		{"guest path below home past limit", 7, "/local/domain/7/" + long(xenstore.MaxRelPath+1), false, "", syscall.EINVAL},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, e := canonical(tt.dom, tt.path, tt.special)
			if e != tt.errno || got != tt.want {
				t.Fatalf("canonical(%d, %.40q) = %.40q, %v; want %.40q, %v", tt.dom, tt.path, got, e, tt.want, tt.errno)
			}
		})
	}
}

func TestAccess(t *testing.T) {
	p := func(s ...string) []xenstore.Perm {
		perms, err := xenstore.ParsePerms(s)
		if err != nil {
			t.Fatal(err)
		}
		return perms
	}
	tests := []struct {
		name        string
		dom         uint32
		perms       []xenstore.Perm
		read, write bool
	}{
		{"dom0 bypasses", 0, p("n5"), true, true},
		{"owner has full access", 5, p("n5"), true, true},
		{"owner despite a later entry", 5, p("n5", "n5"), true, true},
		{"others get entry 0's letter", 6, p("r5"), true, false},
		{"others none", 6, p("n5"), false, false},
		{"others write only", 6, p("w5"), false, true},
		{"listed domain", 6, p("n5", "b6"), true, true},
		{"first matching entry wins", 6, p("n5", "r6", "b6"), true, false},
		{"listed with less than the default", 6, p("b5", "n6"), false, false},
		{"unlisted domain", 7, p("n5", "b6"), false, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, w := access(tt.dom, tt.perms)
			if r != tt.read || w != tt.write {
				t.Fatalf("access = %v,%v; want %v,%v", r, w, tt.read, tt.write)
			}
		})
	}
}
