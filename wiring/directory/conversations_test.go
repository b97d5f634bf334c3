package directory_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/laneim/laneim/internal/testinfra"
	"github.com/laneim/laneim/topics"
	"github.com/laneim/laneim/wiring/directory"
)

// pageAll reads user's whole conversation list in pages of limit and
// maxBytes, checking each page's bounds.
func pageAll(t *testing.T, s *directory.Store, user string, limit, maxBytes int) (all []string, pages int) {
	t.Helper()
	ctx := context.Background()
	cursor := ""
	for pages = 1; pages < 10000; pages++ {
		p, err := s.ConversationPage(ctx, user, cursor, limit, maxBytes)
		if err != nil {
			t.Fatalf("page %d after %q: %v", pages, cursor, err)
		}
		size := 0
		for _, st := range p.States {
			all = append(all, st.Conversation)
			size += directory.StateSize(st.Conversation)
		}
		if len(p.States) > limit || len(p.States) > 1 && size > maxBytes {
			t.Fatalf("page %d: %d states, %d bytes; limits %d and %d", pages, len(p.States), size, limit, maxBytes)
		}
		if p.More != (p.Next != "") {
			t.Fatalf("page %d: more %v with next %q", pages, p.More, p.Next)
		}
		if !p.More {
			return all, pages
		}
		cursor = p.Next
	}
	t.Fatal("the list never ended")
	return nil, 0
}

func TestConversationPages(t *testing.T) {
	t.Parallel()
	s := newStore(t)
	ctx := context.Background()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	// alice: three rooms, five 1:1 conversations at distinct times, two
	// more tied at one time; bob: nothing.
	for _, r := range []string{"zoo", "lobby", "dev"} {
		must(s.AddMember(ctx, r, "alice"))
	}
	base := time.UnixMilli(1_700_000_000_000)
	var want []string // 1:1, most recent first
	for i, u := range []string{"u1", "u2", "u3", "u4", "u5"} {
		c := topics.DirectConversation("alice", u)
		must(s.AddConversationAt(ctx, "alice", c, base.Add(time.Duration(i)*time.Second)))
		want = append([]string{c}, want...)
	}
	for _, u := range []string{"t1", "t2"} {
		must(s.AddConversationAt(ctx, "alice", topics.DirectConversation("alice", u), base.Add(-time.Hour)))
	}
	want = append(want, "dm:alice:t2", "dm:alice:t1")
	// An older time never moves a conversation back.
	must(s.AddConversationAt(ctx, "alice", want[0], base))
	_, err := s.Assign(ctx, "room:lobby", "bob", "", func() string { return "id" })
	must(err)
	want = append([]string{"room:dev", "room:lobby", "room:zoo"}, want...)

	tests := []struct {
		name            string
		user            string
		limit, maxBytes int
		want            []string
		pages           int
	}{
		{"one page", "alice", 100, directory.MaxConversationBytes, want, 1},
		{"pages of one", "alice", 1, directory.MaxConversationBytes, want, len(want)},
		{"pages of two", "alice", 2, directory.MaxConversationBytes, want, 5},
		{"rooms fill the first page exactly", "alice", 3, directory.MaxConversationBytes, want, 4},
		{"byte budget of two states", "alice", 100, 2 * directory.StateSize("dm:alice:u1"), want, 5},
		{"byte budget under one state", "alice", 100, 1, want, len(want)},
		{"nothing", "bob", 10, directory.MaxConversationBytes, nil, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, pages := pageAll(t, s, tt.user, tt.limit, tt.maxBytes)
			if !slices.Equal(got, tt.want) || pages != tt.pages {
				t.Errorf("listed %v in %d pages, want %v in %d", got, pages, tt.want, tt.pages)
			}
		})
	}

	p, err := s.ConversationPage(ctx, "alice", "", 1, directory.MaxConversationBytes)
	must(err)
	if p.States[0] != (directory.ConversationState{Conversation: "room:dev"}) {
		t.Errorf("first state %v", p.States[0])
	}
	p, err = s.ConversationPage(ctx, "alice", p.Next, 1, directory.MaxConversationBytes)
	must(err)
	if p.States[0] != (directory.ConversationState{Conversation: "room:lobby", LatestSeq: 1, Unread: 1}) {
		t.Errorf("second state %v, want the lobby at seq 1, unread", p.States[0])
	}
	if _, _, err := s.MarkRead(ctx, "alice", "room:lobby", 1); err != nil {
		t.Fatal(err)
	}
	p, err = s.ConversationPage(ctx, "alice", "r:dev", 1, directory.MaxConversationBytes)
	must(err)
	if p.States[0] != (directory.ConversationState{Conversation: "room:lobby", LatestSeq: 1, ReadSeq: 1}) {
		t.Errorf("lobby read: %v, want read at seq 1, nothing unread", p.States[0])
	}
	for _, c := range []string{"x", "r:", "d:", "d:12", "d:x:dm:a:b", "d:12:"} {
		if _, err := s.ConversationPage(ctx, "alice", c, 10, 100); !errors.Is(err, directory.ErrBadCursor) {
			t.Errorf("cursor %q: %v, want ErrBadCursor", c, err)
		}
	}
	if _, err := s.ConversationPage(ctx, "alice", "", 0, 100); err == nil {
		t.Error("limit 0 accepted")
	}
}

