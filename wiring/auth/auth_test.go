package auth_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"errors"
	"fmt"
	"os"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/laneim/laneim/wiring/auth"
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
	strict := auth.Policy{Issuer: "https://auth.example.org", Audience: "laneim"}
	tests := []struct {
		name   string
		policy auth.Policy
		token  string
		err    error // nil: accepted as "bob"
	}{
		{"default policy, minted", auth.Policy{}, mint(t, secret, "bob", time.Hour), nil},
		{"exp in 2200 with iat now", auth.Policy{}, hs(jwt.RegisteredClaims{Subject: "bob", IssuedAt: at(0), ExpiresAt: y2200}), auth.ErrTokenInvalid},
		{"exp in 2200 without iat", auth.Policy{}, hs(jwt.RegisteredClaims{Subject: "bob", ExpiresAt: y2200}), auth.ErrTokenInvalid},
		{"exp in 2200, iat in 2199", auth.Policy{}, hs(jwt.RegisteredClaims{Subject: "bob", IssuedAt: jwt.NewNumericDate(y2200.Add(-time.Hour)), ExpiresAt: y2200}), auth.ErrTokenInvalid},
		{"lives 25h", auth.Policy{}, hs(jwt.RegisteredClaims{Subject: "bob", IssuedAt: at(-time.Hour), ExpiresAt: at(24 * time.Hour)}), auth.ErrTokenInvalid},
		{"lives 24h", auth.Policy{}, hs(jwt.RegisteredClaims{Subject: "bob", IssuedAt: at(0), ExpiresAt: at(24 * time.Hour)}), nil},
		{"lives 2h, max 1h", auth.Policy{MaxLifetime: time.Hour}, mint(t, secret, "bob", 2*time.Hour), auth.ErrTokenInvalid},
		{"issued an hour ahead", auth.Policy{}, hs(jwt.RegisteredClaims{Subject: "bob", IssuedAt: at(time.Hour), ExpiresAt: at(2 * time.Hour)}), auth.ErrTokenInvalid},
		{"issued 10s ahead (skew)", auth.Policy{}, hs(jwt.RegisteredClaims{Subject: "bob", IssuedAt: at(10 * time.Second), ExpiresAt: at(time.Hour)}), nil},
		{"issued 10s ahead, no skew", auth.Policy{ClockSkew: -1}, hs(jwt.RegisteredClaims{Subject: "bob", IssuedAt: at(10 * time.Second), ExpiresAt: at(time.Hour)}), auth.ErrTokenInvalid},
		{"not before in an hour", auth.Policy{}, hs(jwt.RegisteredClaims{Subject: "bob", NotBefore: at(time.Hour), ExpiresAt: at(2 * time.Hour)}), auth.ErrTokenInvalid},
		{"not before in 10s (skew)", auth.Policy{}, hs(jwt.RegisteredClaims{Subject: "bob", NotBefore: at(10 * time.Second), ExpiresAt: at(time.Hour)}), nil},
		{"expired 1s ago: skew does not extend exp", auth.Policy{}, hs(jwt.RegisteredClaims{Subject: "bob", IssuedAt: at(-time.Hour), ExpiresAt: at(-time.Second)}), auth.ErrTokenExpired},
		{"issuer and audience", strict, hs(jwt.RegisteredClaims{Subject: "bob", Issuer: strict.Issuer, Audience: jwt.ClaimStrings{"other", "laneim"}, ExpiresAt: at(time.Hour)}), nil},
		{"minted for issuer and audience", strict, mintFor(t, strict.Issuer, strict.Audience), nil},
		{"no issuer", strict, hs(jwt.RegisteredClaims{Subject: "bob", Audience: jwt.ClaimStrings{"laneim"}, ExpiresAt: at(time.Hour)}), auth.ErrTokenInvalid},
		{"wrong issuer", strict, hs(jwt.RegisteredClaims{Subject: "bob", Issuer: "https://evil.example", Audience: jwt.ClaimStrings{"laneim"}, ExpiresAt: at(time.Hour)}), auth.ErrTokenInvalid},
		{"no audience", strict, hs(jwt.RegisteredClaims{Subject: "bob", Issuer: strict.Issuer, ExpiresAt: at(time.Hour)}), auth.ErrTokenInvalid},
		{"wrong audience", strict, hs(jwt.RegisteredClaims{Subject: "bob", Issuer: strict.Issuer, Audience: jwt.ClaimStrings{"laneim-admin"}, ExpiresAt: at(time.Hour)}), auth.ErrTokenInvalid},
		{"issuer not configured: any accepted", auth.Policy{}, hs(jwt.RegisteredClaims{Subject: "bob", Issuer: "whoever", Audience: jwt.ClaimStrings{"x"}, ExpiresAt: at(time.Hour)}), nil},
		// What held before and must keep holding.
		{"alg none", strict, signed(t, jwt.SigningMethodNone, jwt.RegisteredClaims{Subject: "bob", Issuer: strict.Issuer, Audience: jwt.ClaimStrings{"laneim"}, ExpiresAt: at(time.Hour)}, jwt.UnsafeAllowNoneSignatureType), auth.ErrTokenInvalid},
		{"alg HS384", auth.Policy{}, signed(t, jwt.SigningMethodHS384, jwt.RegisteredClaims{Subject: "bob", ExpiresAt: at(time.Hour)}, secret), auth.ErrTokenInvalid},
		{"alg RS256", auth.Policy{}, signed(t, jwt.SigningMethodRS256, jwt.RegisteredClaims{Subject: "bob", ExpiresAt: at(time.Hour)}, rsaKey(t)), auth.ErrTokenInvalid},
		{"alg ES256", auth.Policy{}, signed(t, jwt.SigningMethodES256, jwt.RegisteredClaims{Subject: "bob", ExpiresAt: at(time.Hour)}, ecKey(t)), auth.ErrTokenInvalid},
		// RFC 7515: a critical extension the recipient does not know
		// makes the token invalid, however well signed.
		{"crit header", auth.Policy{}, withHeader(t, "crit", []string{"exp-ext"}, jwt.RegisteredClaims{Subject: "bob", ExpiresAt: at(time.Hour)}), auth.ErrTokenInvalid},
		{"other header", auth.Policy{}, withHeader(t, "kid", "key-1", jwt.RegisteredClaims{Subject: "bob", ExpiresAt: at(time.Hour)}), nil},
		// RFC 7519: a NumericDate is a JSON number; the library also
		// reads a string holding one (outside abuse check).
		{"exp a string", auth.Policy{}, signed(t, jwt.SigningMethodHS256, jwt.MapClaims{"sub": "bob", "exp": strconv.FormatInt(now.Add(time.Hour).Unix(), 10)}, secret), auth.ErrTokenInvalid},
		{"iat a string", auth.Policy{}, signed(t, jwt.SigningMethodHS256, jwt.MapClaims{"sub": "bob", "iat": strconv.FormatInt(now.Unix(), 10), "exp": now.Add(time.Hour).Unix()}, secret), auth.ErrTokenInvalid},
		{"nbf a string", auth.Policy{}, signed(t, jwt.SigningMethodHS256, jwt.MapClaims{"sub": "bob", "nbf": strconv.FormatInt(now.Unix(), 10), "exp": now.Add(time.Hour).Unix()}, secret), auth.ErrTokenInvalid},
		{"numbers in a map", auth.Policy{}, signed(t, jwt.SigningMethodHS256, jwt.MapClaims{"sub": "bob", "iat": now.Unix(), "nbf": now.Unix(), "exp": now.Add(time.Hour).Unix()}, secret), nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			user, err := verifyUser(secret, tt.token, now, tt.policy)
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
	tok, err := auth.MintTokenFor(secret, "bob", time.Hour, iss, aud)
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
		err := auth.CheckSecret([]byte(tt.secret))
		if (err == nil) != tt.ok {
			t.Errorf("CheckSecret(%q) = %v, want ok=%v", tt.secret, err, tt.ok)
		}
		if err != nil && len(tt.secret) > 1 && strings.Contains(err.Error(), tt.secret) {
			t.Errorf("CheckSecret error %q repeats the secret", err)
		}
	}
}

