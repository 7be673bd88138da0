package xenstore

import (
	"fmt"
	"testing"
)

func TestWatchQueue(t *testing.T) {
	newW := func() *Watch {
		return &Watch{path: "/w", token: "t", notify: make(chan struct{}, 1)}
	}
	ev := func(p string) Event { return Event{Path: p, Token: "t"} }
	tests := []struct {
		name string
		in   []Event
		want []Event
	}{
		{"in order", []Event{ev("/w/a"), ev("/w/b")}, []Event{ev("/w/a"), ev("/w/b")}},
		{"identical waiting events merge", []Event{ev("/w/a"), ev("/w/b"), ev("/w/a")}, []Event{ev("/w/a"), ev("/w/b")}},
		{"overflow collapses to the watched path", func() []Event {
			var in []Event
			for i := range MaxQueuedEvents + 1 {
				in = append(in, ev(fmt.Sprintf("/w/%d", i)))
			}
			return in
		}(), []Event{ev("/w")}},
		{"events after a collapse queue up again", func() []Event {
			var in []Event
			for i := range MaxQueuedEvents + 1 {
				in = append(in, ev(fmt.Sprintf("/w/%d", i)))
			}
			return append(in, ev("/w/x"))
		}(), []Event{ev("/w"), ev("/w/x")}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w := newW()
			for _, e := range tt.in {
				w.enqueue(e)
			}
			if fmt.Sprint(w.queue) != fmt.Sprint(tt.want) {
				t.Fatalf("queue %v, want %v", w.queue, tt.want)
			}
			select {
			case <-w.notify:
			default:
				t.Fatal("no notification")
			}
		})
	}
}

func TestCovers(t *testing.T) {
	tests := []struct {
		watch, event string
		want         bool
	}{
		{"/a", "/a", true},
		{"/a", "/a/b", true},
		{"/a", "/ab", false},
		{"/a/b", "/a", false},
		{"/", "/x/y", true},
		{"data", "data/x", true},
		{"data", "database", false},
		{"@releaseDomain", "@releaseDomain", true},
		{"@releaseDomain", "@releaseDomain/5", true},
		{"@releaseDomain", "@introduceDomain", false},
	}
	for _, tt := range tests {
		if got := covers(tt.watch, tt.event); got != tt.want {
			t.Errorf("covers(%q, %q) = %v", tt.watch, tt.event, got)
		}
	}
}
