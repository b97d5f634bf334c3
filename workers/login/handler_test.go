package login_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/laneim/laneim/internal/testinfra"
	"github.com/laneim/laneim/proto/clientpb"
	"github.com/laneim/laneim/proto/topicpb"
	"github.com/laneim/laneim/topics"
	"github.com/laneim/laneim/wiring/directory"
	"github.com/laneim/laneim/wiring/pipeline"
	"github.com/laneim/laneim/workers/login"
)

type fakeUsers map[string]directory.User

func (f fakeUsers) Users(_ context.Context, ids ...string) (map[string]directory.User, error) {
	out := map[string]directory.User{}
	for _, id := range ids {
		if u, ok := f[id]; ok {
			out[id] = u
		}
	}
	return out, nil
}

type downUsers struct{}

func (downUsers) Users(context.Context, ...string) (map[string]directory.User, error) {
	return nil, errors.New("redis: connection refused")
}

// inAnHour is a token expiry an hour from now, as the comet forwards it.
func inAnHour() int64 { return time.Now().Add(time.Hour).UnixMilli() }

// TestHandle: the worker trusts the claims the comet verified, and keeps
// every directory check: unknown and disabled users are refused, and so
// are a subject no user can have and a token that expired on the way.
func TestHandle(t *testing.T) {
	// The directory could hold no such ids; had it one, the id rule
	// still refuses the login before the directory is asked.
	users := fakeUsers{"alice": {ID: "alice"}, "mallory": {ID: "mallory", Disabled: true},
		"acme:alice": {ID: "acme:alice"}, topics.SystemSender: {ID: topics.SystemSender}, strings.Repeat("x", 65): {ID: strings.Repeat("x", 65)}}
	tests := []struct {
		name    string
		user    string
		expires int64
		code    clientpb.Error_Code // CODE_UNSPECIFIED: accepted
	}{
		{"good", "alice", inAnHour(), clientpb.Error_CODE_UNSPECIFIED},
		{"expired since the comet verified it", "alice", time.Now().Add(-time.Second).UnixMilli(), clientpb.Error_BAD_TOKEN},
		{"no expiry: not from a comet", "alice", 0, clientpb.Error_BAD_TOKEN},
		{"no user", "", inAnHour(), clientpb.Error_BAD_TOKEN},
		{"unknown user", "zed", inAnHour(), clientpb.Error_UNKNOWN_USER},
		{"disabled user", "mallory", inAnHour(), clientpb.Error_UNKNOWN_USER},
		{"subject with a colon", "acme:alice", inAnHour(), clientpb.Error_BAD_TOKEN},
		{"subject of the system sender", topics.SystemSender, inAnHour(), clientpb.Error_BAD_TOKEN},
		{"subject too long", strings.Repeat("x", 65), inAnHour(), clientpb.Error_BAD_TOKEN},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rec := &testinfra.Recorder{}
			h, err := login.New(users, rec, slog.New(slog.DiscardHandler))
			if err != nil {
				t.Fatal(err)
			}
			sess := &topicpb.Session{Comet: "c1", Conn: "x.1"}
			msg, err := topics.LoginRequests.Encode(&topicpb.LoginRequest{Session: sess, RequestId: 7, User: tt.user, TokenExpiresUnixMs: tt.expires, Device: "ios"})
			if err != nil {
				t.Fatal(err)
			}
			if err := h.Pipeline().Handle(msg); err != nil {
				t.Fatal(err)
			}
			out := rec.Take()
			if len(out) != 1 {
				t.Fatalf("published %d messages, want 1", len(out))
			}
			if tt.code == clientpb.Error_CODE_UNSPECIFIED {
				ev, err := topics.SessionEvents.Decode(out[0].Msg)
				if out[0].Topic != topics.SessionEvents.Name || err != nil {
					t.Fatalf("published to %s: %v", out[0].Topic, err)
				}
				if ev.GetKind() != topicpb.SessionEvent_OPENED || ev.GetUser() != "alice" || ev.GetRequestId() != 7 || ev.GetDevice() != "ios" ||
					ev.GetSession().GetComet() != "c1" || ev.GetSession().GetConn() != "x.1" || ev.GetTimeUnixMs() == 0 {
					t.Fatalf("event %v", ev)
				}
				return
			}
			d, err := topics.Deliveries.Decode(out[0].Msg)
			if out[0].Topic != topics.Delivery("c1") || err != nil {
				t.Fatalf("published to %s: %v", out[0].Topic, err)
			}
			if got := d.GetFrame().GetError().GetCode(); got != tt.code || d.GetFrame().GetRequestId() != 7 || len(d.GetConns()) != 1 || d.GetConns()[0] != "x.1" {
				t.Fatalf("delivery %v, want code %v", d, tt.code)
			}
		})
	}
}

