package routing_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"google.golang.org/protobuf/proto"

	"github.com/laneim/laneim/internal/testinfra"
	"github.com/laneim/laneim/proto/clientpb"
	"github.com/laneim/laneim/proto/topicpb"
	"github.com/laneim/laneim/topics"
	"github.com/laneim/laneim/wiring/directory"
	"github.com/laneim/laneim/wiring/pipeline"
	"github.com/laneim/laneim/workers/routing"
)

// fakeStore is an in-memory routing.Store. Err, when set, fails every call.
type fakeStore struct {
	mu       sync.Mutex
	Err      error
	users    map[string]directory.User
	rooms    map[string][]string // room -> members
	blocks   map[string][]string // user -> users it blocks
	sessions map[string][]directory.SessionRef
	comets   map[string][]string // room -> comets
	live     []string
	seq      map[string]uint64
	dedup    map[string]directory.Assigned
	convs    map[string][]string // user -> conversations
}

// newFakeStore: alice, bob, carol, dave and disabled mallory; lobby with
// alice and bob, hosted on c1; dev with alice only; dave blocks alice;
// alice online on c1 and c2, bob on c2 and c3; carol offline.
func newFakeStore() *fakeStore {
	return &fakeStore{
		users: map[string]directory.User{
			"alice": {ID: "alice"}, "bob": {ID: "bob"}, "carol": {ID: "carol"}, "dave": {ID: "dave"},
			"mallory": {ID: "mallory", Disabled: true},
		},
		rooms:  map[string][]string{"lobby": {"alice", "bob"}, "dev": {"alice"}, "empty": nil},
		blocks: map[string][]string{"dave": {"alice"}},
		sessions: map[string][]directory.SessionRef{
			"alice": {{Comet: "c1", Conn: "a1"}, {Comet: "c2", Conn: "a2"}, {Comet: "c1", Conn: "a3"}},
			"bob":   {{Comet: "c2", Conn: "b1"}, {Comet: "c3", Conn: "b2"}},
		},
		comets: map[string][]string{"lobby": {"c1"}},
		live:   []string{"c1", "c2", "c3"},
		seq:    map[string]uint64{},
		dedup:  map[string]directory.Assigned{},
		convs:  map[string][]string{},
	}
}

func (f *fakeStore) fail() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.Err
}

func (f *fakeStore) Room(_ context.Context, id string) (directory.Room, bool, error) {
	if err := f.fail(); err != nil {
		return directory.Room{}, false, err
	}
	_, ok := f.rooms[id]
	return directory.Room{ID: id}, ok, nil
}

func (f *fakeStore) IsMember(_ context.Context, room, user string) (bool, error) {
	if err := f.fail(); err != nil {
		return false, err
	}
	return slices.Contains(f.rooms[room], user), nil
}

func (f *fakeStore) User(_ context.Context, id string) (directory.User, bool, error) {
	if err := f.fail(); err != nil {
		return directory.User{}, false, err
	}
	u, ok := f.users[id]
	return u, ok, nil
}

func (f *fakeStore) Blocks(_ context.Context, user, other string) (bool, error) {
	if err := f.fail(); err != nil {
		return false, err
	}
	return slices.Contains(f.blocks[user], other), nil
}

