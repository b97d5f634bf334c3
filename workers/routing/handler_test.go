package routing_test

import (
	"context"
	"errors"
	"log/slog"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/redis/go-redis/v9"
	"google.golang.org/protobuf/proto"

	"github.com/laneim/laneim/internal/testinfra"
	"github.com/laneim/laneim/proto/clientpb"
	"github.com/laneim/laneim/proto/topicpb"
	"github.com/laneim/laneim/topics"
	"github.com/laneim/laneim/wiring/directory"
	"github.com/laneim/laneim/wiring/pipeline"
	"github.com/laneim/laneim/workers/routing"
)

// users are the users of newWorld.
var users = []string{"alice", "bob", "carol", "dave", "mallory"}

// newWorld returns the real directory on a redis-server of the test's own,
// holding: alice, bob, carol, dave and disabled mallory; lobby with alice
// and bob, dev with alice only, empty with nobody; dave blocks alice;
// alice online on c1 (twice) and c2, bob on c2 and c3, carol offline;
// alice's connection c1/a1 in lobby, so that lobby is hosted on c1; and
// comet c0, whose heartbeats stopped a minute ago.
func newWorld(t testing.TB) *directory.Store {
	t.Helper()
	return newWorldOn(t, testinfra.RedisClient(t))
}

// newWorldOn is newWorld on rdb, whose counters are marked restored, as
// the persist worker's guard would.
func newWorldOn(t testing.TB, rdb redis.UniversalClient) *directory.Store {
	t.Helper()
	s := directory.New(rdb)
	ctx := context.Background()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	for _, u := range users {
		must(s.PutUser(ctx, directory.User{ID: u, Disabled: u == "mallory"}))
	}
	for _, r := range []string{"lobby", "dev", "empty"} {
		must(s.PutRoom(ctx, directory.Room{ID: r}))
	}
	must(s.AddMembers(ctx, []directory.Membership{{Room: "lobby", User: "alice"}, {Room: "lobby", User: "bob"}, {Room: "dev", User: "alice"}}))
	must(s.Block(ctx, "dave", "alice"))
	for _, sess := range []directory.Session{
		{Comet: "c1", Conn: "a1", User: "alice"}, {Comet: "c2", Conn: "a2", User: "alice"}, {Comet: "c1", Conn: "a3", User: "alice"},
		{Comet: "c2", Conn: "b1", User: "bob"}, {Comet: "c3", Conn: "b2", User: "bob"},
	} {
		must(s.OpenSession(ctx, sess, time.Minute))
	}
	_, err := s.JoinRoom(ctx, directory.SessionRef{Comet: "c1", Conn: "a1"}, "alice", "lobby")
	must(err)
	must(s.Heartbeat(ctx, "c0", nil, -time.Minute))
	must(s.RestoreSequences(ctx, nil))
	return s
}

var origin = &topicpb.Session{Comet: "c9", Conn: "s1"}

func newHandler(t testing.TB, cfg routing.Config, store routing.Store) (*routing.Handler, *testinfra.Recorder) {
	rec := &testinfra.Recorder{}
	return testinfra.Must(routing.New(cfg, store, rec, slog.New(slog.DiscardHandler)))(t), rec
}

func handle(t *testing.T, h *routing.Handler, sub *topicpb.Submitted) error {
	t.Helper()
	msg, err := topics.Submitted.Encode(sub)
	if err != nil {
		t.Fatal(err)
	}
	return h.Pipeline().Handle(msg)
}

// routedAndResult returns the Routed and the SendResult published for one
// accepted submission with an origin, in that order, and fails otherwise.
func routedAndResult(t *testing.T, rec *testinfra.Recorder) (*topicpb.Routed, *topicpb.Delivery) {
	t.Helper()
	out, _ := withoutNotices(rec.Take())
	if len(out) != 2 || out[0].Topic != topics.Routed.Name || out[1].Topic != topics.Delivery(origin.Comet) {
		var got []string
		for _, p := range out {
			got = append(got, p.Topic)
		}
		t.Fatalf("published to %v, want %s then %s", got, topics.Routed.Name, topics.Delivery(origin.Comet))
	}
	r, err := topics.Routed.Decode(out[0].Msg)
	if err != nil {
		t.Fatal(err)
	}
	if key := out[0].Msg.Metadata.Get(topics.KeyMetadata); key != r.GetMessage().GetConversation() {
		t.Fatalf("routed key %q, want the conversation %q", key, r.GetMessage().GetConversation())
	}
	d, err := topics.Deliveries.Decode(out[1].Msg)
	if err != nil {
		t.Fatal(err)
	}
	return r, d
}

