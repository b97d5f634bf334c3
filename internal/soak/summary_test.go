package soak

import (
	"encoding/json"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestQuantile(t *testing.T) {
	for _, tc := range []struct {
		name    string
		samples []time.Duration
		q       float64
		want    time.Duration
	}{
		{"empty", nil, 0.5, 0},
		{"one", []time.Duration{7}, 0.99, 7},
		{"median of 1..100", seq(100), 0.5, 50},
		{"p99 of 1..100", seq(100), 0.99, 99},
		{"max", seq(100), 1, 100},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var l latencies
			for _, d := range tc.samples {
				l.add(d)
			}
			if got := l.quantile(tc.q); got != tc.want {
				t.Fatalf("quantile(%v) = %v, want %v", tc.q, got, tc.want)
			}
		})
	}
}

func seq(n int) []time.Duration {
	var out []time.Duration
	for i := n; i >= 1; i-- { // unsorted on purpose
		out = append(out, time.Duration(i))
	}
	return out
}

func TestSummaryVerdict(t *testing.T) {
	for _, tc := range []struct {
		name                         string
		lost, unverified, unanswered int64
		ok                           bool
	}{
		{"clean", 0, 0, 0, true},
		{"lost", 1, 0, 0, false},
		{"unverified", 0, 3, 0, false},
		{"unanswered", 0, 0, 2, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := &Summary{Lost: tc.lost, Unverified: tc.unverified, Unanswered: tc.unanswered, Faults: map[string]int{"kill:routing": 1}}
			if s.OK() != tc.ok {
				t.Fatalf("OK() = %v, want %v", s.OK(), tc.ok)
			}
			var b strings.Builder
			s.Text(&b)
			if strings.Contains(b.String(), "soak: OK") != tc.ok || !strings.Contains(b.String(), "kill:routing=1") {
				t.Fatalf("text:\n%s", b.String())
			}
			var back map[string]any
			if err := json.Unmarshal([]byte(s.JSON()), &back); err != nil || back["lost"] != float64(tc.lost) {
				t.Fatalf("JSON %s: %v", s.JSON(), err)
			}
		})
	}
}

func TestValidateLoopbackOnly(t *testing.T) {
	for _, tc := range []struct {
		name    string
		targets []string
		redis   string
		ok      bool
	}{
		{"defaults", nil, "127.0.0.1:17001", true},
		{"localhost and ::1", []string{"ws://localhost:1/ws", "ws://[::1]:2/ws"}, "[::1]:3", true},
		{"remote comet", []string{"ws://10.0.0.1:18081/ws"}, "127.0.0.1:17001", false},
		{"remote redis", nil, "127.0.0.1:17001,example.com:6379", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := Config{Targets: tc.targets, Redis: tc.redis, Secret: "s"}
			c.setDefaults()
			if err := c.Validate(); (err == nil) != tc.ok {
				t.Fatalf("Validate() = %v, want ok %v", err, tc.ok)
			}
		})
	}
}

// TestSplitUnread: of a conversation that could not be read to the end,
// acknowledged messages beyond where it was read are unverified, not lost
// (outside fault check: they were counted lost).
func TestSplitUnread(t *testing.T) {
	c := Conversation{ID: "dm:a:b", Min: 3, Max: 9}
	missing := []Missing{{Ack: Ack{Seq: 4}}, {Ack: Ack{Seq: 6}}, {Ack: Ack{Seq: 7}}, {Ack: Ack{Seq: 9}}}
	for _, tc := range []struct {
		name         string
		history      []Stored
		lost, unread []uint64
	}{
		{"nothing read", nil, nil, []uint64{4, 6, 7, 9}},
		{"read to 6", []Stored{{Seq: 3}, {Seq: 5}, {Seq: 6}}, []uint64{4, 6}, []uint64{7, 9}},
		{"read to the end", []Stored{{Seq: 9}}, []uint64{4, 6, 7, 9}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			lost, unread := splitUnread(missing, readTo(c, tc.history))
			if s := seqsOf(lost); !slices.Equal(s, tc.lost) {
				t.Errorf("lost %v, want %v", s, tc.lost)
			}
			if s := seqsOf(unread); !slices.Equal(s, tc.unread) {
				t.Errorf("unread %v, want %v", s, tc.unread)
			}
		})
	}
}

func seqsOf(ms []Missing) []uint64 {
	var out []uint64
	for _, m := range ms {
		out = append(out, m.Ack.Seq)
	}
	return out
}
