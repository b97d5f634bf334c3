package topics_test

import (
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"google.golang.org/protobuf/proto"

	"github.com/laneim/laneim/proto/clientpb"
	"github.com/laneim/laneim/proto/topicpb"
	"github.com/laneim/laneim/topics"
)

func TestRoundTripKeepsPayloadAndKey(t *testing.T) {
	in := &topicpb.Submitted{Sender: "alice", To: &topicpb.Submitted_Room{Room: "lobby"}, Body: []byte("hi")}
	msg, err := topics.Submitted.Encode(in)
	if err != nil {
		t.Fatal(err)
	}
	if got := msg.Metadata.Get(topics.KeyMetadata); got != "room:lobby" {
		t.Errorf("key = %q, want room:lobby", got)
	}
	out, err := topics.Submitted.Decode(msg)
	if err != nil {
		t.Fatal(err)
	}
	if !proto.Equal(in, out) {
		t.Errorf("decoded %v, want %v", out, in)
	}
}

func TestDecodeRejectsGarbage(t *testing.T) {
	msg := message.NewMessage("x", []byte{0xff, 0xff, 0xff})
	if _, err := topics.Routed.Decode(msg); err == nil {
		t.Fatal("decoding garbage succeeded")
	}
}

func TestConversations(t *testing.T) {
	tests := []struct {
		name string
		in   *topicpb.Submitted
		want string
	}{
		{"room", &topicpb.Submitted{Sender: "a", To: &topicpb.Submitted_Room{Room: "r1"}}, "room:r1"},
		{"dm sorted", &topicpb.Submitted{Sender: "zoe", To: &topicpb.Submitted_User{User: "adam"}}, "dm:adam:zoe"},
		{"dm other way", &topicpb.Submitted{Sender: "adam", To: &topicpb.Submitted_User{User: "zoe"}}, "dm:adam:zoe"},
		{"broadcast", &topicpb.Submitted{Sender: "a", To: &topicpb.Submitted_Broadcast{Broadcast: true}}, "broadcast"},
		{"none", &topicpb.Submitted{Sender: "a"}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := topics.SubmittedConversation(tt.in); got != tt.want {
				t.Errorf("got %q, want %q", got, tt.want)
			}
		})
	}
}

func TestLookup(t *testing.T) {
	tests := []struct {
		name    string
		found   bool
		payload string
	}{
		{"messages.routed", true, "laneim.topic.v1.Routed"},
		{"deliver.c1", true, "laneim.topic.v1.Delivery"},
		{"deliver.", false, ""},
		{"nope", false, ""},
	}
	for _, tt := range tests {
		s, ok := topics.Lookup(tt.name)
		if ok != tt.found || (ok && string(s.Payload) != tt.payload) {
			t.Errorf("Lookup(%q) = %v, %v", tt.name, s.Payload, ok)
		}
	}
	if c, ok := topics.CometOf(topics.Delivery("c7")); !ok || c != "c7" {
		t.Errorf("CometOf = %q, %v", c, ok)
	}
}

// TestSessionEventsAreKeyedByUser: every session event but a heartbeat,
// revocations included, is keyed by its user, so presence applies a
// user's events in order.
func TestSessionEventsAreKeyedByUser(t *testing.T) {
	t.Parallel()
	tests := []struct {
		ev   *topicpb.SessionEvent
		want string
	}{
		{&topicpb.SessionEvent{Kind: topicpb.SessionEvent_OPENED, Session: &topicpb.Session{Comet: "c1", Conn: "x"}, User: "bob"}, "user/bob"},
		{&topicpb.SessionEvent{Kind: topicpb.SessionEvent_JOINED, Session: &topicpb.Session{Comet: "c1", Conn: "x"}, User: "bob", Room: "lobby"}, "user/bob"},
		{&topicpb.SessionEvent{Kind: topicpb.SessionEvent_MEMBERSHIP_REVOKED, User: "bob", Room: "lobby", Reason: "membership removed"}, "user/bob"},
		{&topicpb.SessionEvent{Kind: topicpb.SessionEvent_USER_REVOKED, User: "bob", Reason: "account disabled"}, "user/bob"},
		{&topicpb.SessionEvent{Kind: topicpb.SessionEvent_HEARTBEAT, Session: &topicpb.Session{Comet: "c1"}}, "comet/c1"},
	}
	for _, tt := range tests {
		msg, err := topics.SessionEvents.Encode(tt.ev)
		if err != nil {
			t.Fatal(err)
		}
		if got := msg.Metadata.Get(topics.KeyMetadata); got != tt.want {
			t.Errorf("%v keyed %q, want %q", tt.ev.GetKind(), got, tt.want)
		}
		out, err := topics.SessionEvents.Decode(msg)
		if err != nil || !proto.Equal(out, tt.ev) {
			t.Errorf("round trip of %v = %v, %v", tt.ev, out, err)
		}
	}
}

func TestRetryAfterMs(t *testing.T) {
	for _, tt := range []struct {
		d    time.Duration
		want uint32
	}{
		{0, 1}, {time.Microsecond, 1}, {time.Millisecond, 1}, {time.Millisecond + 1, 2},
		{250 * time.Millisecond, 250}, {2 * time.Hour, 3_600_000},
	} {
		if got := topics.RetryAfterMs(tt.d); got != tt.want {
			t.Errorf("RetryAfterMs(%v) = %d, want %d", tt.d, got, tt.want)
		}
	}
}

// TestDeliveryLanes checks which lane of a delivery topic each kind of
// delivery takes: the answers to reads the bulk lane, everything else
// (live messages, control, other answers, errors) the live lane.
func TestDeliveryLanes(t *testing.T) {
	tests := []struct {
		name string
		f    *clientpb.ServerFrame
		bulk bool
	}{
		{"messages", &clientpb.ServerFrame{Body: &clientpb.ServerFrame_Messages{Messages: &clientpb.MessageBatch{}}}, false},
		{"sync.result", &clientpb.ServerFrame{RequestId: 7, Body: &clientpb.ServerFrame_SyncResult{SyncResult: &clientpb.SyncResult{}}}, true},
		{"conversations.result", &clientpb.ServerFrame{RequestId: 7, Body: &clientpb.ServerFrame_ConversationsResult{ConversationsResult: &clientpb.ConversationsResult{}}}, true},
		{"sync.refused", &clientpb.ServerFrame{RequestId: 7, Body: &clientpb.ServerFrame_Error{Error: &clientpb.Error{Code: clientpb.Error_UNAVAILABLE}}}, false},
		{"login.result", &clientpb.ServerFrame{RequestId: 1, Body: &clientpb.ServerFrame_LoginResult{LoginResult: &clientpb.LoginResult{}}}, false},
		{"no.frame", nil, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			key := topics.Deliveries.Key(&topicpb.Delivery{Frame: tt.f})
			if got := key == topics.DeliveryBulkKey; got != tt.bulk {
				t.Fatalf("key %q: bulk = %v, want %v", key, got, tt.bulk)
			}
			want := int32(0)
			if tt.bulk {
				want = 1
			}
			if got := topics.DeliveryPartition(key, topics.Deliveries.Partitions); got != want {
				t.Errorf("partition %d of %d, want %d", got, topics.Deliveries.Partitions, want)
			}
			if got := topics.DeliveryPartition(key, 1); got != 0 {
				t.Errorf("partition %d of a one-partition topic, want 0", got)
			}
		})
	}
}
