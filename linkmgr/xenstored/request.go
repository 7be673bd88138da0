package xenstored

import (
	"bytes"
	"strconv"
	"strings"
	"syscall"
	"unicode/utf8"

	"idcfs/linkmgr/xenstore"
)

// request is a decoded and checked client request.
type request struct {
	op    xenstore.Op
	reqID uint32
	txID  uint32
	args  []string // zero-terminated string arguments
	value []byte   // WRITE only: the bytes after the path
}

// privileged lists the types only a privileged connection may send.
var privileged = map[xenstore.Op]bool{
	xenstore.OpControl:            true,
	xenstore.OpIntroduce:          true,
	xenstore.OpRelease:            true,
	xenstore.OpIsDomainIntroduced: true,
	xenstore.OpResume:             true,
	xenstore.OpSetTarget:          true,
	xenstore.OpSetFeature:         true,
	xenstore.OpGetQuota:           true,
	xenstore.OpSetQuota:           true,
}

// argCount is the number of zero-terminated strings each supported type
// carries; -1 means "at least two" (SET_PERMS), -2 "not checked".
var argCount = map[xenstore.Op]int{
	xenstore.OpDirectory:          1,
	xenstore.OpRead:               1,
	xenstore.OpGetPerms:           1,
	xenstore.OpWatch:              2,
	xenstore.OpUnwatch:            2,
	xenstore.OpTransactionStart:   -2,
	xenstore.OpTransactionEnd:     1,
	xenstore.OpIntroduce:          3,
	xenstore.OpRelease:            1,
	xenstore.OpGetDomainPath:      1,
	xenstore.OpWrite:              0, // parsed apart
	xenstore.OpMkdir:              1,
	xenstore.OpRm:                 1,
	xenstore.OpSetPerms:           -1,
	xenstore.OpIsDomainIntroduced: 1,
	xenstore.OpResume:             1,
	xenstore.OpSetTarget:          2,
	xenstore.OpResetWatches:       -2,
	xenstore.OpDirectoryPart:      2,
}

// parseRequest checks a message from a client of domain dom and splits its
// payload. The errno is what the client gets back: ENOSYS for unknown or
// unsupported types, EACCES for privileged types from unprivileged domains,
// EINVAL for malformed payloads.
func parseRequest(m *xenstore.Message, dom uint32) (request, syscall.Errno) {
	r := request{op: m.Op, reqID: m.ReqID, txID: m.TxID}
	if !m.Op.Known() || m.Op == xenstore.OpWatchEvent || m.Op == xenstore.OpError {
		return r, syscall.ENOSYS
	}
	if privileged[m.Op] && dom != 0 {
		return r, syscall.EACCES
	}
	n, ok := argCount[m.Op]
	if !ok {
		return r, syscall.ENOSYS
	}
	p := m.Payload
	switch {
	case m.Op == xenstore.OpWrite:
		i := bytes.IndexByte(p, 0)
		if i < 0 || !utf8.Valid(p[:i]) {
			return r, syscall.EINVAL
		}
		r.args = []string{string(p[:i])}
		r.value = bytes.Clone(p[i+1:])
	case n == -2:
	case n == 1:
		s, err := xenstore.ParseString(p)
		if err != nil {
			return r, syscall.EINVAL
		}
		r.args = []string{s}
	default:
		args, err := xenstore.SplitStrings(p)
		if err != nil || (n > 0 && len(args) != n) || (n == -1 && len(args) < 2) {
			return r, syscall.EINVAL
		}
		r.args = args
	}
	if m.Op == xenstore.OpTransactionEnd && r.args[0] != "T" && r.args[0] != "F" {
		return r, syscall.EINVAL
	}
	return r, 0
}

// special reports whether path is one of the special watch paths.
func special(path string) bool {
	return path == xenstore.IntroduceDomain || path == xenstore.ReleaseDomain
}

// homeOf returns the home path of a domain.
func homeOf(dom uint32) string {
	return "/local/domain/" + strconv.FormatUint(uint64(dom), 10)
}

// canonical checks a path sent by domain dom and returns its absolute form.
// Relative paths are taken relative to the domain's home. Special paths are
// returned as they are when allowSpecial is set, else rejected. Bad syntax
// or length gives EINVAL.
func canonical(dom uint32, path string, allowSpecial bool) (string, syscall.Errno) {
	if path == "" {
		return "", syscall.EINVAL
	}
	if path[0] == '@' {
		if allowSpecial && special(path) {
			return path, 0
		}
		return "", syscall.EINVAL
	}
	abs := path
	if path[0] != '/' {
		if len(path) > xenstore.MaxRelPath {
			return "", syscall.EINVAL
		}
		abs = homeOf(dom) + "/" + path
	}
	if !validPath(abs) {
		return "", syscall.EINVAL
	}
	// An unprivileged domain's paths below its home count from there, as
	// the C daemon counts them.
	n := len(abs)
	if home := homeOf(dom) + "/"; dom != 0 && strings.HasPrefix(abs, home) {
		n -= len(home)
		if n > xenstore.MaxRelPath {
			return "", syscall.EINVAL
		}
	}
	if n > xenstore.MaxAbsPath {
		return "", syscall.EINVAL
	}
	return abs, 0
}

// validPath checks the syntax of an absolute path: characters
// A-Z a-z 0-9 - _ /, no "//", no trailing "/" except the root.
func validPath(p string) bool {
	if p == "/" {
		return true
	}
	if len(p) < 2 || p[0] != '/' || p[len(p)-1] == '/' {
		return false
	}
	prev := byte(0)
	for i := 0; i < len(p); i++ {
		c := p[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c == '-', c == '_':
		case c == '/':
			if prev == '/' {
				return false
			}
		default:
			return false
		}
		prev = c
	}
	return true
}
