package bench

import (
	"bytes"
	"math"
	"runtime"
	"strings"
	"testing"
	"time"
)

func TestBusyBetween(t *testing.T) {
	tests := []struct {
		name        string
		a, b        machineCPU
		busy, steal float64
	}{
		{"half busy", machineCPU{total: 100, busy: 10}, machineCPU{total: 300, busy: 110}, 0.5, 0},
		{"some stolen", machineCPU{total: 0, busy: 0, steal: 0}, machineCPU{total: 10, busy: 6, steal: 2}, 0.6, 0.2},
		{"no time passed", machineCPU{total: 50, busy: 5}, machineCPU{total: 50, busy: 5}, 0, 0},
		{"not measured", machineCPU{}, machineCPU{}, 0, 0},
	}
	for _, tt := range tests {
		busy, steal := busyBetween(tt.a, tt.b)
		if math.Abs(busy-tt.busy) > 1e-9 || math.Abs(steal-tt.steal) > 1e-9 {
			t.Errorf("%s: busy %v, steal %v; want %v, %v", tt.name, busy, steal, tt.busy, tt.steal)
		}
	}
}

// TestReadMachineCPU: on Linux the machine's CPU time is read, and a
// goroutine spinning for a while shows as busy time.
func TestReadMachineCPU(t *testing.T) {
	a, ok := readMachineCPU()
	if runtime.GOOS != "linux" {
		if ok {
			t.Fatalf("read %+v where there is no /proc/stat", a)
		}
		t.Skip("no /proc/stat here: the machine's CPU is not measured")
	}
	if !ok {
		t.Fatal("/proc/stat not read")
	}
	for end := time.Now().Add(200 * time.Millisecond); time.Now().Before(end); {
	}
	b, ok := readMachineCPU()
	if !ok {
		t.Fatal("/proc/stat not read the second time")
	}
	busy, steal := busyBetween(a, b)
	if b.total <= a.total || b.busy <= a.busy || busy <= 0 || busy > 1 || steal < 0 || steal > 1 {
		t.Fatalf("from %+v to %+v: busy %v, steal %v; want busy time to grow, shares within [0, 1]", a, b, busy, steal)
	}
}

// TestBusyInText: a run's text says how busy the machine was, and warns
// when it was saturated; a run that did not measure it says nothing.
func TestBusyInText(t *testing.T) {
	tests := []struct {
		busy          float64
		want, notWant string
	}{
		{0.95, "95 % of its CPU busy during the run (3 % stolen)", ""},
		{0.5, "50 % of its CPU busy", "latency may include waits for a core"},
		{0, "machine          m\n", "busy"},
	}
	for _, tt := range tests {
		var b bytes.Buffer
		(&Result{Machine: "m", MachineBusy: tt.busy, MachineSteal: 0.03}).Text(&b)
		out := b.String()
		if !strings.Contains(out, tt.want) || tt.notWant != "" && strings.Contains(out, tt.notWant) {
			t.Errorf("busy %v: text\n%s\nwant %q, not %q", tt.busy, out, tt.want, tt.notWant)
		}
		if saturated := tt.busy >= 0.9; saturated != strings.Contains(out, "latency may include waits for a core") {
			t.Errorf("busy %v: the note on waits for a core shown = %v, want %v", tt.busy, !saturated, saturated)
		}
	}
}