// TestChecks covers every refusal and what the trusted flag lifts.
func TestChecks(t *testing.T) {
	t.Parallel()
	room := func(r string) *topicpb.Submitted_Room { return &topicpb.Submitted_Room{Room: r} }
	user := func(u string) *topicpb.Submitted_User { return &topicpb.Submitted_User{User: u} }
	tests := []struct {
		name    string
		max     int
		sub     *topicpb.Submitted
		refusal clientpb.Error_Code // CODE_UNSPECIFIED: routed
	}{
		{"member writes to room", 0, &topicpb.Submitted{Sender: "bob", To: room("lobby")}, clientpb.Error_CODE_UNSPECIFIED},
		{"non-member", 0, &topicpb.Submitted{Sender: "bob", To: room("dev")}, clientpb.Error_NOT_MEMBER},
		{"non-member of a room without members", 0, &topicpb.Submitted{Sender: "alice", To: room("empty")}, clientpb.Error_NOT_MEMBER},
		{"trusted non-member", 0, &topicpb.Submitted{Sender: "system", Trusted: true, To: room("dev")}, clientpb.Error_CODE_UNSPECIFIED},
		{"unknown room", 0, &topicpb.Submitted{Sender: "alice", To: room("nope")}, clientpb.Error_UNKNOWN_ROOM},
		{"trusted to unknown room", 0, &topicpb.Submitted{Sender: "system", Trusted: true, To: room("nope")}, clientpb.Error_UNKNOWN_ROOM},
		{"empty room", 0, &topicpb.Submitted{Sender: "alice", To: room("")}, clientpb.Error_INVALID},
		{"body at the limit", 10, &topicpb.Submitted{Sender: "alice", To: room("lobby"), Body: make([]byte, 10)}, clientpb.Error_CODE_UNSPECIFIED},
		{"body over the limit", 10, &topicpb.Submitted{Sender: "alice", To: room("lobby"), Body: make([]byte, 11)}, clientpb.Error_TOO_LARGE},
		{"body over the default limit", 0, &topicpb.Submitted{Sender: "alice", To: room("lobby"), Body: make([]byte, 16<<10+1)}, clientpb.Error_TOO_LARGE},
		{"trusted body over the limit", 10, &topicpb.Submitted{Sender: "system", Trusted: true, To: room("lobby"), Body: make([]byte, 11)}, clientpb.Error_TOO_LARGE},
		{"dm", 0, &topicpb.Submitted{Sender: "alice", To: user("carol")}, clientpb.Error_CODE_UNSPECIFIED},
		{"dm to unknown user", 0, &topicpb.Submitted{Sender: "alice", To: user("zed")}, clientpb.Error_UNKNOWN_USER},
		{"dm to disabled user", 0, &topicpb.Submitted{Sender: "alice", To: user("mallory")}, clientpb.Error_UNKNOWN_USER},
		{"trusted dm to disabled user", 0, &topicpb.Submitted{Sender: "system", Trusted: true, To: user("mallory")}, clientpb.Error_UNKNOWN_USER},
		{"dm to a blocker", 0, &topicpb.Submitted{Sender: "alice", To: user("dave")}, clientpb.Error_BLOCKED},
		{"dm back from the blocker", 0, &topicpb.Submitted{Sender: "dave", To: user("alice")}, clientpb.Error_CODE_UNSPECIFIED},
		{"trusted dm to a blocker", 0, &topicpb.Submitted{Sender: "alice", Trusted: true, To: user("dave")}, clientpb.Error_CODE_UNSPECIFIED},
		{"empty recipient", 0, &topicpb.Submitted{Sender: "alice", To: user("")}, clientpb.Error_INVALID},
		{"no recipient", 0, &topicpb.Submitted{Sender: "alice"}, clientpb.Error_INVALID},
		{"no sender", 0, &topicpb.Submitted{To: room("lobby")}, clientpb.Error_INVALID},
		{"untrusted broadcast", 0, &topicpb.Submitted{Sender: "alice", To: &topicpb.Submitted_Broadcast{Broadcast: true}}, clientpb.Error_INVALID},
		{"trusted broadcast", 0, &topicpb.Submitted{Sender: "system", Trusted: true, To: &topicpb.Submitted_Broadcast{Broadcast: true}}, clientpb.Error_CODE_UNSPECIFIED},
		// Bans hold: a client's message from a sender the directory no
		// longer has, or has disabled, is refused whatever it is sent to.
		{"disabled sender dm", 0, &topicpb.Submitted{Sender: "mallory", To: user("alice")}, clientpb.Error_UNKNOWN_USER},
		{"disabled sender to a room", 0, &topicpb.Submitted{Sender: "mallory", To: room("lobby")}, clientpb.Error_UNKNOWN_USER},
		{"deleted sender dm", 0, &topicpb.Submitted{Sender: "zed", To: user("alice")}, clientpb.Error_UNKNOWN_USER},
		{"deleted sender to a room", 0, &topicpb.Submitted{Sender: "zed", To: room("lobby")}, clientpb.Error_UNKNOWN_USER},
		{"trusted sender not in the directory", 0, &topicpb.Submitted{Sender: "billing", Trusted: true, To: user("alice")}, clientpb.Error_CODE_UNSPECIFIED},
		// Ids are checked: no ':' anywhere, the system sender for the
		// api gateway alone.
		{"sender with a colon", 0, &topicpb.Submitted{Sender: "acme:alice", Trusted: true, To: room("lobby")}, clientpb.Error_INVALID},
		{"recipient with a colon", 0, &topicpb.Submitted{Sender: "alice", To: user("bob:x")}, clientpb.Error_INVALID},
		{"room with a colon", 0, &topicpb.Submitted{Sender: "alice", To: room("lobby:x")}, clientpb.Error_INVALID},
		{"trusted system sender", 0, &topicpb.Submitted{Sender: topics.SystemSender, Trusted: true, To: user("alice")}, clientpb.Error_CODE_UNSPECIFIED},
		{"client as the system sender", 0, &topicpb.Submitted{Sender: topics.SystemSender, To: user("alice")}, clientpb.Error_INVALID},
		{"dm to the system sender", 0, &topicpb.Submitted{Sender: "alice", To: user(topics.SystemSender)}, clientpb.Error_INVALID},
	}
	// The cases only read the directory, or write conversations they do
	// not look at: they share one.
	store := newWorld(t)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			h, rec := newHandler(t, routing.Config{MaxBodyBytes: tt.max}, store)
			tt.sub.Origin, tt.sub.RequestId, tt.sub.ClientMsgId = origin, 42, "m-1"
			if err := handle(t, h, tt.sub); err != nil {
				t.Fatal(err)
			}
			if tt.refusal == clientpb.Error_CODE_UNSPECIFIED {
				_, d := routedAndResult(t, rec)
				if d.GetFrame().GetSendResult() == nil {
					t.Fatalf("answer %v, want a SendResult", d)
				}
				return
			}
			out := rec.Take()
			if len(out) != 1 || out[0].Topic != topics.Delivery(origin.Comet) {
				t.Fatalf("published %d messages (first to %v), want one answer on %s", len(out), out, topics.Delivery(origin.Comet))
			}
			d, err := topics.Deliveries.Decode(out[0].Msg)
			if err != nil {
				t.Fatal(err)
			}
			if d.GetFrame().GetError().GetCode() != tt.refusal || d.GetFrame().GetRequestId() != 42 || !slices.Equal(d.GetConns(), []string{origin.Conn}) {
				t.Fatalf("answer %v, want %v to %s", d, tt.refusal, origin.Conn)
			}
		})
	}
}