// TestStaleLoginsSkipped: a login taken up past its comet's deadline
// (pipeline.Expired), or received more than pipeline.StaleLogin ago from
// a comet that set none, is skipped, neither answered nor announced: the
// comet answers it UNAVAILABLE itself and its client logs in again (a
// multi-process overload run: serving such logins ahead of their retries
// fed a retry storm). A login within its time is served, and presence
// gets its deadline with it.
func TestStaleLoginsSkipped(t *testing.T) {
	users := fakeUsers{"alice": {ID: "alice"}, "zed": {ID: "zed", Disabled: true}}
	const none = -time.Hour
	for _, tc := range []struct {
		name      string
		user      string
		received  time.Duration // before now; -1: not set
		deadline  time.Duration // after now; none: not set
		published int
	}{
		{"stale", "alice", pipeline.StaleLogin + time.Second, none, 0},
		{"stale, and refused had it been served", "zed", pipeline.StaleLogin + time.Second, none, 0},
		{"late, not stale", "alice", pipeline.StaleLogin - time.Second, none, 1},
		{"no receipt time", "alice", -1, none, 1},
		{"past its deadline", "alice", 6 * time.Second, -time.Second, 0},
		{"within the margin of its deadline", "alice", 4500 * time.Millisecond, 500 * time.Millisecond, 0},
		{"in time", "alice", time.Second, 4 * time.Second, 1},
		{"short timeout, in time", "alice", 100 * time.Millisecond, 100 * time.Millisecond, 1},
		{"short timeout, within its margin", "alice", 190 * time.Millisecond, 10 * time.Millisecond, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rec := &testinfra.Recorder{}
			h, err := login.New(users, rec, slog.New(slog.DiscardHandler))
			if err != nil {
				t.Fatal(err)
			}
			now := time.Now()
			var received, deadline int64
			if tc.received >= 0 {
				received = now.Add(-tc.received).UnixMilli()
			}
			if tc.deadline != none {
				deadline = now.Add(tc.deadline).UnixMilli()
			}
			msg, err := topics.LoginRequests.Encode(&topicpb.LoginRequest{Session: &topicpb.Session{Comet: "c1", Conn: "x.1"}, RequestId: 7,
				User: tc.user, TokenExpiresUnixMs: inAnHour(), ReceivedUnixMs: received, DeadlineUnixMs: deadline})
			if err != nil {
				t.Fatal(err)
			}
			if err := h.Pipeline().Handle(msg); err != nil {
				t.Fatal(err)
			}
			out := rec.Take()
			if len(out) != tc.published {
				t.Fatalf("published %d messages, want %d", len(out), tc.published)
			}
			if len(out) == 1 {
				ev, err := topics.SessionEvents.Decode(out[0].Msg)
				if err != nil || ev.GetKind() != topicpb.SessionEvent_OPENED || ev.GetDeadlineUnixMs() != deadline {
					t.Fatalf("announced %v (%v), want OPENED with deadline %d", ev, err, deadline)
				}
			}
		})
	}
}

func TestHandleRejectsUndecodable(t *testing.T) {
	h, _ := login.New(fakeUsers{}, &testinfra.Recorder{}, slog.New(slog.DiscardHandler))
	if err := h.Pipeline().Handle(message.NewMessage("x", []byte{0xff})); !pipeline.IsPermanent(err) {
		t.Fatalf("err = %v, want permanent", err)
	}
}

func TestHandleRetriesPublishFailure(t *testing.T) {
	rec := &testinfra.Recorder{Err: errors.New("broker down")}
	h, _ := login.New(fakeUsers{"alice": {ID: "alice"}}, rec, slog.New(slog.DiscardHandler))
	msg, _ := topics.LoginRequests.Encode(&topicpb.LoginRequest{Session: &topicpb.Session{Comet: "c", Conn: "1"}, User: "alice", TokenExpiresUnixMs: inAnHour()})
	if err := h.Pipeline().Handle(msg); err == nil || pipeline.IsPermanent(err) {
		t.Fatalf("err = %v, want a transient error", err)
	}
}

