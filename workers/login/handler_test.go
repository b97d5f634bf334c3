package login_test

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/golang-jwt/jwt/v5"

	"github.com/laneim/laneim/internal/testinfra"
	"github.com/laneim/laneim/proto/clientpb"
	"github.com/laneim/laneim/proto/topicpb"
	"github.com/laneim/laneim/topics"
	"github.com/laneim/laneim/wiring/directory"
	"github.com/laneim/laneim/wiring/pipeline"
	"github.com/laneim/laneim/workers/login"
)

var secret = []byte("test-secret-of-the-login-worker-tests")

type fakeUsers map[string]directory.User

func (f fakeUsers) User(_ context.Context, id string) (directory.User, bool, error) {
	u, ok := f[id]
	return u, ok, nil
}

type downUsers struct{}

func (downUsers) User(context.Context, string) (directory.User, bool, error) {
	return directory.User{}, false, errors.New("redis: connection refused")
}

// signed returns a token for claims signed with method and key.
func signed(t *testing.T, method jwt.SigningMethod, claims jwt.Claims, key any) string {
	t.Helper()
	tok, err := jwt.NewWithClaims(method, claims).SignedString(key)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func inAnHour() *jwt.NumericDate { return jwt.NewNumericDate(time.Now().Add(time.Hour)) }

func mint(t *testing.T, key []byte, user string, ttl time.Duration) string {
	t.Helper()
	tok, err := login.MintToken(key, user, ttl)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func TestHandle(t *testing.T) {
	// The directory could hold no such ids; had it one, the id rule
	// still refuses the token before the directory is asked.
	users := fakeUsers{"alice": {ID: "alice"}, "mallory": {ID: "mallory", Disabled: true},
		"acme:alice": {ID: "acme:alice"}, topics.SystemSender: {ID: topics.SystemSender}, strings.Repeat("x", 65): {ID: strings.Repeat("x", 65)}}
	tests := []struct {
		name  string
		token string
		code  clientpb.Error_Code // CODE_UNSPECIFIED: accepted
	}{
		{"good", mint(t, secret, "alice", time.Hour), clientpb.Error_CODE_UNSPECIFIED},
		{"expired", mint(t, secret, "alice", -time.Second), clientpb.Error_BAD_TOKEN},
		{"bad signature", mint(t, []byte("other"), "alice", time.Hour), clientpb.Error_BAD_TOKEN},
		{"alg none", signed(t, jwt.SigningMethodNone, jwt.RegisteredClaims{Subject: "alice", ExpiresAt: inAnHour()}, jwt.UnsafeAllowNoneSignatureType), clientpb.Error_BAD_TOKEN},
		{"alg HS512", signed(t, jwt.SigningMethodHS512, jwt.RegisteredClaims{Subject: "alice", ExpiresAt: inAnHour()}, secret), clientpb.Error_BAD_TOKEN},
		{"no expiry", signed(t, jwt.SigningMethodHS256, jwt.RegisteredClaims{Subject: "alice"}, secret), clientpb.Error_BAD_TOKEN},
		{"no subject", signed(t, jwt.SigningMethodHS256, jwt.RegisteredClaims{ExpiresAt: inAnHour()}, secret), clientpb.Error_BAD_TOKEN},
		{"empty token", "", clientpb.Error_BAD_TOKEN},
		{"garbage", "a.b.c", clientpb.Error_BAD_TOKEN},
		{"unknown user", mint(t, secret, "zed", time.Hour), clientpb.Error_UNKNOWN_USER},
		{"disabled user", mint(t, secret, "mallory", time.Hour), clientpb.Error_UNKNOWN_USER},
		{"subject with a colon", mint(t, secret, "acme:alice", time.Hour), clientpb.Error_BAD_TOKEN},
		{"subject of the system sender", mint(t, secret, topics.SystemSender, time.Hour), clientpb.Error_BAD_TOKEN},
		{"subject too long", mint(t, secret, strings.Repeat("x", 65), time.Hour), clientpb.Error_BAD_TOKEN},
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
			if err := h.Pipeline().Handle(msg); err != nil {
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
				if ev.GetKind() != topicpb.SessionEvent_OPENED || ev.GetUser() != "alice" || ev.GetRequestId() != 7 || ev.GetDevice() != "ios" ||
					ev.GetSession().GetComet() != "c1" || ev.GetSession().GetConn() != "x.1" || ev.GetTimeUnixMs() == 0 {
					t.Fatalf("event %v", ev)
				}
				return
			}
			d, err := topics.Deliveries.Decode(out[0].Msg)
			if out[0].Topic != topics.Delivery("c1") || err != nil {
				t.Fatalf("published to %s: %v", out[0].Topic, err)
			}
			if got := d.GetFrame().GetError().GetCode(); got != tt.code || d.GetFrame().GetRequestId() != 7 || len(d.GetConns()) != 1 || d.GetConns()[0] != "x.1" {
				t.Fatalf("delivery %v, want code %v", d, tt.code)
			}
		})
	}
}

func TestHandleRejectsUndecodable(t *testing.T) {
	h, _ := login.New(login.Config{Secret: secret}, fakeUsers{}, &testinfra.Recorder{}, slog.New(slog.DiscardHandler))
	if err := h.Pipeline().Handle(message.NewMessage("x", []byte{0xff})); !pipeline.IsPermanent(err) {
		t.Fatalf("err = %v, want permanent", err)
	}
}