// TestRoutedMessage checks every field of the Routed and the SendResult,
// then that the next messages of the room get the next seqs, later ids
// and the same targets.
func TestRoutedMessage(t *testing.T) {
	t.Parallel()
	h, rec := newHandler(t, routing.Config{}, newWorld(t))
	before := time.Now().UnixMilli()
	sub := &topicpb.Submitted{Origin: origin, RequestId: 7, Sender: "bob", ClientMsgId: "cm-1", To: &topicpb.Submitted_Room{Room: "lobby"},
		Body: []byte("hello"), ContentType: "text/plain", SubmittedUnixMs: 1234}
	if err := handle(t, h, sub); err != nil {
		t.Fatal(err)
	}
	r, d := routedAndResult(t, rec)
	m := r.GetMessage()
	id, err := uuid.Parse(m.GetId())
	if err != nil || id.Version() != 7 {
		t.Fatalf("message id %q is not a UUIDv7: %v", m.GetId(), err)
	}
	if m.GetServerTimeUnixMs() < before || m.GetServerTimeUnixMs() > time.Now().UnixMilli() {
		t.Fatalf("server time %d not within the call", m.GetServerTimeUnixMs())
	}
	want := &topicpb.Routed{
		Message: &clientpb.Message{Id: m.GetId(), Conversation: "room:lobby", Seq: 1, Sender: "bob", Body: []byte("hello"),
			ContentType: "text/plain", ServerTimeUnixMs: m.GetServerTimeUnixMs(), ClientMsgId: "cm-1"},
		Comets: []string{"c1"}, Room: "lobby", SubmittedUnixMs: 1234,
	}
	if !proto.Equal(r, want) {
		t.Fatalf("routed %v\nwant %v", r, want)
	}
	wantAnswer := &topicpb.Delivery{Conns: []string{origin.Conn}, Frame: &clientpb.ServerFrame{RequestId: 7, Body: &clientpb.ServerFrame_SendResult{SendResult: &clientpb.SendResult{
		ClientMsgId: "cm-1", MessageId: m.GetId(), Conversation: "room:lobby", Seq: 1, ServerTimeUnixMs: m.GetServerTimeUnixMs(),
	}}}}
	if !proto.Equal(d, wantAnswer) {
		t.Fatalf("answer %v\nwant %v", d, wantAnswer)
	}

	prev := m
	for seq := uint64(2); seq <= 3; seq++ {
		sub.ClientMsgId = "cm-" + string(rune('0'+seq))
		if err := handle(t, h, sub); err != nil {
			t.Fatal(err)
		}
		r, d := routedAndResult(t, rec)
		m, res := r.GetMessage(), d.GetFrame().GetSendResult()
		if m.GetSeq() != seq || m.GetId() <= prev.GetId() || !slices.Equal(r.GetComets(), []string{"c1"}) || r.GetRoom() != "lobby" {
			t.Fatalf("message %d: %v after %v", seq, r, prev)
		}
		if res.GetSeq() != seq || res.GetMessageId() != m.GetId() || res.GetClientMsgId() != sub.ClientMsgId {
			t.Fatalf("message %d answered %v", seq, res)
		}
		prev = m
	}
}