// TestDirectoryFailureAnsweredUnavailable: with the directory down the
// client is answered UNAVAILABLE at once and the request acked, so it is
// neither retried while the client waits nor kept, token and all, in dead
// letters; a failure to send that answer is retried.
func TestDirectoryFailureAnsweredUnavailable(t *testing.T) {
	rec := &testinfra.Recorder{}
	h, _ := login.New(downUsers{}, rec, slog.New(slog.DiscardHandler))
	msg, _ := topics.LoginRequests.Encode(&topicpb.LoginRequest{Session: &topicpb.Session{Comet: "c", Conn: "1"}, RequestId: 3, User: "alice", TokenExpiresUnixMs: inAnHour()})
	if err := h.Pipeline().Handle(msg); err != nil {
		t.Fatalf("err = %v, want the client answered", err)
	}
	out := rec.Take()
	if len(out) != 1 || out[0].Topic != topics.Delivery("c") {
		t.Fatalf("published %v, want one answer to comet c", out)
	}
	d, err := topics.Deliveries.Decode(out[0].Msg)
	if err != nil {
		t.Fatal(err)
	}
	if e := d.GetFrame().GetError(); e.GetCode() != clientpb.Error_UNAVAILABLE || d.GetFrame().GetRequestId() != 3 {
		t.Fatalf("answer %v, want UNAVAILABLE to request 3", d.GetFrame())
	}
	// The broker down too: the answer cannot go out, the request is retried.
	rec.Err = errors.New("kafka: no leader")
	if err := h.Pipeline().Handle(msg); err == nil || pipeline.IsPermanent(err) {
		t.Fatalf("err = %v, want a transient error", err)
	}
}

// TestBatch: a batch merged by the consumer (topics.LoginRequests batches
// across keys) is handled as its requests one at a time: the accepted
// ones announced together, each refused one answered on its comet.
func TestBatch(t *testing.T) {
	users := fakeUsers{"alice": {ID: "alice"}, "bob": {ID: "bob"}, "mallory": {ID: "mallory", Disabled: true}}
	req := func(comet, conn, user string, expires int64) *topicpb.LoginRequest {
		return &topicpb.LoginRequest{Session: &topicpb.Session{Comet: comet, Conn: conn}, RequestId: 1, User: user, TokenExpiresUnixMs: expires}
	}
	reqs := []*topicpb.LoginRequest{
		req("c1", "a", "alice", inAnHour()),
		req("c2", "m", "mallory", inAnHour()),
		req("c1", "x", "alice", time.Now().Add(-time.Minute).UnixMilli()),
		req("c2", "b", "bob", inAnHour()),
		req("c1", "z", "zed", inAnHour()),
	}
	merged := testinfra.Merged(t, topics.LoginRequests, reqs...)

	rec := &testinfra.Recorder{}
	h, _ := login.New(users, rec, slog.New(slog.DiscardHandler))
	if err := h.Pipeline().Handle(merged); err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, p := range rec.Take() {
		if p.Topic == topics.SessionEvents.Name {
			ev, err := topics.SessionEvents.Decode(p.Msg)
			if err != nil {
				t.Fatal(err)
			}
			got = append(got, fmt.Sprintf("%v %s", ev.GetKind(), topics.SessionKey(ev.GetSession())))
			continue
		}
		d, err := topics.Deliveries.Decode(p.Msg)
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, fmt.Sprintf("%s %v %v", p.Topic, d.GetConns(), d.GetFrame().GetError().GetCode()))
	}
	// Refusals first, per comet, in the order found (the expired token
	// before the lookup); then the accepted logins, in one publish. The
	// comets' refusals are published at once: their order across comets
	// is the scheduler's, so they are compared comet by comet.
	refusals := len(got)
	for i, g := range got {
		if strings.HasPrefix(g, "OPENED") {
			refusals = i
			break
		}
	}
	slices.SortStableFunc(got[:refusals], func(a, b string) int {
		return strings.Compare(strings.Fields(a)[0], strings.Fields(b)[0])
	})
	want := []string{"deliver.c1 [x] BAD_TOKEN", "deliver.c1 [z] UNKNOWN_USER", "deliver.c2 [m] UNKNOWN_USER", "OPENED c1/a", "OPENED c2/b"}
	if !slices.Equal(got, want) {
		t.Errorf("published\n%v\nwant\n%v", got, want)
	}

	// With the directory down every client of the batch is answered.
	h, _ = login.New(downUsers{}, rec, slog.New(slog.DiscardHandler))
	if err := h.Pipeline().Handle(merged); err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, p := range rec.Take() {
		d, err := topics.Deliveries.Decode(p.Msg)
		if err != nil {
			t.Fatal(err)
		}
		if d.GetFrame().GetError().GetCode() == clientpb.Error_UNAVAILABLE {
			n++
		}
	}
	if n != len(reqs) {
		t.Errorf("%d of %d clients answered UNAVAILABLE", n, len(reqs))
	}
}
