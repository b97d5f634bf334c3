package bench

import (
	"fmt"

	"github.com/prometheus/procfs"
)

// machineCPU is the CPU time of the whole machine so far, all its cores
// together, in seconds: busy (neither idle, waiting for I/O, nor stolen)
// and stolen (given by the hypervisor to other machines).
type machineCPU struct {
	total, busy, steal float64
}

// readMachineCPU reads the machine's CPU time from /proc/stat; ok is
// false where there is none.
func readMachineCPU() (m machineCPU, ok bool) {
	fs, err := procfs.NewDefaultFS()
	if err != nil {
		return m, false
	}
	st, err := fs.Stat()
	if err != nil {
		return m, false
	}
	c := st.CPUTotal // guest time is counted in user time already
	m.total = c.User + c.Nice + c.System + c.Idle + c.Iowait + c.IRQ + c.SoftIRQ + c.Steal
	m.busy = m.total - c.Idle - c.Iowait - c.Steal
	m.steal = c.Steal
	return m, m.total > 0
}

// busyBetween is the share of the machine's CPU time from a to b that
// was busy, and the share stolen; both 0 when nothing was measured.
func busyBetween(a, b machineCPU) (busy, steal float64) {
	d := b.total - a.total
	if d <= 0 {
		return 0, 0
	}
	return (b.busy - a.busy) / d, (b.steal - a.steal) / d
}

// saturated is the share of the machine busy from which a run's latency
// may be the machine's as much as laneIM's: its processes wait for a
// core. (Busy time includes the Go schedulers' spinning for work, so a
// busy machine is not always a saturated one.)
const saturated = 0.9

// busyText says how busy the machine was during a run, or nothing when
// that was not measured.
func busyText(r *Result) string {
	if r.MachineBusy <= 0 {
		return ""
	}
	return fmt.Sprintf("; %.0f %% of its CPU busy during the run (%.0f %% stolen)", 100*r.MachineBusy, 100*r.MachineSteal)
}

// busyNote warns, on a line of its own, that the machine was saturated.
func busyNote(r *Result) string {
	if r.MachineBusy < saturated {
		return ""
	}
	return fmt.Sprintf("  note             the machine was %.0f %% busy: latency may include waits for a core, and then measures the machine as much as laneIM\n", 100*r.MachineBusy)
}
