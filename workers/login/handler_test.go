package login_test

import (
	"context"
	"errors"
	"log/slog"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/golang-jwt/jwt/v5"

	"github.com/laneim/laneim/internal/testinfra"
	"github.com/laneim/laneim/proto/clientpb"
	"github.com/laneim/laneim/proto/topicpb"
	"github.com/laneim/laneim/topics"
	"github.com/laneim/laneim/wiring"
	"github.com/laneim/laneim/wiring/directory"
	"github.com/laneim/laneim/workers/login"
)

var secret = []byte("test-secret")

type fakeUsers map[string]directory.User

func (f fakeUsers) User(_ context.Context, id string) (directory.User, bool, error) {
	u, ok := f[id]
	return u, ok, nil
}

func mint(t *testing.T, key []byte, user string, ttl time.Duration) string {
	t.Helper()
	tok, err := login.MintToken(key, user, ttl)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func TestHandle(t *testing.T) {
	users := fakeUsers{"alice": {ID: "alice"}, "mallory": {ID: "mallory", Disabled: true}}
	none := jwt.NewWithClaims(jwt.SigningMethodNone, jwt.RegisteredClaims{Subject: "alice", ExpiresAt: jwt.NewNumericDate(time.Now().Add(time.Hour))})
	noneTok, err := none.SignedString(jwt.UnsafeAllowNoneSignatureType)
	if err != nil {
		t.Fatal(err)
	}
	noExp, err := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.RegisteredClaims{Subject: "alice"}).SignedString(secret)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name  string
		token string
		code  clientpb.Error_Code // CODE_UNSPECIFIED: accepted
	}{
		{"good", mint(t, secret, "alice", time.Hour), clientpb.Error_CODE_UNSPECIFIED},
		{"expired", mint(t, secret, "alice", -time.Second), clientpb.Error_BAD_TOKEN},
		{"bad signature", mint(t, []byte("other"), "alice", time.Hour), clientpb.Error_BAD_TOKEN},
		{"alg none", noneTok, clientpb.Error_BAD_TOKEN},
		{"no expiry", noExp, clientpb.Error_BAD_TOKEN},
		{"garbage", "a.b.c", clientpb.Error_BAD_TOKEN},
		{"unknown user", mint(t, secret, "zed", time.Hour), clientpb.Error_UNKNOWN_USER},
		{"disabled user", mint(t, secret, "mallory", time.Hour), clientpb.Error_UNKNOWN_USER},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rec := &testinfra.Recorder{}
			h, err := login.New(login.Config{Secret: secret}, users, rec, slog.New(slog.DiscardHandler))
			if err != nil {
				t.Fatal(err)
			}
			sess := &topicpb.Session{Comet: "c1", Conn: "x.1"}
			msg, err := topics.LoginRequests.Encode(&topicpb.LoginRequest{Session: sess, RequestId: 7, Token: tt.token, Device: "ios"})
			if err != nil {
				t.Fatal(err)
			}
			if err := h.Handle(msg); err != nil {
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
				if ev.GetKind() != topicpb.SessionEvent_OPENED || ev.GetUser() != "alice" || ev.GetRequestId() != 7 || ev.GetDevice() != "ios" || ev.GetSession().GetConn() != "x.1" {
					t.Fatalf("event %v", ev)
				}
				return
			}
			d, err := topics.Deliveries.Decode(out[0].Msg)
			if out[0].Topic != topics.Delivery("c1") || err != nil {
				t.Fatalf("published to %s: %v", out[0].Topic, err)
			}
			if got := d.GetFrame().GetError().GetCode(); got != tt.code || d.GetFrame().GetRequestId() != 7 || d.GetConns()[0] != "x.1" {
				t.Fatalf("delivery %v, want code %v", d, tt.code)
			}
		})
	}
}

func TestHandleRejectsUndecodable(t *testing.T) {
	h, _ := login.New(login.Config{Secret: secret}, fakeUsers{}, &testinfra.Recorder{}, slog.New(slog.DiscardHandler))
	if err := h.Handle(message.NewMessage("x", []byte{0xff})); !wiring.IsPermanent(err) {
		t.Fatalf("err = %v, want permanent", err)
	}
}

func TestHandleRetriesPublishFailure(t *testing.T) {
	rec := &testinfra.Recorder{Err: errors.New("broker down")}
	h, _ := login.New(login.Config{Secret: secret}, fakeUsers{"alice": {ID: "alice"}}, rec, slog.New(slog.DiscardHandler))
	msg, _ := topics.LoginRequests.Encode(&topicpb.LoginRequest{Session: &topicpb.Session{Comet: "c", Conn: "1"}, Token: mint(t, secret, "alice", time.Hour)})
	if err := h.Handle(msg); err == nil || wiring.IsPermanent(err) {
		t.Fatalf("err = %v, want a transient error", err)
	}
}

func TestVerifyTokenExpiry(t *testing.T) {
	tok := mint(t, secret, "bob", time.Minute)
	if u, err := login.VerifyToken(secret, tok, time.Now()); err != nil || u != "bob" {
		t.Fatalf("verify = %q, %v", u, err)
	}
	if _, err := login.VerifyToken(secret, tok, time.Now().Add(2*time.Minute)); !errors.Is(err, login.ErrTokenExpired) {
		t.Fatalf("verify later = %v, want ErrTokenExpired", err)
	}
	if _, err := login.New(login.Config{}, fakeUsers{}, &testinfra.Recorder{}, slog.New(slog.DiscardHandler)); err == nil {
		t.Fatal("New accepted an empty secret")
	}
}
