package app

import (
	"bytes"
	"context"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/laneim/laneim/proto/clientpb"
	"github.com/laneim/laneim/topics"
	"github.com/laneim/laneim/wiring"
)

// TestE2ELoginTopicHoldsNoToken: clients log in, some with tokens the
// comet refuses; then login.requests, read from the broker from its
// start, holds the verified users of the accepted logins and not one
// byte sequence of any token (issue 11, point 8).
func TestE2ELoginTopicHoldsNoToken(t *testing.T) {
	t.Parallel()
	c := startCluster(t, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var tokens []string
	for _, user := range []string{"alice", "bob"} {
		tok := c.token(user, time.Hour)
		tokens = append(tokens, tok)
		if res, err := c.dial(false).Login(ctx, tok, "test"); err != nil || res.GetUser() != user {
			t.Fatalf("login %s = %v, %v", user, res, err)
		}
	}
	for _, tok := range []string{c.token("carol", -time.Minute), c.token("acme:carol", time.Hour)} {
		tokens = append(tokens, tok)
		if _, err := c.dial(false).Login(ctx, tok, "test"); errCode(err) != clientpb.Error_BAD_TOKEN {
			t.Fatalf("login = %v, want BAD_TOKEN from the comet", err)
		}
	}
	sub, err := wiring.NewSubscriber(c.settings.Infra().Kafka, "e2e.login-requests", slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	ch, err := sub.Subscribe(ctx, topics.LoginRequests.Name)
	if err != nil {
		t.Fatal(err)
	}
	users := map[string]bool{}
	for len(users) < 2 {
		select {
		case m := <-ch:
			m.Ack()
			for _, tok := range tokens {
				// Any of its three parts: header, claims, signature.
				for _, part := range strings.Split(tok, ".") {
					if bytes.Contains(m.Payload, []byte(part)) {
						t.Fatalf("login.requests holds a token's bytes (%d of them)", len(part))
					}
				}
			}
			req, err := topics.LoginRequests.Decode(m)
			if err != nil {
				t.Fatal(err)
			}
			if req.GetTokenExpiresUnixMs() <= time.Now().UnixMilli() {
				t.Fatalf("request %v: no expiry in the future", req)
			}
			users[req.GetUser()] = true
		case <-ctx.Done():
			t.Fatalf("login.requests: saw %v, want alice and bob", users)
		}
	}
	if !users["alice"] || !users["bob"] {
		t.Fatalf("login.requests named %v, want alice and bob (the refused logins are not forwarded)", users)
	}
	// Nothing else: the refused logins never reached the topic.
	select {
	case m := <-ch:
		req, _ := topics.LoginRequests.Decode(m)
		t.Fatalf("a further login request %v", req)
	case <-time.After(time.Second):
	}
}
