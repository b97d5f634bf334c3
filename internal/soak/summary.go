package soak

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"sync"
	"time"

	"github.com/laneim/laneim/internal/bench"
)

// Summary is what a soak run saw.
type Summary struct {
	DurationSeconds float64 `json:"duration_seconds"`
	Clients         int     `json:"clients"`
	Connected       int     `json:"connected_at_start"`
	Rate            float64 `json:"rate"`
	Seed            uint64  `json:"seed"`
	Chaos           bool    `json:"chaos"`
	// Sent counts messages (not attempts); Acknowledged those answered
	// with a SendResult; Abandoned those given up after SendAttempts or
	// at the end of the run (not acknowledged, so not lost).
	Sent         int64 `json:"messages_sent"`
	Acknowledged int64 `json:"acknowledged"`
	Abandoned    int64 `json:"abandoned"`
	// Lost: acknowledged but not in history (must be 0).
	Lost int64 `json:"lost"`
	// Unverified: acknowledged messages of conversations that could not
	// be read to the end, beyond where they were read: neither found nor
	// known lost (must be 0; see VerifyFailed).
	Unverified int64 `json:"unverified"`
	// Unanswered: requests with no answer within the bound on an open
	// connection (must be 0), and by kind.
	Unanswered       int64            `json:"unanswered"`
	UnansweredByKind map[string]int64 `json:"unanswered_by_kind,omitempty"`
	// Unavailable counts Error{UNAVAILABLE} answers (each retried).
	Unavailable       int64            `json:"unavailable_answers"`
	UnavailableByKind map[string]int64 `json:"unavailable_by_kind,omitempty"`
	// Refused counts other Error answers by "kind:CODE".
	Refused map[string]int64 `json:"refused,omitempty"`
	// Dropped counts requests whose connection ended before the answer.
	Dropped     int64 `json:"dropped_requests"`
	Disconnects int64 `json:"disconnects"`
	Reconnects  int64 `json:"reconnects"`
	GaveUp      int64 `json:"gave_up_connecting"`
	// Conflicts counts acks of one client_msg_id that named another seq.
	Conflicts    int64          `json:"idempotency_conflicts"`
	Faults       map[string]int `json:"faults"`
	FaultsTotal  int            `json:"faults_total"`
	SendP50Ms    float64        `json:"send_p50_ms"`
	SendP99Ms    float64        `json:"send_p99_ms"`
	SendMaxMs    float64        `json:"send_max_ms"`
	VerifyFailed int64          `json:"verify_failed_conversations"`
	// VerifySeconds is how long the final check of history took.
	VerifySeconds float64 `json:"verify_seconds"`
	Machine       string  `json:"machine"`
}

// OK reports whether every acknowledged message was found in history and
// every request was answered.
func (s *Summary) OK() bool { return s.Lost == 0 && s.Unverified == 0 && s.Unanswered == 0 }

func (r *run) summary(d time.Duration, clients int, lost, unverified, verifyFailed int64) *Summary {
	s := &Summary{
		DurationSeconds:   d.Seconds(),
		Clients:           clients,
		Rate:              r.cfg.Rate,
		Seed:              r.cfg.Seed,
		Chaos:             r.cfg.Chaos,
		Sent:              r.sent.Load(),
		Acknowledged:      r.ledger.Acknowledged(),
		Abandoned:         r.abandoned.Load(),
		Lost:              lost,
		Unverified:        unverified,
		Unanswered:        r.tally.Count("", Unanswered),
		UnansweredByKind:  r.tally.ByKind(Unanswered),
		Unavailable:       r.tally.Count("", Unavailable),
		UnavailableByKind: r.tally.ByKind(Unavailable),
		Refused:           r.tally.Refusals(),
		Dropped:           r.tally.Count("", Dropped),
		Disconnects:       r.disconnects.Load(),
		Reconnects:        r.reconnects.Load(),
		GaveUp:            r.gaveUp.Load(),
		Conflicts:         r.ledger.Conflicts(),
		Faults:            map[string]int{},
		SendP50Ms:         ms(r.lat.quantile(0.50)),
		SendP99Ms:         ms(r.lat.quantile(0.99)),
		SendMaxMs:         ms(r.lat.quantile(1)),
		VerifyFailed:      verifyFailed,
		Machine:           bench.Machine(),
	}
	return s
}

// Text renders the summary for people.
func (s *Summary) Text(w io.Writer) {
	verdict := "OK"
	if !s.OK() {
		verdict = "FAILED"
	}
	fmt.Fprintf(w, `laneIM soak: %s
  ran              %.0fs, %d clients (%d connected at start), %.0f msg/s, chaos %v, seed %d
  messages         %d sent, %d acknowledged, %d abandoned
  lost             %d   (acknowledged, not found in history)
  unverified       %d   (acknowledged, in %d conversations that could not be read to the end, beyond where they were read)
  unanswered       %d %s
  unavailable      %d answers %s
  refused          %s
  connections      %d disconnects, %d reconnects, %d dropped requests, %d gave up
  faults           %d %s
  send latency     p50 %.1f ms   p99 %.1f ms   max %.1f ms (first attempt to SendResult)
  verify           %.1fs; %d idempotency conflicts
  machine          %s
`, verdict, s.DurationSeconds, s.Clients, s.Connected, s.Rate, s.Chaos, s.Seed,
		s.Sent, s.Acknowledged, s.Abandoned,
		s.Lost, s.Unverified, s.VerifyFailed,
		s.Unanswered, kv(s.UnansweredByKind),
		s.Unavailable, kv(s.UnavailableByKind),
		kv(s.Refused),
		s.Disconnects, s.Reconnects, s.Dropped, s.GaveUp,
		s.FaultsTotal, kv(s.Faults),
		s.SendP50Ms, s.SendP99Ms, s.SendMaxMs,
		s.VerifySeconds, s.Conflicts, s.Machine)
}

// JSON renders the summary as one line of JSON.
func (s *Summary) JSON() string {
	b, _ := json.Marshal(s)
	return string(b)
}

func kv[V int | int64](m map[string]V) string {
	if len(m) == 0 {
		return "-"
	}
	var parts []string
	for _, k := range sortedKeys(m) {
		parts = append(parts, fmt.Sprintf("%s=%d", k, m[k]))
	}
	return "(" + strings.Join(parts, " ") + ")"
}

// latencies keeps every send latency (a soak sends a few hundred
// thousand messages at most).
type latencies struct {
	mu sync.Mutex
	d  []time.Duration
}

func (l *latencies) add(d time.Duration) {
	l.mu.Lock()
	l.d = append(l.d, d)
	l.mu.Unlock()
}

// quantile returns the q-quantile (0 < q <= 1), 0 without samples.
func (l *latencies) quantile(q float64) time.Duration {
	l.mu.Lock()
	defer l.mu.Unlock()
	return bench.Quantile(l.d, q)
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