// TestConversationPageCursorSurvivesChanges: a conversation that gets a
// message while the list is paged moves to the front and is not listed
// again; the others are each listed once.
func TestConversationPageCursorSurvivesChanges(t *testing.T) {
	t.Parallel()
	s := newStore(t)
	ctx := context.Background()
	base := time.UnixMilli(1_700_000_000_000)
	for i := range 6 {
		if err := s.AddConversationAt(ctx, "alice", fmt.Sprintf("dm:alice:u%d", i), base.Add(time.Duration(i)*time.Second)); err != nil {
			t.Fatal(err)
		}
	}
	p, err := s.ConversationPage(ctx, "alice", "", 2, directory.MaxConversationBytes)
	if err != nil {
		t.Fatal(err)
	}
	// u5 and u4 were listed; u4 and u1 get messages.
	for _, u := range []string{"u4", "u1"} {
		if err := s.AddConversationAt(ctx, "alice", "dm:alice:"+u, base.Add(time.Minute)); err != nil {
			t.Fatal(err)
		}
	}
	var got []string
	for _, st := range p.States {
		got = append(got, st.Conversation)
	}
	for p.More {
		if p, err = s.ConversationPage(ctx, "alice", p.Next, 2, directory.MaxConversationBytes); err != nil {
			t.Fatal(err)
		}
		for _, st := range p.States {
			got = append(got, st.Conversation)
		}
	}
	if want := []string{"dm:alice:u5", "dm:alice:u4", "dm:alice:u3", "dm:alice:u2", "dm:alice:u0"}; !slices.Equal(got, want) {
		t.Errorf("listed %v, want %v", got, want)
	}
}

// TestLegacyConversationSet: a user's 1:1 conversations stored as a set
// by an earlier version are read, and converted by the next message
// keeping the same order.
func TestLegacyConversationSet(t *testing.T) {
	t.Parallel()
	rdb := testinfra.RedisClient(t)
	s := directory.New(rdb)
	ctx := context.Background()
	if err := rdb.SAdd(ctx, "{u:alice}:convs", "dm:alice:a", "dm:alice:c", "dm:alice:b").Err(); err != nil {
		t.Fatal(err)
	}
	want := []string{"dm:alice:c", "dm:alice:b", "dm:alice:a"}
	check := func(when string, want []string) {
		t.Helper()
		if got, _ := pageAll(t, s, "alice", 1, directory.MaxConversationBytes); !slices.Equal(got, want) {
			t.Errorf("%s: paged %v, want %v", when, got, want)
		}
		if got, err := s.Conversations(ctx, "alice"); err != nil || !slices.Equal(got, want) {
			t.Errorf("%s: conversations %v, %v; want %v", when, got, err, want)
		}
	}
	check("as a set", want)
	// A cursor taken from the set still works once it is converted.
	p, err := s.ConversationPage(ctx, "alice", "", 1, directory.MaxConversationBytes)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.AddConversation(ctx, "alice", "dm:alice:d"); err != nil {
		t.Fatal(err)
	}
	if typ := rdb.Type(ctx, "{u:alice}:convs").Val(); typ != "zset" {
		t.Fatalf("key is a %s after a message, want zset", typ)
	}
	p, err = s.ConversationPage(ctx, "alice", p.Next, 10, directory.MaxConversationBytes)
	if err != nil || strings.Join(conversations(p), " ") != "dm:alice:b dm:alice:a" {
		t.Errorf("after the conversion the cursor gives %v, %v", conversations(p), err)
	}
	check("converted", append([]string{"dm:alice:d"}, want...))
}

func conversations(p directory.ConversationPage) []string {
	var out []string
	for _, s := range p.States {
		out = append(out, s.Conversation)
	}
	return out
}