func (f *fakeStore) Assign(_ context.Context, conversation, sender, clientMsgID string, newID func() string) (directory.Assigned, error) {
	if err := f.fail(); err != nil {
		return directory.Assigned{}, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	key := conversation + "\x00" + sender + "\x00" + clientMsgID
	if a, ok := f.dedup[key]; ok && clientMsgID != "" {
		a.Dup = true
		return a, nil
	}
	f.seq[conversation]++
	a := directory.Assigned{ID: newID(), Seq: f.seq[conversation]}
	f.dedup[key] = a
	return a, nil
}

func (f *fakeStore) RoomComets(_ context.Context, room string) ([]string, error) {
	if err := f.fail(); err != nil {
		return nil, err
	}
	return f.comets[room], nil
}

func (f *fakeStore) UserSessions(_ context.Context, user string) ([]directory.SessionRef, error) {
	if err := f.fail(); err != nil {
		return nil, err
	}
	return f.sessions[user], nil
}

func (f *fakeStore) LiveComets(_ context.Context, now time.Time) ([]string, error) {
	if err := f.fail(); err != nil {
		return nil, err
	}
	if now.IsZero() {
		return nil, errors.New("fake: LiveComets without a time")
	}
	return f.live, nil
}

func (f *fakeStore) AddConversation(_ context.Context, user, conversation string) error {
	if err := f.fail(); err != nil {
		return err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if !slices.Contains(f.convs[user], conversation) {
		f.convs[user] = append(f.convs[user], conversation)
	}
	return nil
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
	out := rec.Take()
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
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h, rec := newHandler(t, routing.Config{MaxBodyBytes: tt.max}, newFakeStore())
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

// TestRoutedMessage checks every field of the Routed and the SendResult.
func TestRoutedMessage(t *testing.T) {
	h, rec := newHandler(t, routing.Config{}, newFakeStore())
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

	// The next message of the room gets the next seq and a later id.
	sub.ClientMsgId = "cm-2"
	if err := handle(t, h, sub); err != nil {
		t.Fatal(err)
	}
	r2, _ := routedAndResult(t, rec)
	if r2.GetMessage().GetSeq() != 2 || r2.GetMessage().GetId() <= m.GetId() {
		t.Fatalf("second message %v after %v", r2.GetMessage(), m)
	}
}

// TestDuplicateRoutedAgain: a repeated client_msg_id gets the same id and
// seq, is routed again and answered again.
func TestDuplicateRoutedAgain(t *testing.T) {
	h, rec := newHandler(t, routing.Config{}, newFakeStore())
	sub := &topicpb.Submitted{Origin: origin, Sender: "alice", ClientMsgId: "same", To: &topicpb.Submitted_Room{Room: "lobby"}, Body: []byte("x")}
	if err := handle(t, h, sub); err != nil {
		t.Fatal(err)
	}
	first, _ := routedAndResult(t, rec)
	if err := handle(t, h, sub); err != nil {
		t.Fatal(err)
	}
	again, d := routedAndResult(t, rec)
	res := d.GetFrame().GetSendResult()
	if again.GetMessage().GetSeq() != 1 || again.GetMessage().GetId() != first.GetMessage().GetId() ||
		res.GetSeq() != 1 || res.GetMessageId() != first.GetMessage().GetId() || !slices.Equal(again.GetComets(), first.GetComets()) {
		t.Fatalf("duplicate routed %v answered %v; first %v", again, res, first)
	}
}

// TestTargets checks the comets and target of each kind of conversation.
func TestTargets(t *testing.T) {
	tests := []struct {
		name   string
		sub    *topicpb.Submitted
		comets []string
		want   *topicpb.Routed // target fields only
		convs  map[string][]string
	}{
		{"room", &topicpb.Submitted{Sender: "alice", To: &topicpb.Submitted_Room{Room: "lobby"}}, []string{"c1"}, &topicpb.Routed{Room: "lobby"}, nil},
		{"room nobody is online in", &topicpb.Submitted{Sender: "alice", To: &topicpb.Submitted_Room{Room: "dev"}}, nil, &topicpb.Routed{Room: "dev"}, nil},
		{"dm: both users' comets, each once", &topicpb.Submitted{Sender: "alice", To: &topicpb.Submitted_User{User: "bob"}}, []string{"c1", "c2", "c3"},
			&topicpb.Routed{Users: []string{"alice", "bob"}}, map[string][]string{"alice": {"dm:alice:bob"}, "bob": {"dm:alice:bob"}}},
		{"dm to an offline user", &topicpb.Submitted{Sender: "bob", To: &topicpb.Submitted_User{User: "carol"}}, []string{"c2", "c3"},
			&topicpb.Routed{Users: []string{"bob", "carol"}}, map[string][]string{"bob": {"dm:bob:carol"}, "carol": {"dm:bob:carol"}}},
		{"broadcast", &topicpb.Submitted{Sender: "system", Trusted: true, To: &topicpb.Submitted_Broadcast{Broadcast: true}}, []string{"c1", "c2", "c3"},
			&topicpb.Routed{Broadcast: true}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			store := newFakeStore()
			h, rec := newHandler(t, routing.Config{}, store)
			if err := handle(t, h, tt.sub); err != nil {
				t.Fatal(err)
			}
			out := rec.Take()
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
			if fmt.Sprint(store.convs) != fmt.Sprint(orEmpty(tt.convs)) {
				t.Errorf("conversations recorded %v, want %v", store.convs, tt.convs)
			}
		})
	}
}

func orEmpty(m map[string][]string) map[string][]string {
	if m == nil {
		return map[string][]string{}
	}
	return m
}

// TestFailuresAreTransient: directory and broker failures are returned
// for retry, and a directory failure publishes nothing.
func TestFailuresAreTransient(t *testing.T) {
	sub := &topicpb.Submitted{Origin: origin, Sender: "alice", ClientMsgId: "m", To: &topicpb.Submitted_User{User: "bob"}}

	store := newFakeStore()
	store.Err = errors.New("redis: connection refused")
	h, rec := newHandler(t, routing.Config{}, store)
	if err := handle(t, h, sub); !errors.Is(err, store.Err) || pipeline.IsPermanent(err) {
		t.Fatalf("directory down: err = %v, want it transient", err)
	}
	if out := rec.Take(); len(out) != 0 {
		t.Fatalf("directory down: published %d messages", len(out))
	}

	store = newFakeStore()
	h, rec = newHandler(t, routing.Config{}, store)
	rec.Err = errors.New("kafka: no leader")
	if err := handle(t, h, sub); !errors.Is(err, rec.Err) || pipeline.IsPermanent(err) {
		t.Fatalf("broker down: err = %v, want it transient", err)
	}
	// The retry, with the broker back, routes the message in the place
	// the failed attempt took.
	rec.Err = nil
	if err := handle(t, h, sub); err != nil {
		t.Fatal(err)
	}
	if r, _ := routedAndResult(t, rec); r.GetMessage().GetSeq() != 1 {
		t.Fatalf("retry got seq %d, want 1", r.GetMessage().GetSeq())
	}
}

func TestConfigValidate(t *testing.T) {
	for _, tt := range []struct {
		max int
		ok  bool
	}{{0, true}, {1, true}, {routing.MaxBodyLimit, true}, {-1, false}, {routing.MaxBodyLimit + 1, false}} {
		if err := (routing.Config{MaxBodyBytes: tt.max}).Validate(); (err == nil) != tt.ok {
			t.Errorf("Validate with MaxBodyBytes %d = %v, want ok %v", tt.max, err, tt.ok)
		}
	}
}

var _ routing.Store = (*fakeStore)(nil)
