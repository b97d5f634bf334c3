package main

import (
	"testing"
	"time"
)

// TestAbuseOnDevCluster runs `laneim abuse` as a user does, with the
// catch-up flood, against the dev cluster it starts: the flood's room is
// filled, its readers are served pages, the honest pair loses nothing
// and has its catch-up reads measured, and each phase reports what it
// cost the cluster. It asserts no latency: machines here are shared
// (docs/performance.md has figures).
func TestAbuseOnDevCluster(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary and starts a dev cluster")
	}
	bin := buildLaneim(t)
	r := runLaneim(t, bin, 3*time.Minute, nil, 0, "abuse", "--attacks", "catchup-flood", "--baseline", "2s", "--per-attack", "3s", "--json")
	var phases []struct {
		Attack  string  `json:"attack"`
		Samples int     `json:"samples"`
		Lost    int     `json:"honest_lost"`
		Served  int64   `json:"attacker_served"`
		Cores   float64 `json:"server_cpu_cores"`
		RSS     int64   `json:"server_rss_peak_bytes"`
		Reads   int     `json:"honest_sync_samples"`
		Refused int     `json:"honest_sync_refused"`
	}
	lastJSON(t, "abuse", r, &phases)
	if len(phases) != 2 || phases[0].Attack != "" || phases[1].Attack != "catchup-flood" {
		t.Fatalf("phases %+v: want the baseline, then catchup-flood", phases)
	}
	for _, ph := range phases {
		if ph.Samples == 0 || ph.Lost != 0 {
			t.Errorf("%q: %d honest samples, %d lost: want samples and none lost", ph.Attack, ph.Samples, ph.Lost)
		}
		if ph.Reads+ph.Refused == 0 {
			t.Errorf("%q: no catch-up read of the honest pair measured", ph.Attack)
		}
		if ph.Cores <= 0 || ph.RSS <= 0 {
			t.Errorf("%q: %.2f cores, %d bytes: want the cluster's usage read from its /metrics", ph.Attack, ph.Cores, ph.RSS)
		}
	}
	if phases[1].Served == 0 {
		t.Errorf("the flood's readers were served no page of its room: %+v\n%s", phases[1], r.stderr)
	}
}