// TestDuplicates: a repeated client_msg_id gets the same id, seq and
// server time; once its first submission was routed, the repeat is only
// answered, with the first SendResult; while its first routing has not
// completed (the publish of the Routed failed), the repeat is routed again,
// identical, to the same comets. In a room and between two users.
func TestDuplicates(t *testing.T) {
	t.Parallel()
	subs := []*topicpb.Submitted{
		{Origin: origin, RequestId: 1, Sender: "alice", ClientMsgId: "same", To: &topicpb.Submitted_Room{Room: "lobby"}, Body: []byte("x")},
		{Origin: origin, RequestId: 1, Sender: "alice", ClientMsgId: "same", To: &topicpb.Submitted_User{User: "bob"}, Body: []byte("x")},
	}
	tests := []struct {
		name        string
		firstFails  bool // the first publish of the Routed fails
		routedAgain bool
	}{
		{"first routed: answered only", false, false},
		{"first routing incomplete: routed again", true, true},
	}
	for _, tt := range tests {
		for _, sub := range subs {
			t.Run(tt.name+"/"+topics.SubmittedConversation(sub), func(t *testing.T) {
				t.Parallel()
				h, rec := newHandler(t, routing.Config{CoolDown: -1}, newWorld(t))
				var first *topicpb.Routed
				if tt.firstFails {
					rec.Err = errors.New("kafka: no leader")
					if err := handle(t, h, sub); !errors.Is(err, rec.Err) {
						t.Fatalf("err = %v, want %v", err, rec.Err)
					}
					rec.Err = nil
				} else {
					if err := handle(t, h, sub); err != nil {
						t.Fatal(err)
					}
					first, _ = routedAndResult(t, rec)
				}
				for i := range 2 {
					again := proto.CloneOf(sub)
					again.RequestId = uint64(2 + i)
					if err := handle(t, h, again); err != nil {
						t.Fatal(err)
					}
					var d *topicpb.Delivery
					if tt.routedAgain && i == 0 {
						var r *topicpb.Routed
						r, d = routedAndResult(t, rec)
						if m := r.GetMessage(); m.GetSeq() != 1 || m.GetClientMsgId() != "same" {
							t.Fatalf("routed again %v, want seq 1", r)
						}
						first = r
					} else {
						out := rec.Take()
						if len(out) != 1 || out[0].Topic != topics.Delivery(origin.Comet) {
							t.Fatalf("repeat %d published %d messages, want the answer alone on %s", i, len(out), topics.Delivery(origin.Comet))
						}
						var err error
						if d, err = topics.Deliveries.Decode(out[0].Msg); err != nil {
							t.Fatal(err)
						}
					}
					m := first.GetMessage()
					want := &topicpb.Delivery{Conns: []string{origin.Conn}, Frame: &clientpb.ServerFrame{RequestId: again.RequestId, Body: &clientpb.ServerFrame_SendResult{SendResult: &clientpb.SendResult{
						ClientMsgId: "same", MessageId: m.GetId(), Conversation: m.GetConversation(), Seq: 1, ServerTimeUnixMs: m.GetServerTimeUnixMs(),
					}}}}
					if !proto.Equal(d, want) {
						t.Fatalf("repeat %d answered %v\nwant %v", i, d, want)
					}
				}
			})
		}
	}
}

// TestDedupKeysDoNotCollide: ("acme", "alice:m-1") and ("acme:alice",
// "m-1") once shared a dedup key, so the second was answered with the
// first's SendResult and lost. A sender with ':' is refused now (and
// the directory's keys tell the two apart anyway, see wiring/directory).
func TestDedupKeysDoNotCollide(t *testing.T) {
	t.Parallel()
	h, rec := newHandler(t, routing.Config{}, newWorld(t))
	first := &topicpb.Submitted{Origin: origin, RequestId: 1, Sender: "acme", Trusted: true, ClientMsgId: "alice:m-1", To: &topicpb.Submitted_Room{Room: "lobby"}, Body: []byte("one")}
	if err := handle(t, h, first); err != nil {
		t.Fatal(err)
	}
	r, _ := routedAndResult(t, rec)
	second := &topicpb.Submitted{Origin: origin, RequestId: 2, Sender: "acme:alice", Trusted: true, ClientMsgId: "m-1", To: &topicpb.Submitted_Room{Room: "lobby"}, Body: []byte("two")}
	if err := handle(t, h, second); err != nil {
		t.Fatal(err)
	}
	out := rec.Take()
	if len(out) != 1 {
		t.Fatalf("second published %d messages, want its refusal alone", len(out))
	}
	d, err := topics.Deliveries.Decode(out[0].Msg)
	if err != nil {
		t.Fatal(err)
	}
	if res := d.GetFrame().GetSendResult(); res != nil && res.GetMessageId() == r.GetMessage().GetId() {
		t.Fatalf("second message answered with the first's id %s (seq %d)", res.GetMessageId(), res.GetSeq())
	}
	if d.GetFrame().GetError().GetCode() != clientpb.Error_INVALID {
		t.Fatalf("second answered %v, want INVALID", d.GetFrame())
	}
}

