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

// world is the directory on a redis-server of the test's own, with users
// alice, bob, carol and acme, the disabled mallory, and room lobby whose
// members are alice and mallory.
func world(t testing.TB) *directory.Store {
	t.Helper()
	d := directory.New(testinfra.RedisClient(t))
	ctx := context.Background()
	for _, u := range []directory.User{{ID: "alice"}, {ID: "bob"}, {ID: "carol"}, {ID: "acme"}, {ID: "mallory", Disabled: true}} {
		if err := d.PutUser(ctx, u); err != nil {
			t.Fatal(err)
		}
	}
	if err := d.PutRoom(ctx, directory.Room{ID: "lobby"}); err != nil {
		t.Fatal(err)
	}
	if err := d.AddMembers(ctx, []directory.Membership{{Room: "lobby", User: "alice"}, {Room: "lobby", User: "mallory"}}); err != nil {
		t.Fatal(err)
	}
	return d
}

func openStore(t testing.TB) *msgstore.Bolt {
	t.Helper()
	store, err := msgstore.OpenBolt(filepath.Join(t.TempDir(), "h.db"), msgstore.Retention{}, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	return store
}

// sync asks h for conversation's messages after seq after as alice and
// returns the one frame answering it.
func sync(t *testing.T, h *history.Handler, rec *testinfra.Recorder, user, conv string, after uint64, limit uint32) *clientpb.ServerFrame {
	t.Helper()
	msg, err := topics.HistoryRequests.Encode(&topicpb.HistoryRequest{
		Session: &topicpb.Session{Comet: "c1", Conn: "x"}, RequestId: 9, User: user, Conversation: conv, AfterSeq: after, Limit: limit,
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := h.Pipeline().Handle(msg); err != nil {
		t.Fatal(err)
	}
	out := rec.Take()
	if len(out) != 1 || out[0].Topic != topics.Delivery("c1") {
		t.Fatalf("%s %s: published %v", user, conv, out)
	}
	d, err := topics.Deliveries.Decode(out[0].Msg)
	if err != nil {
		t.Fatal(err)
	}
	if d.GetFrame().GetRequestId() != 9 || d.GetConns()[0] != "x" {
		t.Fatalf("reply %v", d)
	}
	return d.GetFrame()
}

func TestAnswers(t *testing.T) {
	t.Parallel()
	store := openStore(t)
	ctx := context.Background()
	var ms []*clientpb.Message
	for _, conv := range []string{"room:lobby", "dm:alice:bob", "broadcast", "dm:acme:alice:bob"} {
		for seq := uint64(1); seq <= 5; seq++ {
			ms = append(ms, &clientpb.Message{Conversation: conv, Seq: seq})
		}
	}
	if err := store.Append(ctx, ms); err != nil {
		t.Fatal(err)
	}
	rec := &testinfra.Recorder{}
	h := testinfra.Must(history.New(history.Config{}, store, world(t), rec, nil))(t)
	tests := []struct {
		user, conv string
		after      uint64
		limit      uint32
		want       int // messages, when not refused
		more       bool
		refused    clientpb.Error_Code
	}{
		{"alice", "room:lobby", 2, 0, 3, false, 0},
		{"alice", "room:lobby", 0, 2, 2, true, 0},
		{"bob", "room:lobby", 0, 0, 0, false, clientpb.Error_NOT_MEMBER},
		{"alice", "room:nope", 0, 0, 0, false, clientpb.Error_NOT_MEMBER},
		{"bob", "dm:alice:bob", 4, 0, 1, false, 0},
		{"carol", "dm:alice:bob", 0, 0, 0, false, clientpb.Error_NOT_MEMBER},
		{"carol", "broadcast", 0, 0, 5, false, 0},
		{"carol", "weird", 0, 0, 0, false, clientpb.Error_NOT_MEMBER},
		// 1:1 ids are parsed by the one parser: an id with three parts
		// is nobody's, whatever its first part.
		{"acme", "dm:acme:alice:bob", 0, 0, 0, false, clientpb.Error_NOT_MEMBER},
		{"acme", "dm:acme:alice", 0, 0, 0, false, 0},
		{"alice", "dm:bob:alice", 0, 0, 0, false, clientpb.Error_NOT_MEMBER},
		// A user disabled or unknown in the directory reads nothing.
		{"mallory", "room:lobby", 0, 0, 0, false, clientpb.Error_UNKNOWN_USER},
		{"mallory", "broadcast", 0, 0, 0, false, clientpb.Error_UNKNOWN_USER},
		{"zed", "broadcast", 0, 0, 0, false, clientpb.Error_UNKNOWN_USER},
		{topics.SystemSender, "dm:bob:" + topics.SystemSender, 0, 0, 0, false, clientpb.Error_UNKNOWN_USER},
	}
	for _, tt := range tests {
		f := sync(t, h, rec, tt.user, tt.conv, tt.after, tt.limit)
		if tt.refused != 0 {
			if f.GetError().GetCode() != tt.refused {
				t.Errorf("%s %s: %v, want %v", tt.user, tt.conv, f, tt.refused)
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
	t.Parallel()
	dir := testinfra.DemoDirectory(t) // alice is in lobby and dev; mallory is disabled
	ctx := context.Background()
	for _, u := range []string{"zoe", "bob-without-conversations"} {
		if err := dir.PutUser(ctx, directory.User{ID: u}); err != nil {
			t.Fatal(err)
		}
	}
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
	store := openStore(t)
	rec := &testinfra.Recorder{}
	h := testinfra.Must(history.New(history.Config{}, store, dir, rec, nil))(t)
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
	// A disabled or unknown user lists nothing.
	for _, u := range []string{"mallory", "nobody"} {
		f = ask(t, h, rec, &topicpb.HistoryRequest{Session: session, RequestId: 3, User: u, Conversations: &clientpb.Conversations{}})
		if f.GetError().GetCode() != clientpb.Error_UNKNOWN_USER {
			t.Errorf("%s's conversations answered %v, want UNKNOWN_USER", u, f)
		}
	}
}

// BenchmarkCatchUp1000 measures serving a client 1,000 missed messages
// (two Sync pages of 500) from the embedded store, encoding included.
func BenchmarkCatchUp1000(b *testing.B) {
	store := openStore(b)
	var ms []*clientpb.Message
	for seq := uint64(1); seq <= 1000; seq++ {
		ms = append(ms, &clientpb.Message{Conversation: "room:lobby", Seq: seq, Sender: "alice", Body: []byte("a message of ordinary length, about sixty bytes long......")})
	}
	if err := store.Append(context.Background(), ms); err != nil {
		b.Fatal(err)
	}
	rec := &testinfra.Recorder{}
	h := testinfra.Must(history.New(history.Config{}, store, world(b), rec, nil))(b)
	b.ReportAllocs()
	for b.Loop() {
		for _, after := range []uint64{0, 500} {
			msg, _ := topics.HistoryRequests.Encode(&topicpb.HistoryRequest{Session: &topicpb.Session{Comet: "c", Conn: "x"}, User: "alice", Conversation: "room:lobby", AfterSeq: after, Limit: 500})
			if err := h.Pipeline().Handle(msg); err != nil {
				b.Fatal(err)
			}
		}
		rec.Take()
	}
}

// TestSyncWaitsForTheStore: a Sync served just after routing issued seqs
// that persist has yet to store waits for them (issue 10: a Sync 5 ms
// after the last SendResult missed up to 49 of 50 messages), and answers
// what the store has once CatchUpWait has passed.
func TestSyncWaitsForTheStore(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	store, dir := openStore(t), world(t)
	msgs := func(from, to uint64) []*clientpb.Message {
		var out []*clientpb.Message
		for seq := from; seq <= to; seq++ {
			out = append(out, &clientpb.Message{Conversation: "room:lobby", Seq: seq, Id: fmt.Sprint("m", seq)})
		}
		return out
	}
	if err := store.Append(ctx, msgs(1, 5)); err != nil {
		t.Fatal(err)
	}
	// Routing has issued up to 50; persist stores 6..50 a little later.
	if err := dir.RaiseSeq(ctx, "room:lobby", 50); err != nil {
		t.Fatal(err)
	}
	rec := &testinfra.Recorder{}
	h := testinfra.Must(history.New(history.Config{CatchUpWait: 5 * time.Second}, store, dir, rec, nil))(t)
	stored := make(chan error, 1)
	go func() {
		time.Sleep(50 * time.Millisecond)
		stored <- store.Append(ctx, msgs(6, 50))
	}()
	r := sync(t, h, rec, "alice", "room:lobby", 0, 0).GetSyncResult()
	if err := <-stored; err != nil {
		t.Fatal(err)
	}
	if n := len(r.GetMessages()); n != 50 || r.GetHasMore() {
		t.Fatalf("Sync while persist lags: %d messages, has_more %v; want all 50", n, r.GetHasMore())
	}

	// Seq 51 was issued and never stored (its sender gave up): the answer
	// comes after CatchUpWait with what there is.
	if err := dir.RaiseSeq(ctx, "room:lobby", 51); err != nil {
		t.Fatal(err)
	}
	h = testinfra.Must(history.New(history.Config{CatchUpWait: 50 * time.Millisecond}, store, dir, rec, nil))(t)
	r = sync(t, h, rec, "alice", "room:lobby", 45, 0).GetSyncResult()
	if n := len(r.GetMessages()); n != 5 || r.GetHasMore() {
		t.Fatalf("Sync with a seq never stored: %d messages, has_more %v; want 5, false", n, r.GetHasMore())
	}
}

// TestPagesBoundedInBytes: 120 messages of 16 KiB, the default page of
// 100 would be 1.6 MB, over the broker's 1 MB limit (issue 10: such a
// Sync was never answered). The page is cut and says has_more, and paging
// on returns every message once.
func TestPagesBoundedInBytes(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	store, dir := openStore(t), world(t)
	var ms []*clientpb.Message
	for seq := uint64(1); seq <= 120; seq++ {
		ms = append(ms, &clientpb.Message{Conversation: "room:lobby", Seq: seq, Body: make([]byte, 16<<10)})
	}
	if err := store.Append(ctx, ms); err != nil {
		t.Fatal(err)
	}
	rec := &testinfra.Recorder{}
	h := testinfra.Must(history.New(history.Config{}, store, dir, rec, nil))(t)
	var after uint64
	for pages := 0; ; pages++ {
		if pages == 20 {
			t.Fatal("more than 20 pages for 120 messages")
		}
		f := sync(t, h, rec, "alice", "room:lobby", after, 0)
		if size := proto.Size(f); size > 600<<10 {
			t.Fatalf("page of %d bytes, want at most ~512 KiB", size)
		}
		r := f.GetSyncResult()
		for _, m := range r.GetMessages() {
			if m.GetSeq() != after+1 {
				t.Fatalf("seq %d after %d", m.GetSeq(), after)
			}
			after = m.GetSeq()
		}
		if !r.GetHasMore() {
			break
		}
	}
	if after != 120 {
		t.Fatalf("paged up to seq %d, want 120", after)
	}
}

// failingStore fails every read, as a store that is down.
type failingStore struct{}

func (failingStore) After(context.Context, string, uint64, int) ([]*clientpb.Message, bool, error) {
	return nil, false, errors.New("store down")
}

func (failingStore) Before(context.Context, string, uint64, int) ([]*clientpb.Message, bool, error) {
	return nil, false, errors.New("store down")
}

func (failingStore) Changes(context.Context, string, uint64, uint64) (map[uint64]*clientpb.Message, error) {
	return nil, errors.New("store down")
}

// TestUnavailable: a store or directory that fails is answered
// UNAVAILABLE at once, not retried while the client waits.
func TestUnavailable(t *testing.T) {
	t.Parallel()
	rec := &testinfra.Recorder{}
	h := testinfra.Must(history.New(history.Config{}, failingStore{}, world(t), rec, nil))(t)
	if f := sync(t, h, rec, "alice", "room:lobby", 0, 0); f.GetError().GetCode() != clientpb.Error_UNAVAILABLE {
		t.Fatalf("answer %v, want UNAVAILABLE", f)
	}
}

// TestSyncCurrentState: with current_state, a page's messages come as
// they are now, edited or recalled by messages after the page; the edits
// and recalls themselves come as stored, and without current_state
// nothing changes.
func TestSyncCurrentState(t *testing.T) {
	t.Parallel()
	store := openStore(t)
	ctx := context.Background()
	conv := "dm:alice:bob"
	err := store.Append(ctx, []*clientpb.Message{
		{Id: "1", Conversation: conv, Seq: 1, Sender: "alice", Body: []byte("helo"), ContentType: "text/plain"},
		{Id: "2", Conversation: conv, Seq: 2, Sender: "alice", Body: []byte("oops"), ContentType: "text/plain"},
		{Id: "3", Conversation: conv, Seq: 3, Sender: "bob", Body: []byte("hi")},
		{Id: "4", Conversation: conv, Seq: 4, Sender: "alice", Body: []byte("hello"), ContentType: "text/markdown", Edits: 1},
		{Id: "5", Conversation: conv, Seq: 5, Sender: "alice", Recalls: 2},
		{Id: "6", Conversation: conv, Seq: 6, Sender: "alice", Body: []byte("hello!"), ContentType: "text/plain", Edits: 1},
	})
	if err != nil {
		t.Fatal(err)
	}
	rec := &testinfra.Recorder{}
	h := testinfra.Must(history.New(history.Config{}, store, world(t), rec, nil))(t)
	page := func(after uint64, limit uint32, current bool) []*clientpb.Message {
		t.Helper()
		f := ask(t, h, rec, &topicpb.HistoryRequest{Session: &topicpb.Session{Comet: "c1", Conn: "x"}, RequestId: 3, User: "bob",
			Conversation: conv, AfterSeq: after, Limit: limit, CurrentState: current})
		if f.GetSyncResult() == nil {
			t.Fatalf("answer %v", f)
		}
		return f.GetSyncResult().GetMessages()
	}
	type state struct {
		seq            uint64
		body           string
		edited, recall uint64
	}
	tests := []struct {
		after   uint64
		limit   uint32
		current bool
		want    []state
	}{
		// The changes are all after the page.
		{0, 3, true, []state{{1, "hello!", 6, 0}, {2, "", 0, 5}, {3, "hi", 0, 0}}},
		{0, 3, false, []state{{1, "helo", 0, 0}, {2, "oops", 0, 0}, {3, "hi", 0, 0}}},
		// The edits and recall stay as they are.
		{3, 0, true, []state{{4, "hello", 0, 0}, {5, "", 0, 0}, {6, "hello!", 0, 0}}},
		{1, 1, true, []state{{2, "", 0, 5}}},
	}
	for _, tt := range tests {
		got := page(tt.after, tt.limit, tt.current)
		if len(got) != len(tt.want) {
			t.Errorf("after %d limit %d current %v: %d messages, want %d", tt.after, tt.limit, tt.current, len(got), len(tt.want))
			continue
		}
		for i, w := range tt.want {
			m := got[i]
			if m.GetSeq() != w.seq || string(m.GetBody()) != w.body || m.GetEditedSeq() != w.edited || m.GetRecalledSeq() != w.recall {
				t.Errorf("after %d current %v: message %d = %v, want %+v", tt.after, tt.current, i, m, w)
			}
		}
	}
	if m := page(0, 1, true)[0]; m.GetContentType() != "text/plain" || m.GetId() != "1" || m.GetSender() != "alice" {
		t.Errorf("edited message %v: want the latest edit's content type, its own id and sender", m)
	}
	if m := page(1, 1, true)[0]; m.GetContentType() != "" {
		t.Errorf("recalled message %v: want no content type", m)
	}

	// Routing issued seq 7, an edit of 3, which persist stores a little
	// later: a full page with current_state waits for it.
	dir := world(t)
	if err := dir.RaiseSeq(ctx, conv, 7); err != nil {
		t.Fatal(err)
	}
	h = testinfra.Must(history.New(history.Config{CatchUpWait: 5 * time.Second}, store, dir, rec, nil))(t)
	stored := make(chan error, 1)
	go func() {
		time.Sleep(50 * time.Millisecond)
		stored <- store.Append(ctx, []*clientpb.Message{{Id: "7", Conversation: conv, Seq: 7, Sender: "bob", Body: []byte("hi!"), Edits: 3}})
	}()
	got := page(0, 3, true)
	if err := <-stored; err != nil {
		t.Fatal(err)
	}
	if m := got[2]; string(m.GetBody()) != "hi!" || m.GetEditedSeq() != 7 {
		t.Errorf("Sync while persist lags: %v, want the edit stored after it was asked", m)
	}
}

// TestExpiredRequestsSkipped: a request taken up past its comet's
// deadline (pipeline.Expired) is skipped without an answer, and counted:
// the comet has answered it UNAVAILABLE, and its client has retried. One
// within its time, or from a comet that sets no deadline, is answered.
func TestExpiredRequestsSkipped(t *testing.T) {
	t.Parallel()
	rec := &testinfra.Recorder{}
	h := testinfra.Must(history.New(history.Config{}, openStore(t), world(t), rec, nil))(t)
	now := time.Now()
	for _, tc := range []struct {
		name               string
		received, deadline time.Time
		answered           bool
	}{
		{"past its deadline", now.Add(-6 * time.Second), now.Add(-time.Second), false},
		{"within the margin of its deadline", now.Add(-4500 * time.Millisecond), now.Add(500 * time.Millisecond), false},
		{"in time", now.Add(-time.Second), now.Add(4 * time.Second), true},
		{"no deadline", now.Add(-time.Hour), time.Time{}, true},
	} {
		var deadline int64
		if !tc.deadline.IsZero() {
			deadline = tc.deadline.UnixMilli()
		}
		before := h.Expired()
		msg, err := topics.HistoryRequests.Encode(&topicpb.HistoryRequest{
			Session: &topicpb.Session{Comet: "c1", Conn: "x"}, RequestId: 9, User: "alice", Conversation: "room:lobby",
			ReceivedUnixMs: tc.received.UnixMilli(), DeadlineUnixMs: deadline,
		})
		if err != nil {
			t.Fatal(err)
		}
		if err := h.Pipeline().Handle(msg); err != nil {
			t.Fatal(err)
		}
		out := rec.Take()
		if got := len(out) == 1; got != tc.answered || len(out) > 1 {
			t.Errorf("%s: %d answers, want answered %v", tc.name, len(out), tc.answered)
		}
		if skipped := h.Expired() - before; skipped != map[bool]int64{true: 0, false: 1}[tc.answered] {
			t.Errorf("%s: counted %d expired", tc.name, skipped)
		}
	}
}
