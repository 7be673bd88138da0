package deadline

import (
	"sync/atomic"
	"testing"
	"time"
)

func TestSet(t *testing.T) {
	tests := []struct {
		name string
		at   func() time.Time
		want bool // passed right after Set
	}{
		{"zero disarms", func() time.Time { return time.Time{} }, false},
		{"past passes at once", func() time.Time { return time.Now().Add(-time.Second) }, true},
		{"far future stays armed", func() time.Time { return time.Now().Add(time.Hour) }, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			d := New()
			defer d.Stop()
			d.Set(tc.at())
			if got := Passed(d.Wait()); got != tc.want {
				t.Fatalf("passed = %v, want %v", got, tc.want)
			}
		})
	}
}

func TestFiresAndRearms(t *testing.T) {
	d := New()
	defer d.Stop()
	var fired atomic.Int32
	d.OnExpire(func() { fired.Add(1) })
	d.Set(time.Now().Add(10 * time.Millisecond))
	select {
	case <-d.Wait():
	case <-time.After(10 * time.Second):
		t.Fatal("deadline 10ms ahead did not pass within 10s")
	}
	// OnExpire runs after the channel is closed, on the timer goroutine.
	for i := 0; fired.Load() == 0 && i < 1000; i++ {
		time.Sleep(10 * time.Millisecond)
	}
	if n := fired.Load(); n != 1 {
		t.Fatalf("OnExpire ran %d times, want 1", n)
	}
	// Clearing after expiry gives a fresh, open channel.
	d.Set(time.Time{})
	if Passed(d.Wait()) {
		t.Fatal("cleared deadline still passed")
	}
	// Moving an armed deadline further away keeps it open.
	d.Set(time.Now().Add(20 * time.Millisecond))
	d.Set(time.Now().Add(time.Hour))
	time.Sleep(60 * time.Millisecond)
	if Passed(d.Wait()) {
		t.Fatal("deadline moved an hour ahead passed early")
	}
	// Moving it into the past passes at once and calls OnExpire again.
	d.Set(time.Now().Add(-time.Millisecond))
	if !Passed(d.Wait()) || fired.Load() != 2 {
		t.Fatalf("past deadline: passed %v, OnExpire calls %d; want true, 2", Passed(d.Wait()), fired.Load())
	}
}

func TestStop(t *testing.T) {
	d := New()
	d.Set(time.Now().Add(20 * time.Millisecond))
	d.Stop()
	time.Sleep(60 * time.Millisecond)
	if Passed(d.Wait()) {
		t.Fatal("stopped deadline passed")
	}
}