// TestRoutedAgainIsIdentical: a message routed again because its first
// routing was not marked complete (the mark failed, as when the worker
// dies between the publish and the mark) is the same message, to the
// same comets. The failed mark alone is not an error: the message was
// routed and answered.
func TestRoutedAgainIsIdentical(t *testing.T) {
	t.Parallel()
	store := failingStore{Store: newWorld(t), method: "MarkRouted", err: errors.New("redis: connection refused")}
	h, rec := newHandler(t, routing.Config{}, store)
	sub := &topicpb.Submitted{Origin: origin, Sender: "alice", ClientMsgId: "m", To: &topicpb.Submitted_User{User: "bob"}, Body: []byte("x")}
	if err := handle(t, h, sub); err != nil {
		t.Fatalf("err = %v, want nil: routed and answered, only the mark failed", err)
	}
	first, _ := routedAndResult(t, rec)
	time.Sleep(2 * time.Millisecond) // a new server time would differ
	h, rec = newHandler(t, routing.Config{}, store.Store)
	if err := handle(t, h, sub); err != nil {
		t.Fatal(err)
	}
	again, _ := routedAndResult(t, rec)
	if !proto.Equal(again, first) {
		t.Fatalf("routed again %v\nfirst %v", again, first)
	}
	if err := handle(t, h, sub); err != nil {
		t.Fatal(err)
	}
	if out := rec.Take(); len(out) != 1 || out[0].Topic != topics.Delivery(origin.Comet) {
		t.Fatalf("third submission published %d messages, want the answer alone", len(out))
	}
}

// TestTargets checks the comets, target and conversation of each kind of
// conversation, and the conversations recorded for the users'
// next logins. The submissions have no origin: nothing is answered.
func TestTargets(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		sub    *topicpb.Submitted
		comets []string
		want   *topicpb.Routed // target fields and conversation only
		convs  map[string][]string
	}{
		{"room", &topicpb.Submitted{Sender: "alice", To: &topicpb.Submitted_Room{Room: "lobby"}}, []string{"c1"},
			&topicpb.Routed{Room: "lobby", Message: &clientpb.Message{Conversation: "room:lobby"}}, nil},
		{"room nobody is online in", &topicpb.Submitted{Sender: "alice", To: &topicpb.Submitted_Room{Room: "dev"}}, nil,
			&topicpb.Routed{Room: "dev", Message: &clientpb.Message{Conversation: "room:dev"}}, nil},
		{"trusted push to a room of which the sender is no member", &topicpb.Submitted{Sender: "system", Trusted: true, To: &topicpb.Submitted_Room{Room: "lobby"}, Body: []byte("notice")}, []string{"c1"},
			&topicpb.Routed{Room: "lobby", Message: &clientpb.Message{Conversation: "room:lobby"}}, nil},
		{"dm: both users' comets, each once", &topicpb.Submitted{Sender: "alice", To: &topicpb.Submitted_User{User: "bob"}}, []string{"c1", "c2", "c3"},
			&topicpb.Routed{Users: []string{"alice", "bob"}, Message: &clientpb.Message{Conversation: "dm:alice:bob"}}, map[string][]string{"alice": {"dm:alice:bob"}, "bob": {"dm:alice:bob"}}},
		{"dm to an offline user", &topicpb.Submitted{Sender: "bob", To: &topicpb.Submitted_User{User: "carol"}}, []string{"c2", "c3"},
			&topicpb.Routed{Users: []string{"bob", "carol"}, Message: &clientpb.Message{Conversation: "dm:bob:carol"}}, map[string][]string{"bob": {"dm:bob:carol"}, "carol": {"dm:bob:carol"}}},
		{"broadcast: the live comets", &topicpb.Submitted{Sender: "system", Trusted: true, To: &topicpb.Submitted_Broadcast{Broadcast: true}}, []string{"c1", "c2", "c3"},
			&topicpb.Routed{Broadcast: true, Message: &clientpb.Message{Conversation: topics.BroadcastConversation}}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			store := newWorld(t)
			h, rec := newHandler(t, routing.Config{}, store)
			if err := handle(t, h, tt.sub); err != nil {
				t.Fatal(err)
			}
			out, _ := withoutNotices(rec.Take())
			if len(out) != 1 || out[0].Topic != topics.Routed.Name {
				t.Fatalf("published %d messages, want the routed one alone (no origin, no answer)", len(out))
			}
			r, err := topics.Routed.Decode(out[0].Msg)
			if err != nil {
				t.Fatal(err)
			}
			got := slices.Clone(r.GetComets())
			slices.Sort(got)
			if !slices.Equal(got, tt.comets) {
				t.Errorf("comets %v, want %v", r.GetComets(), tt.comets)
			}
			if r.GetRoom() != tt.want.GetRoom() || !slices.Equal(r.GetUsers(), tt.want.GetUsers()) || r.GetBroadcast() != tt.want.GetBroadcast() {
				t.Errorf("target room %q users %v broadcast %v, want %q %v %v", r.GetRoom(), r.GetUsers(), r.GetBroadcast(), tt.want.GetRoom(), tt.want.GetUsers(), tt.want.GetBroadcast())
			}
			if c := r.GetMessage().GetConversation(); c != tt.want.GetMessage().GetConversation() {
				t.Errorf("conversation %q, want %q", c, tt.want.GetMessage().GetConversation())
			}
			for _, u := range users {
				convs, err := store.Conversations(context.Background(), u)
				if err != nil {
					t.Fatal(err)
				}
				if !slices.Equal(convs, tt.convs[u]) {
					t.Errorf("conversations recorded for %s: %v, want %v", u, convs, tt.convs[u])
				}
			}
		})
	}
}

