package fsnode

import (
	"fmt"
	"math"
	"strconv"
	"strings"

	"idcfs/vchan"
)

// parseUint parses a canonical decimal name: digits only, no sign, no
// leading zeros (so each number has exactly one name), at most max.
func parseUint(name string, max uint64) (uint64, bool) {
	if name == "" || len(name) > 20 {
		return 0, false
	}
	if len(name) > 1 && name[0] == '0' {
		return 0, false
	}
	for i := 0; i < len(name); i++ {
		if name[i] < '0' || name[i] > '9' {
			return 0, false
		}
	}
	v, err := strconv.ParseUint(name, 10, 64)
	if err != nil || v > max {
		return 0, false
	}
	return v, true
}

// parsePort parses a listen/ or connect/<domid>/ entry name.
func parsePort(name string) (uint32, bool) {
	v, ok := parseUint(name, math.MaxUint32)
	return uint32(v), ok
}

// parseDomID parses a connect/ or links/ entry name.
func parseDomID(name string) (vchan.DomID, bool) {
	v, ok := parseUint(name, math.MaxUint16)
	return vchan.DomID(v), ok
}

// parseConnID parses a conn/ entry name.
func parseConnID(name string) (uint64, bool) {
	return parseUint(name, math.MaxUint64)
}

// ctlCmd is a command written to conn/<id>/ctl.
type ctlCmd int

const (
	ctlShutdown ctlCmd = iota + 1 // CloseWrite: the peer reads EOF
	ctlHangup                     // Reset: both directions die at once
)

func (c ctlCmd) String() string {
	switch c {
	case ctlShutdown:
		return "shutdown"
	case ctlHangup:
		return "hangup"
	}
	return fmt.Sprintf("ctlCmd(%d)", int(c))
}

// maxCtlWrite bounds one write to a ctl file; commands are a word each.
const maxCtlWrite = 4096

// parseCtl parses what was written to a ctl file: commands separated by
// newlines, surrounding blanks ignored, empty lines skipped (so `echo >`
// alone is harmless). An unknown command rejects the whole write, so that
// nothing runs from a write that is partly wrong.
func parseCtl(b []byte) ([]ctlCmd, error) {
	if len(b) > maxCtlWrite {
		return nil, fmt.Errorf("ctl write of %d bytes exceeds %d", len(b), maxCtlWrite)
	}
	var cmds []ctlCmd
	for line := range strings.SplitSeq(string(b), "\n") {
		switch w := strings.TrimSpace(line); w {
		case "":
		case "shutdown":
			cmds = append(cmds, ctlShutdown)
		case "hangup":
			cmds = append(cmds, ctlHangup)
		default:
			return nil, fmt.Errorf("unknown ctl command %q", w)
		}
	}
	return cmds, nil
}
