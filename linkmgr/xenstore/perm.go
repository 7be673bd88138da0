package xenstore

import (
	"fmt"
	"strconv"
)

// MaxDomID is the largest domain id accepted in permissions and
// GET_DOMAIN_PATH.
const MaxDomID = 65535

// Perm is one entry of a node's permission list. The first entry of a list
// names the owner and, through its Read and Write bits, the access of every
// domain not listed later; later entries grant access to one domain each.
type Perm struct {
	Dom   uint32
	Read  bool
	Write bool
}

// String returns the wire form: "n5", "r5", "w5" or "b5".
func (p Perm) String() string {
	return string(p.letter()) + strconv.FormatUint(uint64(p.Dom), 10)
}

func (p Perm) letter() byte {
	switch {
	case p.Read && p.Write:
		return 'b'
	case p.Read:
		return 'r'
	case p.Write:
		return 'w'
	}
	return 'n'
}

// ParsePerm parses the wire form of a permission entry: one of the letters
// n, r, w, b followed by a plain decimal domid (no sign, no prefix, no leading
// zeros) of at most MaxDomID. Anything else gives an error wrapping ErrBadPerm.
func ParsePerm(s string) (Perm, error) {
	if len(s) < 2 {
		return Perm{}, fmt.Errorf("%w: %q", ErrBadPerm, s)
	}
	var p Perm
	switch s[0] {
	case 'n':
	case 'r':
		p.Read = true
	case 'w':
		p.Write = true
	case 'b':
		p.Read, p.Write = true, true
	default:
		return Perm{}, fmt.Errorf("%w: %q", ErrBadPerm, s)
	}
	dom, ok := parseDecimal(s[1:], MaxDomID)
	if !ok {
		return Perm{}, fmt.Errorf("%w: %q", ErrBadPerm, s)
	}
	p.Dom = dom
	return p, nil
}

// parseDecimal parses a plain unsigned decimal number of at most max: digits
// only, no leading zeros except "0" itself.
func parseDecimal(s string, max uint64) (uint32, bool) {
	if s == "" || len(s) > 10 || (len(s) > 1 && s[0] == '0') {
		return 0, false
	}
	var v uint64
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < '0' || c > '9' {
			return 0, false
		}
		v = v*10 + uint64(c-'0')
	}
	if v > max {
		return 0, false
	}
	return uint32(v), true
}

// ParseDomID parses a decimal domain id (0..MaxDomID) as sent on the wire.
func ParseDomID(s string) (uint32, bool) { return parseDecimal(s, MaxDomID) }

// ParseTxID parses a decimal transaction id as sent on the wire: a non-zero
// uint32.
func ParseTxID(s string) (uint32, bool) {
	v, ok := parseDecimal(s, 1<<32-1)
	return v, ok && v != 0
}