// failingStore is the real directory with one of the calls routing makes
// failing, as it would with Redis down: a working Redis does not fail on
// demand, and a broken one fails at the first call only.
type failingStore struct {
	*directory.Store
	method string
	err    error
}

func (f failingStore) fails(method string) bool { return f.method == method }

func (f failingStore) Room(ctx context.Context, id string) (directory.Room, bool, error) {
	if f.fails("Room") {
		return directory.Room{}, false, f.err
	}
	return f.Store.Room(ctx, id)
}

func (f failingStore) IsMember(ctx context.Context, room, user string) (bool, error) {
	if f.fails("IsMember") {
		return false, f.err
	}
	return f.Store.IsMember(ctx, room, user)
}

func (f failingStore) User(ctx context.Context, id string) (directory.User, bool, error) {
	if f.fails("User") {
		return directory.User{}, false, f.err
	}
	return f.Store.User(ctx, id)
}

func (f failingStore) Blocks(ctx context.Context, user, other string) (bool, error) {
	if f.fails("Blocks") {
		return false, f.err
	}
	return f.Store.Blocks(ctx, user, other)
}

func (f failingStore) AssignRestored(ctx context.Context, conversation string, subs []directory.Submission, newID func() string) ([]directory.Assigned, error) {
	if f.fails("Assign") {
		return nil, f.err
	}
	return f.Store.AssignRestored(ctx, conversation, subs, newID)
}

func (f failingStore) RoomComets(ctx context.Context, room string) ([]string, error) {
	if f.fails("RoomComets") {
		return nil, f.err
	}
	return f.Store.RoomComets(ctx, room)
}

func (f failingStore) UserSessions(ctx context.Context, user string) ([]directory.SessionRef, error) {
	if f.fails("UserSessions") {
		return nil, f.err
	}
	return f.Store.UserSessions(ctx, user)
}

func (f failingStore) LiveComets(ctx context.Context, now time.Time) ([]string, error) {
	if f.fails("LiveComets") {
		return nil, f.err
	}
	return f.Store.LiveComets(ctx, now)
}

func (f failingStore) AddConversation(ctx context.Context, user, conversation string) error {
	if f.fails("AddConversation") {
		return f.err
	}
	return f.Store.AddConversation(ctx, user, conversation)
}

func (f failingStore) MarkRoutedMany(ctx context.Context, conversation string, subs []directory.Submission, as []directory.Assigned) error {
	if f.fails("MarkRouted") {
		return f.err
	}
	return f.Store.MarkRoutedMany(ctx, conversation, subs, as)
}

var _ routing.Store = failingStore{}

// TestFailuresAreTransient: a failure of any directory call, or of the
// broker, is answered UNAVAILABLE to a waiting client and returned for
// retry otherwise; a directory failure routes nothing, and the retry
// routes the message in the place the failed attempt took.
func TestFailuresAreTransient(t *testing.T) {
	t.Parallel()
	room := &topicpb.Submitted{Origin: origin, Sender: "alice", ClientMsgId: "m", To: &topicpb.Submitted_Room{Room: "lobby"}}
	dm := &topicpb.Submitted{Origin: origin, Sender: "alice", ClientMsgId: "m", To: &topicpb.Submitted_User{User: "bob"}}
	broadcast := &topicpb.Submitted{Origin: origin, Sender: "system", Trusted: true, ClientMsgId: "m", To: &topicpb.Submitted_Broadcast{Broadcast: true}}
	retry := func(t *testing.T, h *routing.Handler, rec *testinfra.Recorder, sub *topicpb.Submitted) {
		t.Helper()
		if err := handle(t, h, sub); err != nil {
			t.Fatal(err)
		}
		if r, _ := routedAndResult(t, rec); r.GetMessage().GetSeq() != 1 {
			t.Fatalf("retry got seq %d, want 1", r.GetMessage().GetSeq())
		}
	}
	for _, tt := range []struct {
		method string
		sub    *topicpb.Submitted
	}{
		{"Room", room}, {"IsMember", room}, {"Assign", room}, {"RoomComets", room},
		{"User", dm}, {"Blocks", dm}, {"AddConversation", dm}, {"UserSessions", dm},
		{"LiveComets", broadcast},
	} {
		t.Run("directory down in "+tt.method, func(t *testing.T) {
			t.Parallel()
			store := failingStore{Store: newWorld(t), method: tt.method, err: errors.New("redis: connection refused")}
			h, rec := newHandler(t, routing.Config{}, store)
			sub := proto.CloneOf(tt.sub)
			// A client waits: it is told UNAVAILABLE at once and the
			// submission is acked (the client retries).
			if err := handle(t, h, sub); err != nil {
				t.Fatalf("err = %v, want the client answered", err)
			}
			if code := answerCode(t, rec); code != clientpb.Error_UNAVAILABLE {
				t.Fatalf("answer %v, want UNAVAILABLE", code)
			}
			// From the api gateway (no origin): retried.
			api := proto.CloneOf(sub)
			api.Origin = nil
			if err := handle(t, h, api); !errors.Is(err, store.err) || pipeline.IsPermanent(err) {
				t.Fatalf("err = %v, want %v, transient", err, store.err)
			}
			if out := rec.Take(); len(out) != 0 {
				t.Fatalf("published %d messages", len(out))
			}
			// The retry, with the directory back, on the same Redis.
			h, rec = newHandler(t, routing.Config{}, store.Store)
			retry(t, h, rec, sub)
		})
	}
	t.Run("directory down in MarkRouted", func(t *testing.T) {
		t.Parallel()
		store := failingStore{Store: newWorld(t), method: "MarkRouted", err: errors.New("redis: connection refused")}
		h, rec := newHandler(t, routing.Config{}, store)
		if err := handle(t, h, room); err != nil {
			t.Fatalf("err = %v, want nil: routed and answered, only the mark failed", err)
		}
		routedAndResult(t, rec)
		// A repeat is routed again, with the same seq.
		h, rec = newHandler(t, routing.Config{}, store.Store)
		retry(t, h, rec, room)
	})
	t.Run("broker down", func(t *testing.T) {
		t.Parallel()
		h, rec := newHandler(t, routing.Config{CoolDown: -1}, newWorld(t))
		rec.Err = errors.New("kafka: no leader")
		if err := handle(t, h, dm); !errors.Is(err, rec.Err) || pipeline.IsPermanent(err) {
			t.Fatalf("err = %v, want %v, transient", err, rec.Err)
		}
		rec.Err = nil
		retry(t, h, rec, dm)
	})
}

