package login_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"errors"
	"log/slog"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/laneim/laneim/internal/testinfra"
	"github.com/laneim/laneim/proto/clientpb"
	"github.com/laneim/laneim/proto/topicpb"
	"github.com/laneim/laneim/topics"
	"github.com/laneim/laneim/workers/login"
)

// TestVerifyTokenPolicy checks the claims beyond signature, sub and exp:
// issuer and audience when configured, the maximum lifetime (an exp in
// 2200 is refused), iat and nbf in the future beyond the clock skew, and
// that the skew never extends exp.
func TestVerifyTokenPolicy(t *testing.T) {
	now := time.Now()
	at := func(d time.Duration) *jwt.NumericDate { return jwt.NewNumericDate(now.Add(d)) }
	y2200 := jwt.NewNumericDate(time.Date(2200, 1, 1, 0, 0, 0, 0, time.UTC))
	hs := func(c jwt.RegisteredClaims) string { return signed(t, jwt.SigningMethodHS256, c, secret) }
	strict := login.TokenPolicy{Issuer: "https://auth.example.org", Audience: "laneim"}
	tests := []struct {
		name   string
		policy login.TokenPolicy
		token  string
		err    error // nil: accepted as "bob"
	}{
		{"default policy, minted", login.TokenPolicy{}, mint(t, secret, "bob", time.Hour), nil},
		{"exp in 2200 with iat now", login.TokenPolicy{}, hs(jwt.RegisteredClaims{Subject: "bob", IssuedAt: at(0), ExpiresAt: y2200}), login.ErrTokenInvalid},
		{"exp in 2200 without iat", login.TokenPolicy{}, hs(jwt.RegisteredClaims{Subject: "bob", ExpiresAt: y2200}), login.ErrTokenInvalid},
		{"exp in 2200, iat in 2199", login.TokenPolicy{}, hs(jwt.RegisteredClaims{Subject: "bob", IssuedAt: jwt.NewNumericDate(y2200.Add(-time.Hour)), ExpiresAt: y2200}), login.ErrTokenInvalid},
		{"lives 25h", login.TokenPolicy{}, hs(jwt.RegisteredClaims{Subject: "bob", IssuedAt: at(-time.Hour), ExpiresAt: at(24 * time.Hour)}), login.ErrTokenInvalid},
		{"lives 24h", login.TokenPolicy{}, hs(jwt.RegisteredClaims{Subject: "bob", IssuedAt: at(0), ExpiresAt: at(24 * time.Hour)}), nil},
		{"lives 2h, max 1h", login.TokenPolicy{MaxLifetime: time.Hour}, mint(t, secret, "bob", 2*time.Hour), login.ErrTokenInvalid},
		{"issued an hour ahead", login.TokenPolicy{}, hs(jwt.RegisteredClaims{Subject: "bob", IssuedAt: at(time.Hour), ExpiresAt: at(2 * time.Hour)}), login.ErrTokenInvalid},
		{"issued 10s ahead (skew)", login.TokenPolicy{}, hs(jwt.RegisteredClaims{Subject: "bob", IssuedAt: at(10 * time.Second), ExpiresAt: at(time.Hour)}), nil},
		{"issued 10s ahead, no skew", login.TokenPolicy{ClockSkew: -1}, hs(jwt.RegisteredClaims{Subject: "bob", IssuedAt: at(10 * time.Second), ExpiresAt: at(time.Hour)}), login.ErrTokenInvalid},
		{"not before in an hour", login.TokenPolicy{}, hs(jwt.RegisteredClaims{Subject: "bob", NotBefore: at(time.Hour), ExpiresAt: at(2 * time.Hour)}), login.ErrTokenInvalid},
		{"not before in 10s (skew)", login.TokenPolicy{}, hs(jwt.RegisteredClaims{Subject: "bob", NotBefore: at(10 * time.Second), ExpiresAt: at(time.Hour)}), nil},
		{"expired 1s ago: skew does not extend exp", login.TokenPolicy{}, hs(jwt.RegisteredClaims{Subject: "bob", IssuedAt: at(-time.Hour), ExpiresAt: at(-time.Second)}), login.ErrTokenExpired},
		{"issuer and audience", strict, hs(jwt.RegisteredClaims{Subject: "bob", Issuer: strict.Issuer, Audience: jwt.ClaimStrings{"other", "laneim"}, ExpiresAt: at(time.Hour)}), nil},
		{"minted for issuer and audience", strict, mintFor(t, strict.Issuer, strict.Audience), nil},
		{"no issuer", strict, hs(jwt.RegisteredClaims{Subject: "bob", Audience: jwt.ClaimStrings{"laneim"}, ExpiresAt: at(time.Hour)}), login.ErrTokenInvalid},
		{"wrong issuer", strict, hs(jwt.RegisteredClaims{Subject: "bob", Issuer: "https://evil.example", Audience: jwt.ClaimStrings{"laneim"}, ExpiresAt: at(time.Hour)}), login.ErrTokenInvalid},
		{"no audience", strict, hs(jwt.RegisteredClaims{Subject: "bob", Issuer: strict.Issuer, ExpiresAt: at(time.Hour)}), login.ErrTokenInvalid},
		{"wrong audience", strict, hs(jwt.RegisteredClaims{Subject: "bob", Issuer: strict.Issuer, Audience: jwt.ClaimStrings{"laneim-admin"}, ExpiresAt: at(time.Hour)}), login.ErrTokenInvalid},
		{"issuer not configured: any accepted", login.TokenPolicy{}, hs(jwt.RegisteredClaims{Subject: "bob", Issuer: "whoever", Audience: jwt.ClaimStrings{"x"}, ExpiresAt: at(time.Hour)}), nil},
		// What held before and must keep holding.
		{"alg none", strict, signed(t, jwt.SigningMethodNone, jwt.RegisteredClaims{Subject: "bob", Issuer: strict.Issuer, Audience: jwt.ClaimStrings{"laneim"}, ExpiresAt: at(time.Hour)}, jwt.UnsafeAllowNoneSignatureType), login.ErrTokenInvalid},
		{"alg HS384", login.TokenPolicy{}, signed(t, jwt.SigningMethodHS384, jwt.RegisteredClaims{Subject: "bob", ExpiresAt: at(time.Hour)}, secret), login.ErrTokenInvalid},
		{"alg RS256", login.TokenPolicy{}, signed(t, jwt.SigningMethodRS256, jwt.RegisteredClaims{Subject: "bob", ExpiresAt: at(time.Hour)}, rsaKey(t)), login.ErrTokenInvalid},
		{"alg ES256", login.TokenPolicy{}, signed(t, jwt.SigningMethodES256, jwt.RegisteredClaims{Subject: "bob", ExpiresAt: at(time.Hour)}, ecKey(t)), login.ErrTokenInvalid},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			user, err := login.VerifyTokenPolicy(secret, tt.token, now, tt.policy)
			if tt.err == nil {
				if err != nil || user != "bob" {
					t.Fatalf("VerifyTokenPolicy = %q, %v; want bob", user, err)
				}
				return
			}
			if !errors.Is(err, tt.err) || user != "" {
				t.Fatalf("VerifyTokenPolicy = %q, %v; want %v", user, err, tt.err)
			}
			if strings.Contains(err.Error(), tt.token) {
				t.Fatalf("error %q contains the token", err)
			}
		})
	}
}

