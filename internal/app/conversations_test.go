package app

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/laneim/laneim/gateways/comet/client"
	"github.com/laneim/laneim/topics"
	"github.com/laneim/laneim/wiring/directory"
)

// TestE2EThousandsOfConversations: a user with 3,000 1:1 conversations,
// whose full list would once make a LoginResult over the broker's 1 MB
// limit (issue 10), logs in with a bounded LoginResult that says more
// exist, then pages through the rest, over both encodings, getting every
// conversation once, rooms first and the most recent 1:1 next.
func TestE2EThousandsOfConversations(t *testing.T) {
	t.Parallel()
	c := startCluster(t, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	pad := func(prefix string, i int) string { // ids of 60 characters
		s := fmt.Sprintf("%s-%d-", prefix, i)
		return s + strings.Repeat("x", 60-len(s))
	}
	user := pad("many", 0)
	if err := c.store.PutUser(ctx, directory.User{ID: user, Name: "Many"}); err != nil {
		t.Fatal(err)
	}
	if err := c.store.AddMember(ctx, "lobby", user); err != nil {
		t.Fatal(err)
	}
	const n = 3000
	want := []string{topics.RoomConversation("lobby")}
	seqs := map[string]uint64{}
	base := time.Now().Add(-time.Hour)
	for i := n - 1; i >= 0; i-- {
		conv := topics.DirectConversation(user, pad("peer", i))
		want = append(want, conv) // the most recent first
		if err := c.store.AddConversationAt(ctx, user, conv, base.Add(time.Duration(i)*time.Millisecond)); err != nil {
			t.Fatal(err)
		}
		if i%250 == 0 {
			seqs[conv] = uint64(i + 1)
			if err := c.store.RaiseSeq(ctx, conv, uint64(i+1)); err != nil {
				t.Fatal(err)
			}
		}
	}

	for _, tt := range []struct {
		name  string
		json  bool
		limit uint32
	}{
		{"proto, server's page size", false, 0},
		{"json, pages of 700", true, 700},
	} {
		t.Run(tt.name, func(t *testing.T) {
			conn := c.dialWith(client.Options{JSON: tt.json})
			res, err := conn.Login(ctx, c.token(user, time.Hour), "test")
			if err != nil {
				t.Fatalf("login: %v", err)
			}
			if !res.GetOk() || len(res.GetConversations()) != directory.MaxConversationPage || !res.GetMoreConversations() || res.GetConversationsCursor() == "" {
				t.Fatalf("login result: ok %v, %d conversations, more %v, cursor %q; want 1,000 and more",
					res.GetOk(), len(res.GetConversations()), res.GetMoreConversations(), res.GetConversationsCursor())
			}
			if size := proto.Size(res); size > directory.MaxConversationBytes {
				t.Fatalf("login result of %d bytes", size)
			}
			got := res.GetConversations()
			cursor := res.GetConversationsCursor()
			for pages := 0; cursor != ""; pages++ {
				if pages > n {
					t.Fatal("the list never ended")
				}
				page, err := conn.Conversations(ctx, cursor, tt.limit)
				if err != nil {
					t.Fatalf("page after %q: %v", cursor, err)
				}
				if limit := int(cmp.Or(tt.limit, directory.MaxConversationPage)); len(page.GetConversations()) > limit {
					t.Fatalf("page of %d, asked for %d", len(page.GetConversations()), limit)
				}
				if page.GetHasMore() != (page.GetNextCursor() != "") {
					t.Fatalf("has_more %v with next cursor %q", page.GetHasMore(), page.GetNextCursor())
				}
				got = append(got, page.GetConversations()...)
				cursor = page.GetNextCursor()
			}
			ids := make([]string, len(got))
			for i, s := range got {
				ids[i] = s.GetConversation()
				if want, ok := seqs[s.GetConversation()]; ok && s.GetLatestSeq() != want {
					t.Errorf("%s at seq %d, want %d", s.GetConversation(), s.GetLatestSeq(), want)
				}
			}
			if !slices.Equal(ids, want) {
				t.Fatalf("listed %d conversations, want each of %d once, rooms first then the most recent", len(ids), len(want))
			}
		})
	}
}
