package history_test

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"google.golang.org/protobuf/proto"

	"github.com/laneim/laneim/internal/testinfra"
	"github.com/laneim/laneim/proto/clientpb"
	"github.com/laneim/laneim/proto/topicpb"
	"github.com/laneim/laneim/topics"
	"github.com/laneim/laneim/wiring/directory"
	"github.com/laneim/laneim/wiring/msgstore"
	"github.com/laneim/laneim/wiring/pipeline"
	"github.com/laneim/laneim/workers/history"
)

// members is a directory of memberships alone.
type members map[string]bool

func (m members) IsMember(_ context.Context, room, user string) (bool, error) {
	return m[room+"/"+user], nil
}

func (members) ConversationPage(context.Context, string, string, int, int) (directory.ConversationPage, error) {
	return directory.ConversationPage{}, errors.New("members lists no conversations")
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

// ask sends one request through h and returns the frame answering it.
func ask(t *testing.T, h *history.Handler, rec *testinfra.Recorder, req *topicpb.HistoryRequest) *clientpb.ServerFrame {
	t.Helper()
	msg, err := topics.HistoryRequests.Encode(req)
	if err != nil {
		t.Fatal(err)
	}
	if err := h.Pipeline().Handle(msg); err != nil {
		t.Fatal(err)
	}
	out := rec.Take()
	if len(out) != 1 || out[0].Topic != topics.Delivery(req.GetSession().GetComet()) {
		t.Fatalf("published %v", out)
	}
	d, err := topics.Deliveries.Decode(out[0].Msg)
	if err != nil {
		t.Fatal(err)
	}
	if d.GetFrame().GetRequestId() != req.GetRequestId() || len(d.GetConns()) != 1 || d.GetConns()[0] != req.GetSession().GetConn() {
		t.Fatalf("reply %v", d)
	}
	return d.GetFrame()
}

// TestConversations pages a user's conversation list: rooms first, then
// 1:1 conversations newest first, within the limit asked, the server's
// cap and its byte budget, each listed once.
func TestConversations(t *testing.T) {
	dir := testinfra.DemoDirectory(t) // alice is in lobby and dev
	ctx := context.Background()
	// zoe (in no room): 1,500 1:1 conversations with ids of about 70 bytes, the
	// newest with the greatest number.
	const n = 1500
	base := time.UnixMilli(1_700_000_000_000)
	dm := func(i int) string {
		return topics.DirectConversation("zoe", fmt.Sprintf("%s-%04d", strings.Repeat("x", 55), i))
	}
	for i := range n {
		if err := dir.AddConversationAt(ctx, "zoe", dm(i), base.Add(time.Duration(i)*time.Millisecond)); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := dir.Assign(ctx, dm(n-1), "zoe", "", func() string { return "id" }); err != nil {
		t.Fatal(err)
	}
	store, err := msgstore.OpenBolt(filepath.Join(t.TempDir(), "h.db"), msgstore.Retention{}, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	rec := &testinfra.Recorder{}
	h := testinfra.Must(history.New(store, dir, rec, nil))(t)
	session := &topicpb.Session{Comet: "c1", Conn: "x"}

	tests := []struct {
		name  string
		user  string
		limit uint32
		pages []int // states per page
		first string
	}{
		{"a few", "alice", 0, []int{2}, "room:dev"},
		{"pages of one", "alice", 1, []int{1, 1}, "room:dev"},
		{"none", "bob-without-conversations", 0, []int{0}, ""},
		{"server's cap", "zoe", 0, []int{1000, 500}, dm(n - 1)},
		{"above the cap", "zoe", 5000, []int{1000, 500}, dm(n - 1)},
		{"small pages", "zoe", 400, []int{400, 400, 400, 300}, dm(n - 1)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			seen := map[string]bool{}
			cursor := ""
			var got []int
			for page := 0; ; page++ {
				f := ask(t, h, rec, &topicpb.HistoryRequest{Session: session, RequestId: uint64(page + 1), User: tt.user, Conversations: &clientpb.Conversations{Cursor: cursor, Limit: tt.limit}})
				r := f.GetConversationsResult()
				if r == nil {
					t.Fatalf("page %d: %v", page, f)
				}
				if page == 0 && len(r.GetConversations()) > 0 && r.GetConversations()[0].GetConversation() != tt.first {
					t.Errorf("first %v, want %s", r.GetConversations()[0], tt.first)
				}
				for _, c := range r.GetConversations() {
					if seen[c.GetConversation()] {
						t.Fatalf("%s listed twice", c.GetConversation())
					}
					seen[c.GetConversation()] = true
				}
				if size := proto.Size(r); size > directory.MaxConversationBytes {
					t.Errorf("page %d is %d bytes", page, size)
				}
				got = append(got, len(r.GetConversations()))
				if !r.GetHasMore() {
					if r.GetNextCursor() != "" {
						t.Errorf("last page has a next cursor %q", r.GetNextCursor())
					}
					break
				}
				cursor = r.GetNextCursor()
			}
			if fmt.Sprint(got) != fmt.Sprint(tt.pages) {
				t.Errorf("pages of %v, want %v", got, tt.pages)
			}
		})
	}

	// The newest conversation carries its latest seq.
	f := ask(t, h, rec, &topicpb.HistoryRequest{Session: session, RequestId: 1, User: "zoe", Conversations: &clientpb.Conversations{Limit: 1}})
	if c := f.GetConversationsResult().GetConversations(); len(c) != 1 || c[0].GetLatestSeq() != 1 {
		t.Errorf("newest conversation %v, want seq 1", c)
	}
	// A cursor the server did not make is refused.
	f = ask(t, h, rec, &topicpb.HistoryRequest{Session: session, RequestId: 2, User: "zoe", Conversations: &clientpb.Conversations{Cursor: "page 2"}})
	if f.GetError().GetCode() != clientpb.Error_INVALID {
		t.Errorf("bad cursor answered %v, want INVALID", f)
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