func mintFor(t *testing.T, iss, aud string) string {
	t.Helper()
	tok, err := login.MintTokenFor(secret, "bob", time.Hour, iss, aud)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func rsaKey(t *testing.T) *rsa.PrivateKey {
	t.Helper()
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func ecKey(t *testing.T) *ecdsa.PrivateKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// TestHandleAppliesTokenPolicy checks that the worker's Config carries the
// policy: a token without the configured issuer is refused BAD_TOKEN.
func TestHandleAppliesTokenPolicy(t *testing.T) {
	cfg := login.Config{Secret: secret, Token: login.TokenPolicy{Issuer: "auth", Audience: "laneim"}}
	for _, tc := range []struct {
		token string
		ok    bool
	}{
		{mint(t, secret, "alice", time.Hour), false},
		{mintFor(t, "auth", "other"), false},
		{func() string { tok, _ := login.MintTokenFor(secret, "alice", time.Hour, "auth", "laneim"); return tok }(), true},
	} {
		rec := &testinfra.Recorder{}
		h, err := login.New(cfg, fakeUsers{"alice": {ID: "alice"}, "bob": {ID: "bob"}}, rec, slog.New(slog.DiscardHandler))
		if err != nil {
			t.Fatal(err)
		}
		msg, _ := topics.LoginRequests.Encode(&topicpb.LoginRequest{Session: &topicpb.Session{Comet: "c1", Conn: "1"}, RequestId: 1, Token: tc.token})
		if err := h.Pipeline().Handle(msg); err != nil {
			t.Fatal(err)
		}
		out := rec.Take()
		if len(out) != 1 {
			t.Fatalf("published %d messages", len(out))
		}
		if tc.ok != (out[0].Topic == topics.SessionEvents.Name) {
			t.Fatalf("token ok=%v published to %s", tc.ok, out[0].Topic)
		}
		if !tc.ok {
			d, _ := topics.Deliveries.Decode(out[0].Msg)
			if d.GetFrame().GetError().GetCode() != clientpb.Error_BAD_TOKEN {
				t.Fatalf("delivery %v, want BAD_TOKEN", d)
			}
		}
	}
}

// k8sSecretPlaceholder reads LANEIM_SECRET from the Kubernetes manifest,
// so that the test follows the placeholder actually shipped.
func k8sSecretPlaceholder(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile("../../deploy/k8s/base/secret.example.env")
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^LANEIM_SECRET=(.*)$`).FindSubmatch(b)
	if m == nil {
		t.Fatal("no LANEIM_SECRET in deploy/k8s/base/secret.example.env")
	}
	return string(m[1])
}

// TestCheckSecret: short secrets and placeholders are refused, with a
// message that never repeats the secret.
func TestCheckSecret(t *testing.T) {
	tests := []struct {
		secret string
		ok     bool
	}{
		{"", false},
		{"x", false},
		{"laneim-dev-secret", false},
		{"0123456789abcdef0123456789abcde", false}, // 31 bytes
		{k8sSecretPlaceholder(t), false},
		{"change-me-change-me-change-me-change-me", false},
		{"CHANGEME-please-0123456789abcdef0123", false},
		{strings.Repeat("a", 64), false},
		{"0123456789abcdef0123456789abcdef", true}, // 32 bytes
		{"q3J8vR0xkL2pN7sT4wY6zA1cE5gH9iKmOuQbDfXj", true},
	}
	for _, tt := range tests {
		err := login.CheckSecret([]byte(tt.secret))
		if (err == nil) != tt.ok {
			t.Errorf("CheckSecret(%q) = %v, want ok=%v", tt.secret, err, tt.ok)
		}
		if err != nil && len(tt.secret) > 1 && strings.Contains(err.Error(), tt.secret) {
			t.Errorf("CheckSecret error %q repeats the secret", err)
		}
		_, nerr := login.New(login.Config{Secret: []byte(tt.secret)}, fakeUsers{}, &testinfra.Recorder{}, slog.New(slog.DiscardHandler))
		if (nerr == nil) != tt.ok {
			t.Errorf("New with secret %q: %v, want ok=%v", tt.secret, nerr, tt.ok)
		}
	}
}