func TestHandleRetriesPublishFailure(t *testing.T) {
	rec := &testinfra.Recorder{Err: errors.New("broker down")}
	h, _ := login.New(login.Config{Secret: secret}, fakeUsers{"alice": {ID: "alice"}}, rec, slog.New(slog.DiscardHandler))
	msg, _ := topics.LoginRequests.Encode(&topicpb.LoginRequest{Session: &topicpb.Session{Comet: "c", Conn: "1"}, Token: mint(t, secret, "alice", time.Hour)})
	if err := h.Pipeline().Handle(msg); err == nil || pipeline.IsPermanent(err) {
		t.Fatalf("err = %v, want a transient error", err)
	}
}

// TestDirectoryFailureAnsweredUnavailable: with the directory down the
// client is answered UNAVAILABLE at once and the request acked, so it is
// neither retried while the client waits nor kept, token and all, in dead
// letters; a failure to send that answer is retried.
func TestDirectoryFailureAnsweredUnavailable(t *testing.T) {
	rec := &testinfra.Recorder{}
	h, _ := login.New(login.Config{Secret: secret}, downUsers{}, rec, slog.New(slog.DiscardHandler))
	msg, _ := topics.LoginRequests.Encode(&topicpb.LoginRequest{Session: &topicpb.Session{Comet: "c", Conn: "1"}, RequestId: 3, Token: mint(t, secret, "alice", time.Hour)})
	if err := h.Pipeline().Handle(msg); err != nil {
		t.Fatalf("err = %v, want the client answered", err)
	}
	out := rec.Take()
	if len(out) != 1 || out[0].Topic != topics.Delivery("c") {
		t.Fatalf("published %v, want one answer to comet c", out)
	}
	d, err := topics.Deliveries.Decode(out[0].Msg)
	if err != nil {
		t.Fatal(err)
	}
	if e := d.GetFrame().GetError(); e.GetCode() != clientpb.Error_UNAVAILABLE || d.GetFrame().GetRequestId() != 3 {
		t.Fatalf("answer %v, want UNAVAILABLE to request 3", d.GetFrame())
	}
	// The broker down too: the answer cannot go out, the request is retried.
	rec.Err = errors.New("kafka: no leader")
	if err := h.Pipeline().Handle(msg); err == nil || pipeline.IsPermanent(err) {
		t.Fatalf("err = %v, want a transient error", err)
	}
}

// TestVerifyToken checks that refusals say whether the token expired or
// is invalid, and that a forged expired token is invalid, not expired.
func TestVerifyToken(t *testing.T) {
	now := time.Now()
	tests := []struct {
		name   string
		secret []byte
		token  string
		at     time.Time
		user   string
		err    error
	}{
		{"valid", secret, mint(t, secret, "bob", time.Minute), now, "bob", nil},
		{"expired later", secret, mint(t, secret, "bob", time.Minute), now.Add(2 * time.Minute), "", login.ErrTokenExpired},
		{"forged and expired", secret, mint(t, []byte("other"), "bob", -time.Minute), now, "", login.ErrTokenInvalid},
		{"malformed", secret, "not a jwt", now, "", login.ErrTokenInvalid},
		{"alg none", secret, signed(t, jwt.SigningMethodNone, jwt.RegisteredClaims{Subject: "bob", ExpiresAt: inAnHour()}, jwt.UnsafeAllowNoneSignatureType), now, "", login.ErrTokenInvalid},
		{"no expiry", secret, signed(t, jwt.SigningMethodHS256, jwt.RegisteredClaims{Subject: "bob"}, secret), now, "", login.ErrTokenInvalid},
		{"no subject", secret, signed(t, jwt.SigningMethodHS256, jwt.RegisteredClaims{ExpiresAt: inAnHour()}, secret), now, "", login.ErrTokenInvalid},
		{"empty secret", nil, signed(t, jwt.SigningMethodHS256, jwt.RegisteredClaims{Subject: "bob", ExpiresAt: inAnHour()}, []byte{}), now, "", login.ErrTokenInvalid},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			user, err := login.VerifyToken(tt.secret, tt.token, tt.at)
			if user != tt.user || !errors.Is(err, tt.err) || (tt.err == nil) != (err == nil) {
				t.Fatalf("VerifyToken = %q, %v; want %q, %v", user, err, tt.user, tt.err)
			}
			if tt.err != nil && errors.Is(err, login.ErrTokenExpired) == errors.Is(err, login.ErrTokenInvalid) {
				t.Fatalf("err %v is both or neither expired and invalid", err)
			}
		})
	}
}

func TestMintTokenAndConfigRefuseEmptyInput(t *testing.T) {
	if _, err := login.MintToken(nil, "bob", time.Hour); err == nil {
		t.Error("MintToken accepted an empty secret")
	}
	if _, err := login.MintToken(secret, "", time.Hour); err == nil {
		t.Error("MintToken accepted an empty user")
	}
	if _, err := login.New(login.Config{}, fakeUsers{}, &testinfra.Recorder{}, slog.New(slog.DiscardHandler)); err == nil {
		t.Error("New accepted an empty secret")
	}
}
