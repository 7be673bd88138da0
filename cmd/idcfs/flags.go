package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"strconv"
	"strings"

	"github.com/sirupsen/logrus"

	"idcfs/vchan"
)

// newFlagSet returns a flag set that reports errors instead of exiting and
// prints its usage to w.
func newFlagSet(name, synopsis string, w io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(w)
	fs.Usage = func() {
		fmt.Fprintf(w, "usage: idcfs %s\n\nflags:\n", synopsis)
		fs.PrintDefaults()
	}
	return fs
}

// errHelp is returned when the user asked for -h: usage was printed and the
// command should end successfully.
var errHelp = errors.New("help requested")

// parseInterspersed parses flags that may appear before, between or after
// the positional arguments ("sim 1 2 --dir D" as well as "sim --dir D 1 2"),
// and returns the positional arguments. A "--" ends flag parsing.
func parseInterspersed(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return nil, errHelp
			}
			return nil, usageErrorf("%s: %v", fs.Name(), err)
		}
		rest := fs.Args()
		if len(rest) == 0 {
			return pos, nil
		}
		if len(args) > len(rest) && args[len(args)-len(rest)-1] == "--" {
			return append(pos, rest...), nil
		}
		pos = append(pos, rest[0])
		args = rest[1:]
	}
}

// parseDomID parses a domain id in 0..65534 (DOMID_FIRST_RESERVED is 0x7FF0
// on Xen, but the simulated host accepts any id below 65535).
func parseDomID(s string) (vchan.DomID, error) {
	n, err := strconv.ParseUint(s, 10, 16)
	if err != nil || n == 0xFFFF {
		return 0, fmt.Errorf("bad domain id %q", s)
	}
	return vchan.DomID(n), nil
}

// parseDomIDs parses a list of distinct domain ids.
func parseDomIDs(args []string) ([]vchan.DomID, error) {
	seen := make(map[vchan.DomID]bool)
	var doms []vchan.DomID
	for _, a := range args {
		d, err := parseDomID(a)
		if err != nil {
			return nil, usageErrorf("%v", err)
		}
		if seen[d] {
			return nil, usageErrorf("domain %d given twice", d)
		}
		seen[d] = true
		doms = append(doms, d)
	}
	return doms, nil
}

// domainSockets is the repeatable --domain N=PATH flag of `idcfs xenstored`.
type domainSockets []domainSocket

type domainSocket struct {
	dom  vchan.DomID
	path string
}

func (d *domainSockets) String() string {
	var parts []string
	for _, s := range *d {
		parts = append(parts, fmt.Sprintf("%d=%s", s.dom, s.path))
	}
	return strings.Join(parts, ",")
}

func (d *domainSockets) Set(v string) error {
	num, path, ok := strings.Cut(v, "=")
	if !ok || path == "" {
		return fmt.Errorf("want N=PATH, got %q", v)
	}
	dom, err := parseDomID(num)
	if err != nil {
		return err
	}
	*d = append(*d, domainSocket{dom: dom, path: path})
	return nil
}

// flagGiven reports whether the flag name was set on the command line.
func flagGiven(fs *flag.FlagSet, name string) bool {
	given := false
	fs.Visit(func(f *flag.Flag) {
		if f.Name == name {
			given = true
		}
	})
	return given
}

// logLevelFlag registers --log-level on fs.
func logLevelFlag(fs *flag.FlagSet) *string {
	return fs.String("log-level", "info", "log level: debug, info, warn, error")
}

// newLogger builds the root log entry. Only this package configures logrus;
// every other package gets the entry (or a child of it) passed in.
func newLogger(level string, w io.Writer) (*logrus.Entry, error) {
	lvl, err := logrus.ParseLevel(level)
	if err != nil {
		return nil, usageErrorf("--log-level: %v", err)
	}
	l := logrus.New()
	l.SetOutput(w)
	l.SetLevel(lvl)
	l.SetFormatter(&logrus.TextFormatter{FullTimestamp: true, TimestampFormat: "15:04:05.000000"})
	return logrus.NewEntry(l), nil
}