func TestUndecodableIsPermanent(t *testing.T) {
	t.Parallel()
	h, rec := newHandler(t, routing.Config{}, newWorld(t))
	if err := h.Pipeline().Handle(message.NewMessage("x", []byte{0xff})); !pipeline.IsPermanent(err) {
		t.Fatalf("err = %v, want permanent", err)
	}
	if out := rec.Take(); len(out) != 0 {
		t.Fatalf("published %d messages", len(out))
	}
}

func TestConfigValidate(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		max int
		ok  bool
	}{{0, true}, {1, true}, {routing.MaxBodyLimit, true}, {-1, false}, {routing.MaxBodyLimit + 1, false}} {
		if err := (routing.Config{MaxBodyBytes: tt.max}).Validate(); (err == nil) != tt.ok {
			t.Errorf("Validate with MaxBodyBytes %d = %v, want ok %v", tt.max, err, tt.ok)
		}
	}
}

// answerCode returns the code of the one Error frame published, failing
// if anything else was.
func answerCode(t *testing.T, rec *testinfra.Recorder) clientpb.Error_Code {
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
	return d.GetFrame().GetError().GetCode()
}

// TestSequenceGuard: no seq is issued while the counters are not known
// restored, and a counter found gone back is raised again, the message
// retried with a new seq and the counters marked for restoring.
func TestSequenceGuard(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	rdb, store, h, rec := lobbyAtSeq2(t)

	// Redis loses the room's counter (restarted without its data): the
	// next message would get seq 1 again.
	if err := rdb.Del(ctx, "{c:room:lobby}:seq").Err(); err != nil {
		t.Fatal(err)
	}
	if err := handle(t, h, sendToLobby("m3")); err != nil {
		t.Fatal(err)
	}
	if code := answerCode(t, rec); code != clientpb.Error_UNAVAILABLE {
		t.Fatalf("answer %v, want UNAVAILABLE", code)
	}
	if ok, err := store.SequencesRestored(ctx); err != nil || ok {
		t.Fatalf("restored = %v, %v after a counter went back; want false", ok, err)
	}
	// Not restored: nothing is issued, the api's push is retried.
	api := sendToLobby("m3")
	api.Origin = nil
	if err := handle(t, h, api); err == nil || pipeline.IsPermanent(err) {
		t.Fatalf("api push while not restored = %v, want a transient error", err)
	}
	if out := rec.Take(); len(out) != 0 {
		t.Fatalf("published %d messages while not restored", len(out))
	}
	// Restored (persist's guard): the retry gets seq 3, not a seq
	// already given.
	goesOnAtSeq3(t, store, h, rec)
}

// TestSequenceGuardAfterASlotLoss: a Redis Cluster shard loses its keys
// (the room's counter and its slot's mark) while the directory's own mark
// lives on another shard, and routing restarts, remembering no seq it
// issued: no seq is issued again; the directory's mark is removed, so
// that persist restores the counters, and after that the room goes on
// from its stored seqs (outside fault check).
func TestSequenceGuardAfterASlotLoss(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	rdb, store, _, _ := lobbyAtSeq2(t) // a routing worker that then stops
	if err := rdb.Del(ctx, "{c:room:lobby}:seq", directory.RestoredMarkKey("room:lobby")).Err(); err != nil {
		t.Fatal(err)
	}
	restarted, rec := newHandler(t, routing.Config{CoolDown: -1}, store)
	if err := handle(t, restarted, sendToLobby("m3")); err != nil {
		t.Fatal(err)
	}
	if code := answerCode(t, rec); code != clientpb.Error_UNAVAILABLE {
		t.Fatalf("answer %v, want UNAVAILABLE", code)
	}
	if ok, err := store.SequencesRestored(ctx); err != nil || ok {
		t.Fatalf("restored = %v, %v after a slot lost its mark; want false", ok, err)
	}
	goesOnAtSeq3(t, store, restarted, rec)
}

