package presence_test

import (
	"context"
	"testing"

	"github.com/laneim/laneim/proto/clientpb"
	"github.com/laneim/laneim/proto/topicpb"
	"github.com/laneim/laneim/topics"
	"github.com/laneim/laneim/workers/presence"
)

// TestSessionsPerUser: a login that would give its user more than
// MaxSessionsPerUser sessions, on whatever comets, is answered
// RATE_LIMITED with a retry_after_ms and its connection closed; nothing
// of it is recorded, and a place freed is taken again.
func TestSessionsPerUser(t *testing.T) {
	h, store, rec := fixture(t, presence.Config{MaxSessionsPerUser: 2})
	ctx := context.Background()
	login := func(comet, conn, user string) *topicpb.Delivery {
		t.Helper()
		event(t, h, &topicpb.SessionEvent{Kind: topicpb.SessionEvent_OPENED, Session: sess(comet, conn), User: user, RequestId: 7})
		d := deliveries(t, rec)[topics.Delivery(comet)]
		if len(d) != 1 || d[0].GetFrame().GetRequestId() != 7 || len(d[0].GetConns()) != 1 || d[0].GetConns()[0] != conn {
			t.Fatalf("login of %s on %s/%s: %v", user, comet, conn, d)
		}
		return d[0]
	}
	accepted := func(d *topicpb.Delivery) bool {
		return d.GetFrame().GetLoginResult().GetOk() && d.GetControl().GetAuthenticate() != ""
	}
	sessions := func(user string) int {
		t.Helper()
		refs, err := store.UserSessions(ctx, user)
		if err != nil {
			t.Fatal(err)
		}
		return len(refs)
	}

	if !accepted(login("c1", "a1", "alice")) || !accepted(login("c2", "a2", "alice")) {
		t.Fatal("alice's first two logins were refused")
	}
	d := login("c1", "a3", "alice")
	e := d.GetFrame().GetError()
	if e.GetCode() != clientpb.Error_RATE_LIMITED || e.GetRetryAfterMs() != uint32(presence.SessionsRetryAfter.Milliseconds()) ||
		d.GetControl().GetClose() != "too many connections" || d.GetControl().GetAuthenticate() != "" {
		t.Fatalf("third login answered %v, want RATE_LIMITED with retry_after_ms and a close", d)
	}
	if n := sessions("alice"); n != 2 {
		t.Fatalf("alice has %d sessions, want 2", n)
	}
	if n := h.SessionsRefused(); n != 1 {
		t.Fatalf("SessionsRefused = %d, want 1", n)
	}
	// Another user is not touched; a repeat of an accepted login is
	// accepted again.
	if !accepted(login("c1", "b1", "bob")) || !accepted(login("c2", "a2", "alice")) {
		t.Fatal("bob's login or a repeat of alice's was refused")
	}
	// One of alice's connections closes: the next login gets its place.
	event(t, h, &topicpb.SessionEvent{Kind: topicpb.SessionEvent_CLOSED, Session: sess("c1", "a1"), User: "alice"})
	rec.Take()
	if !accepted(login("c1", "a3", "alice")) {
		t.Fatal("a login was refused after a place was freed")
	}
	if n := sessions("alice"); n != 2 {
		t.Fatalf("alice has %d sessions, want 2", n)
	}
}

func TestSessionsPerUserUnbounded(t *testing.T) {
	h, store, rec := fixture(t, presence.Config{MaxSessionsPerUser: -1})
	for _, conn := range []string{"a1", "a2", "a3", "a4", "a5"} {
		event(t, h, &topicpb.SessionEvent{Kind: topicpb.SessionEvent_OPENED, Session: sess("c1", conn), User: "alice", RequestId: 1})
	}
	for _, d := range deliveries(t, rec)[topics.Delivery("c1")] {
		if !d.GetFrame().GetLoginResult().GetOk() {
			t.Fatalf("a login refused without a bound: %v", d)
		}
	}
	if refs, err := store.UserSessions(context.Background(), "alice"); err != nil || len(refs) != 5 {
		t.Fatalf("alice's sessions %v, %v; want 5", refs, err)
	}
}