var secret = []byte("test-secret-of-the-login-token-tests")

// verifyUser returns the subject of a token Verify accepts.
func verifyUser(secret []byte, token string, now time.Time, policy auth.Policy) (string, error) {
	c, err := auth.Verify(secret, token, now, policy)
	if err == nil && (c.User == "" || c.Expires.IsZero()) {
		return "", fmt.Errorf("accepted without claims: %+v", c)
	}
	return c.User, err
}

func verifyDefault(secret []byte, token string, now time.Time) (string, error) {
	return verifyUser(secret, token, now, auth.Policy{})
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

// withHeader is an HS256 token signed with secret whose header also has
// name: value.
func withHeader(t *testing.T, name string, value any, claims jwt.Claims) string {
	t.Helper()
	tok := jwt.NewWithClaims(jwt.SigningMethodHS256, claims)
	tok.Header[name] = value
	s, err := tok.SignedString(secret)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func inAnHour() *jwt.NumericDate { return jwt.NewNumericDate(time.Now().Add(time.Hour)) }

func mint(t *testing.T, key []byte, user string, ttl time.Duration) string {
	t.Helper()
	tok, err := auth.MintToken(key, user, ttl)
	if err != nil {
		t.Fatal(err)
	}
	return tok
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
		{"expired later", secret, mint(t, secret, "bob", time.Minute), now.Add(2 * time.Minute), "", auth.ErrTokenExpired},
		{"forged and expired", secret, mint(t, []byte("other"), "bob", -time.Minute), now, "", auth.ErrTokenInvalid},
		{"malformed", secret, "not a jwt", now, "", auth.ErrTokenInvalid},
		{"alg none", secret, signed(t, jwt.SigningMethodNone, jwt.RegisteredClaims{Subject: "bob", ExpiresAt: inAnHour()}, jwt.UnsafeAllowNoneSignatureType), now, "", auth.ErrTokenInvalid},
		{"no expiry", secret, signed(t, jwt.SigningMethodHS256, jwt.RegisteredClaims{Subject: "bob"}, secret), now, "", auth.ErrTokenInvalid},
		{"no subject", secret, signed(t, jwt.SigningMethodHS256, jwt.RegisteredClaims{ExpiresAt: inAnHour()}, secret), now, "", auth.ErrTokenInvalid},
		{"empty secret", nil, signed(t, jwt.SigningMethodHS256, jwt.RegisteredClaims{Subject: "bob", ExpiresAt: inAnHour()}, []byte{}), now, "", auth.ErrTokenInvalid},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			user, err := verifyDefault(tt.secret, tt.token, tt.at)
			if user != tt.user || !errors.Is(err, tt.err) || (tt.err == nil) != (err == nil) {
				t.Fatalf("VerifyToken = %q, %v; want %q, %v", user, err, tt.user, tt.err)
			}
			if tt.err != nil && errors.Is(err, auth.ErrTokenExpired) == errors.Is(err, auth.ErrTokenInvalid) {
				t.Fatalf("err %v is both or neither expired and invalid", err)
			}
		})
	}
}

func TestMintTokenRefusesEmptyInput(t *testing.T) {
	if _, err := auth.MintToken(nil, "bob", time.Hour); err == nil {
		t.Error("MintToken accepted an empty secret")
	}
	if _, err := auth.MintToken(secret, "", time.Hour); err == nil {
		t.Error("MintToken accepted an empty user")
	}
}

// BenchmarkVerify: one login's token check, as a comet makes it for
// every Login (a reconnect storm makes 10,000 in a few seconds).
func BenchmarkVerify(b *testing.B) {
	secret := []byte("0123456789abcdef0123456789abcdef")
	tok, err := auth.MintToken(secret, "alice", time.Hour)
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := auth.Verify(secret, tok, time.Now(), auth.Policy{}); err != nil {
			b.Fatal(err)
		}
	}
}