// sendToLobby is alice's message id to the lobby, from a connection.
func sendToLobby(id string) *topicpb.Submitted {
	return &topicpb.Submitted{Origin: origin, Sender: "alice", ClientMsgId: id, To: &topicpb.Submitted_Room{Room: "lobby"}}
}

// lobbyAtSeq2 is a handler on a real Redis that has routed alice's m1
// and m2 to the lobby, as seqs 1 and 2.
func lobbyAtSeq2(t *testing.T) (redis.UniversalClient, *directory.Store, *routing.Handler, *testinfra.Recorder) {
	t.Helper()
	rdb := testinfra.RedisClient(t)
	store := newWorldOn(t, rdb)
	h, rec := newHandler(t, routing.Config{CoolDown: -1}, store)
	for i, id := range []string{"m1", "m2"} {
		if err := handle(t, h, sendToLobby(id)); err != nil {
			t.Fatal(err)
		}
		if r, _ := routedAndResult(t, rec); r.GetMessage().GetSeq() != uint64(i+1) {
			t.Fatalf("seq %d, want %d", r.GetMessage().GetSeq(), i+1)
		}
	}
	return rdb, store, h, rec
}

// goesOnAtSeq3 restores the counters as persist does (the store holds
// the lobby's seqs 1 and 2) and checks that h routes alice's m3, refused
// before, as seq 3.
func goesOnAtSeq3(t *testing.T, store *directory.Store, h *routing.Handler, rec *testinfra.Recorder) {
	t.Helper()
	if err := store.RestoreSequences(context.Background(), map[string]uint64{"room:lobby": 2}); err != nil {
		t.Fatal(err)
	}
	if err := handle(t, h, sendToLobby("m3")); err != nil {
		t.Fatal(err)
	}
	if r, _ := routedAndResult(t, rec); r.GetMessage().GetSeq() != 3 {
		t.Fatalf("after the restore: seq %d, want 3", r.GetMessage().GetSeq())
	}
}

// TestAnswerWithinBound: a directory that hangs (Redis frozen) is
// answered UNAVAILABLE within the bound, not after Redis's own timeouts.
func TestAnswerWithinBound(t *testing.T) {
	t.Parallel()
	store := hangingStore{Store: newWorld(t), calls: new(atomic.Int32)}
	h, rec := newHandler(t, routing.Config{AnswerWithin: 100 * time.Millisecond, CoolDown: time.Minute}, store)
	sub := &topicpb.Submitted{Origin: origin, Sender: "alice", ClientMsgId: "m", To: &topicpb.Submitted_Room{Room: "lobby"}}
	done := make(chan error, 1)
	go func() { done <- handle(t, h, sub) }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no answer while the directory hangs")
	}
	if code := answerCode(t, rec); code != clientpb.Error_UNAVAILABLE {
		t.Fatalf("answer %v, want UNAVAILABLE", code)
	}
	// The messages queued behind it are answered without waiting in turn.
	for range 3 {
		if err := handle(t, h, sub); err != nil {
			t.Fatal(err)
		}
		if code := answerCode(t, rec); code != clientpb.Error_UNAVAILABLE {
			t.Fatalf("answer %v, want UNAVAILABLE", code)
		}
	}
	if n := store.calls.Load(); n != 1 {
		t.Fatalf("the hung directory was asked %d times, want once (then the breaker answers)", n)
	}
}

// hangingStore's room lookups block until their context ends.
type hangingStore struct {
	*directory.Store
	calls *atomic.Int32
}

func (s hangingStore) Room(ctx context.Context, _ string) (directory.Room, bool, error) {
	s.calls.Add(1)
	<-ctx.Done()
	return directory.Room{}, false, ctx.Err()
}

// TestSubmissionAges: routing observes the age of each submission that
// carries its submission time, once per message taken.
func TestSubmissionAges(t *testing.T) {
	t.Parallel()
	h, _ := newHandler(t, routing.Config{}, newWorld(t))
	subs := []*topicpb.Submitted{
		{Sender: "bob", ClientMsgId: "a-1", To: &topicpb.Submitted_Room{Room: "lobby"}, Body: []byte("x"), SubmittedUnixMs: time.Now().Add(-300 * time.Millisecond).UnixMilli()},
		{Sender: "bob", ClientMsgId: "a-2", To: &topicpb.Submitted_Room{Room: "lobby"}, Body: []byte("y")}, // no time: not observed
	}
	for _, sub := range subs {
		if err := handle(t, h, sub); err != nil {
			t.Fatal(err)
		}
	}
	ch := make(chan prometheus.Metric, 1)
	h.Ages().Collect(ch)
	var m dto.Metric
	if err := (<-ch).Write(&m); err != nil {
		t.Fatal(err)
	}
	if n, sum := m.GetHistogram().GetSampleCount(), m.GetHistogram().GetSampleSum(); n != 1 || sum < 0.3 || sum > 10 {
		t.Fatalf("%d ages observed, %.3fs in all; want 1 of about 0.3s", n, sum)
	}
}
