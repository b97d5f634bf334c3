package routing_test

import (
	"fmt"
	"testing"

	"github.com/laneim/laneim/internal/testinfra"
	"github.com/laneim/laneim/proto/clientpb"
	"github.com/laneim/laneim/proto/topicpb"
	"github.com/laneim/laneim/topics"
	"github.com/laneim/laneim/workers/routing"
)

// TestUserSendRate: a user's messages past its budget are refused
// RATE_LIMITED with a retry_after_ms, by every routing worker (the
// budget is in Redis), while another user and the api gateway's
// messages go on.
func TestUserSendRate(t *testing.T) {
	t.Parallel()
	store := newWorld(t)
	// One message every 100 s, bursts of 3: nothing refills within the test.
	cfg := routing.Config{UserSendRate: 0.01, UserSendBurst: 3}
	h1, rec1 := newHandler(t, cfg, store)
	h2, rec2 := newHandler(t, cfg, store)
	n := 0
	send := func(h *routing.Handler, sender string, trusted bool) {
		t.Helper()
		n++
		sub := &topicpb.Submitted{Sender: sender, Trusted: trusted, To: &topicpb.Submitted_Room{Room: "lobby"},
			Origin: origin, RequestId: uint64(n), ClientMsgId: fmt.Sprintf("m-%d", n), Body: []byte("hi")}
		if err := handle(t, h, sub); err != nil {
			t.Fatal(err)
		}
	}
	// alice's burst, over two routing workers.
	send(h1, "alice", false)
	routedAndResult(t, rec1)
	send(h2, "alice", false)
	routedAndResult(t, rec2)
	send(h1, "alice", false)
	routedAndResult(t, rec1)
	for _, w := range []struct {
		h   *routing.Handler
		rec *testinfra.Recorder
	}{{h1, rec1}, {h2, rec2}} {
		send(w.h, "alice", false)
		e := onlyError(t, w.rec)
		if e.GetCode() != clientpb.Error_RATE_LIMITED || e.GetRetryAfterMs() == 0 || e.GetRetryAfterMs() > 100_000 {
			t.Fatalf("alice's fourth message answered %v, want RATE_LIMITED with retry_after_ms in (0, 100000]", e)
		}
	}
	if got := h1.RateLimited() + h2.RateLimited(); got != 2 {
		t.Fatalf("RateLimited = %d, want 2", got)
	}
	// bob has a budget of his own; the api gateway's messages in
	// alice's name are not counted.
	send(h2, "bob", false)
	routedAndResult(t, rec2)
	send(h1, "alice", true)
	routedAndResult(t, rec1)
}

// TestUserSendRateUnbounded: a negative rate lifts the bound.
func TestUserSendRateUnbounded(t *testing.T) {
	t.Parallel()
	h, rec := newHandler(t, routing.Config{UserSendRate: -1, UserSendBurst: 1}, newWorld(t))
	for i := range 5 {
		sub := &topicpb.Submitted{Sender: "alice", To: &topicpb.Submitted_Room{Room: "lobby"}, Origin: origin, RequestId: 1, ClientMsgId: fmt.Sprintf("u-%d", i)}
		if err := handle(t, h, sub); err != nil {
			t.Fatal(err)
		}
		routedAndResult(t, rec)
	}
}

func TestUserSendRateValidate(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		rate  float64
		burst int
		ok    bool
	}{{0, 0, true}, {-1, 0, true}, {0.5, 1, true}, {0.0001, 1, false}, {1, -1, false}} {
		if err := (routing.Config{UserSendRate: tt.rate, UserSendBurst: tt.burst}).Validate(); (err == nil) != tt.ok {
			t.Errorf("Validate with rate %g, burst %d = %v, want ok %v", tt.rate, tt.burst, err, tt.ok)
		}
	}
}

// onlyError returns the one Error frame published, failing if anything
// else was.
func onlyError(t *testing.T, rec *testinfra.Recorder) *clientpb.Error {
	t.Helper()
	out := rec.Take()
	if len(out) != 1 || out[0].Topic != topics.Delivery(origin.Comet) {
		t.Fatalf("published %d messages, want one answer on %s", len(out), topics.Delivery(origin.Comet))
	}
	d, err := topics.Deliveries.Decode(out[0].Msg)
	if err != nil {
		t.Fatal(err)
	}
	if d.GetFrame().GetError() == nil {
		t.Fatalf("answer %v, want an Error", d.GetFrame())
	}
	return d.GetFrame().GetError()
}
