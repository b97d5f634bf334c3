package history_test

import (
	"context"
	"path/filepath"
	"testing"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/laneim/laneim/internal/testinfra"
	"github.com/laneim/laneim/proto/clientpb"
	"github.com/laneim/laneim/proto/topicpb"
	"github.com/laneim/laneim/topics"
	"github.com/laneim/laneim/wiring/msgstore"
	"github.com/laneim/laneim/wiring/pipeline"
	"github.com/laneim/laneim/workers/history"
)

type members map[string]bool

func (m members) IsMember(_ context.Context, room, user string) (bool, error) {
	return m[room+"/"+user], nil
}

func TestAnswers(t *testing.T) {
	store, err := msgstore.OpenBolt(filepath.Join(t.TempDir(), "h.db"), msgstore.Retention{}, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	ctx := context.Background()
	var ms []*clientpb.Message
	for _, conv := range []string{"room:lobby", "dm:alice:bob", "broadcast"} {
		for seq := uint64(1); seq <= 5; seq++ {
			ms = append(ms, &clientpb.Message{Conversation: conv, Seq: seq})
		}
	}
	if err := store.Append(ctx, ms); err != nil {
		t.Fatal(err)
	}
	rec := &testinfra.Recorder{}
	h := testinfra.Must(history.New(store, members{"lobby/alice": true}, rec, nil))(t)
	tests := []struct {
		user, conv string
		after      uint64
		limit      uint32
		want       int // messages; -1: refused
		more       bool
	}{
		{"alice", "room:lobby", 2, 0, 3, false},
		{"alice", "room:lobby", 0, 2, 2, true},
		{"bob", "room:lobby", 0, 0, -1, false},
		{"bob", "dm:alice:bob", 4, 0, 1, false},
		{"carol", "dm:alice:bob", 0, 0, -1, false},
		{"carol", "broadcast", 0, 0, 5, false},
		{"carol", "weird", 0, 0, -1, false},
	}
	for _, tt := range tests {
		msg, err := topics.HistoryRequests.Encode(&topicpb.HistoryRequest{
			Session: &topicpb.Session{Comet: "c1", Conn: "x"}, RequestId: 9, User: tt.user, Conversation: tt.conv, AfterSeq: tt.after, Limit: tt.limit,
		})
		if err != nil {
			t.Fatal(err)
		}
		if err := h.Pipeline().Handle(msg); err != nil {
			t.Fatal(err)
		}
		out := rec.Take()
		if len(out) != 1 || out[0].Topic != topics.Delivery("c1") {
			t.Fatalf("%s %s: published %v", tt.user, tt.conv, out)
		}
		d, _ := topics.Deliveries.Decode(out[0].Msg)
		f := d.GetFrame()
		if f.GetRequestId() != 9 || d.GetConns()[0] != "x" {
			t.Fatalf("reply %v", d)
		}
		if tt.want < 0 {
			if f.GetError().GetCode() != clientpb.Error_NOT_MEMBER {
				t.Errorf("%s %s: %v, want NOT_MEMBER", tt.user, tt.conv, f)
			}
			continue
		}
		r := f.GetSyncResult()
		if len(r.GetMessages()) != tt.want || r.GetHasMore() != tt.more || r.GetConversation() != tt.conv {
			t.Errorf("%s %s after %d: %d messages more=%v", tt.user, tt.conv, tt.after, len(r.GetMessages()), r.GetHasMore())
		}
	}
	if err := h.Pipeline().Handle(message.NewMessage("x", []byte{0xff})); !pipeline.IsPermanent(err) {
		t.Errorf("undecodable = %v", err)
	}
}

// BenchmarkCatchUp1000 measures serving a client 1,000 missed messages
// (two Sync pages of 500) from the embedded store, encoding included.
func BenchmarkCatchUp1000(b *testing.B) {
	store, err := msgstore.OpenBolt(filepath.Join(b.TempDir(), "h.db"), msgstore.Retention{}, 0)
	if err != nil {
		b.Fatal(err)
	}
	defer store.Close()
	var ms []*clientpb.Message
	for seq := uint64(1); seq <= 1000; seq++ {
		ms = append(ms, &clientpb.Message{Conversation: "room:lobby", Seq: seq, Sender: "alice", Body: []byte("a message of ordinary length, about sixty bytes long......")})
	}
	if err := store.Append(context.Background(), ms); err != nil {
		b.Fatal(err)
	}
	rec := &testinfra.Recorder{}
	h := testinfra.Must(history.New(store, members{"lobby/bob": true}, rec, nil))(b)
	b.ReportAllocs()
	for b.Loop() {
		for _, after := range []uint64{0, 500} {
			msg, _ := topics.HistoryRequests.Encode(&topicpb.HistoryRequest{Session: &topicpb.Session{Comet: "c", Conn: "x"}, User: "bob", Conversation: "room:lobby", AfterSeq: after, Limit: 500})
			if err := h.Pipeline().Handle(msg); err != nil {
				b.Fatal(err)
			}
		}
		rec.Take()
	}
}
