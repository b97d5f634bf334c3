package soak

import (
	"context"
	"errors"
	"sort"
	"sync"

	"github.com/laneim/laneim/gateways/comet/client"
	"github.com/laneim/laneim/proto/clientpb"
)

// Outcome is what became of one request (Login, JoinRoom, Send, Sync).
type Outcome int

// The outcomes of a request.
const (
	// Answered: the expected answer came.
	Answered Outcome = iota
	// Unavailable: an Error{UNAVAILABLE} came; the client retries.
	Unavailable
	// Refused: any other Error came.
	Refused
	// Unanswered: neither an answer nor an Error came within the bound
	// while the connection stayed open. The soak must see none.
	Unanswered
	// Dropped: the connection ended before the answer (closed by the
	// server, or broken); the client reconnects and goes on. Not a fault
	// of the server's answering.
	Dropped
	// Aborted: the soak itself stopped waiting (its run ended).
	Aborted
)

var outcomeNames = [...]string{"answered", "unavailable", "refused", "unanswered", "dropped", "aborted"}

func (o Outcome) String() string {
	if int(o) < len(outcomeNames) {
		return outcomeNames[o]
	}
	return "unknown"
}

// Classify tells what became of a request from the error its wait
// returned (nil: answered), whether the soak's own run had ended
// (runErr, the run context's Err), and whether the connection had closed
// by the time the wait ended (connClosed, see waitClosed).
//
// A wait that ran out its bound on a connection still open is Unanswered;
// one whose connection ended is Dropped, whatever the error says (a
// connection closed by the server is not "unanswered").
func Classify(err error, runErr error, connClosed bool) Outcome {
	if err == nil {
		return Answered
	}
	var e *client.Error
	if errors.As(err, &e) {
		if e.Code == clientpb.Error_UNAVAILABLE {
			return Unavailable
		}
		return Refused
	}
	if runErr != nil {
		return Aborted
	}
	if connClosed {
		return Dropped
	}
	if errors.Is(err, context.DeadlineExceeded) {
		return Unanswered
	}
	return Dropped
}

// Request kinds, as counted.
const (
	KindLogin = "login"
	KindJoin  = "join"
	KindSend  = "send"
	KindSync  = "sync"
)

// Tally counts request outcomes by kind, and refusals by error code. It
// is safe for concurrent use.
type Tally struct {
	mu      sync.Mutex
	counts  map[string]map[Outcome]int64
	refused map[string]int64
}

// Add counts one request of kind with outcome; code names the Error of a
// refused request.
func (t *Tally) Add(kind string, o Outcome, code string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.counts == nil {
		t.counts = map[string]map[Outcome]int64{}
		t.refused = map[string]int64{}
	}
	m := t.counts[kind]
	if m == nil {
		m = map[Outcome]int64{}
		t.counts[kind] = m
	}
	m[o]++
	if o == Refused {
		t.refused[kind+":"+code]++
	}
}

// Count returns how many requests of kind had outcome o ("" counts every
// kind).
func (t *Tally) Count(kind string, o Outcome) int64 {
	t.mu.Lock()
	defer t.mu.Unlock()
	var n int64
	for k, m := range t.counts {
		if kind == "" || k == kind {
			n += m[o]
		}
	}
	return n
}

// ByKind returns, for outcome o, the count of each kind that had it.
func (t *Tally) ByKind(o Outcome) map[string]int64 {
	t.mu.Lock()
	defer t.mu.Unlock()
	out := map[string]int64{}
	for k, m := range t.counts {
		if m[o] > 0 {
			out[k] = m[o]
		}
	}
	return out
}

// Refusals returns the refused requests by "kind:CODE".
func (t *Tally) Refusals() map[string]int64 {
	t.mu.Lock()
	defer t.mu.Unlock()
	out := make(map[string]int64, len(t.refused))
	for k, v := range t.refused {
		out[k] = v
	}
	return out
}

// errorCode names the Error code of err, or "".
func errorCode(err error) string {
	var e *client.Error
	if errors.As(err, &e) {
		return e.Code.String()
	}
	return ""
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
