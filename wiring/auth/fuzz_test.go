package auth_test

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"math"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/golang-jwt/jwt/v5"

	"github.com/laneim/laneim/wiring/auth"
)

// fuzzNow is a fixed "now" so that the seed corpus means the same on
// every run.
var fuzzNow = time.Unix(1_800_000_000, 0)

var fuzzPolicy = auth.Policy{Issuer: "auth", Audience: "laneim"}

// FuzzVerifyToken feeds arbitrary token strings to the verifier: it must
// never panic, every refusal wraps exactly one of the two token errors,
// never repeats the token, and whatever it accepts is an HS256 token
// signed with the secret whose claims satisfy the policy.
func FuzzVerifyToken(f *testing.F) {
	good, _ := auth.MintTokenFor(secret, "alice", time.Hour, "auth", "laneim")
	f.Add(good)
	f.Add("")
	f.Add("a.b.c")
	f.Add("..")
	f.Add("eyJhbGciOiJub25lIn0.eyJzdWIiOiJhbGljZSJ9.")
	f.Add(rawToken(`{"alg":"HS256","typ":"JWT"}`, `{"sub":"alice","exp":1e300,"iss":"auth","aud":"laneim"}`))
	f.Add(rawToken(`{"alg":"HS256"}`, `{"sub":"alice","exp":9.2e18,"iat":-9.2e18,"iss":"auth","aud":["laneim"]}`))
	f.Add(rawToken(`{"alg":"HS256"}`, `{"sub":"alice","exp":"soon"}`))
	f.Add(rawToken(`{"alg":"HS256"}`, `{"sub":7,"exp":1800000060}`))
	f.Add(rawToken(`{"alg":"HS512"}`, `{"sub":"alice","exp":1800000060,"iss":"auth","aud":"laneim"}`))
	f.Add(strings.Repeat("A", 4096) + "." + strings.Repeat("B", 4096) + ".")
	f.Fuzz(func(t *testing.T, token string) {
		user, err := verifyUser(secret, token, fuzzNow, fuzzPolicy)
		if err != nil {
			if user != "" {
				t.Fatalf("refused with user %q", user)
			}
			if errors.Is(err, auth.ErrTokenExpired) == errors.Is(err, auth.ErrTokenInvalid) {
				t.Fatalf("err %v is both or neither expired and invalid", err)
			}
			if len(token) > 8 && strings.Contains(err.Error(), token) {
				t.Fatalf("error repeats the token: %v", err)
			}
			return
		}
		checkAccepted(t, token, user)
	})
}

// FuzzTokenClaims signs arbitrary claims with the right key and checks
// that the verifier accepts only what the policy allows: iss and aud as
// configured, exp in the future, iat at most the skew ahead, a lifetime
// within the maximum, whatever the numbers (huge, negative, fractional).
func FuzzTokenClaims(f *testing.F) {
	now := float64(fuzzNow.Unix())
	f.Add("alice", "auth", "laneim", now, now+3600, 0.0, true)
	f.Add("alice", "auth", "laneim", now, now+3600, 0.0, false)
	f.Add("alice", "auth", "laneim", 0.0, 7258118400.0, 0.0, false) // exp in 2200, no iat
	f.Add("alice", "auth", "laneim", now+3600, now+7200, 0.0, true) // issued in the future
	f.Add("alice", "auth", "laneim", now+10, now+3600, now+10, true)
	f.Add("alice", "auth", "laneim", -9.2e18, 9.2e18, -1e300, true)
	f.Add("alice", "auth", "laneim", now, now+86400.5, 0.0, true)
	f.Add("alice", "auth", "laneim", now-1, now-0.5, 0.0, true)
	f.Add("", "auth", "laneim", now, now+60, 0.0, true)
	f.Add("alice", "other", "laneim", now, now+60, 0.0, true)
	f.Add("alice", "auth", "other", now, now+60, 0.0, true)
	f.Add("alice", "auth", "laneim", now, 1e300, 0.0, true)
	f.Add("alice", "auth", "laneim", math.Inf(1), now+60, 0.0, true)
	f.Fuzz(func(t *testing.T, sub, iss, aud string, iat, exp, nbf float64, withIat bool) {
		if !utf8.ValidString(sub) || !utf8.ValidString(iss) || !utf8.ValidString(aud) {
			return // encoding/json would replace the bytes; compare like with like
		}
		claims := map[string]any{"sub": sub, "iss": iss, "aud": aud, "exp": exp}
		if withIat {
			claims["iat"] = iat
		}
		if nbf != 0 {
			claims["nbf"] = nbf
		}
		payload, err := json.Marshal(claims)
		if err != nil {
			return // NaN or Inf: not JSON
		}
		token := sign(t, `{"alg":"HS256","typ":"JWT"}`, string(payload))
		user, err := verifyUser(secret, token, fuzzNow, fuzzPolicy)
		if err != nil {
			if errors.Is(err, auth.ErrTokenExpired) == errors.Is(err, auth.ErrTokenInvalid) {
				t.Fatalf("err %v is both or neither expired and invalid", err)
			}
			return
		}
		if user != sub || sub == "" || iss != "auth" || aud != "laneim" {
			t.Fatalf("accepted sub=%q iss=%q aud=%q as %q", sub, iss, aud, user)
		}
		checkAccepted(t, token, user)
	})
}

// checkAccepted checks an accepted token independently of the verifier.
func checkAccepted(t *testing.T, token, user string) {
	t.Helper()
	var claims jwt.RegisteredClaims
	tok, err := jwt.NewParser(jwt.WithoutClaimsValidation()).ParseWithClaims(token, &claims, func(*jwt.Token) (any, error) { return secret, nil })
	if err != nil || !tok.Valid || tok.Method.Alg() != "HS256" {
		t.Fatalf("accepted %q (as %q), which is not a valid HS256 token: %v", token, user, err)
	}
	if user == "" || claims.Subject != user || claims.ExpiresAt == nil {
		t.Fatalf("accepted %q as %q with claims %+v", token, user, claims)
	}
	exp := claims.ExpiresAt.Time
	max := auth.DefaultMaxTokenLifetime
	skew := auth.DefaultClockSkew
	if !exp.After(fuzzNow) && !exp.Equal(fuzzNow) {
		t.Fatalf("accepted a token expired at %v", exp)
	}
	if exp.Sub(fuzzNow) > max+skew {
		t.Fatalf("accepted a token expiring at %v", exp)
	}
	if claims.IssuedAt != nil {
		if claims.IssuedAt.After(fuzzNow.Add(skew)) {
			t.Fatalf("accepted a token issued at %v", claims.IssuedAt.Time)
		}
		if exp.Sub(claims.IssuedAt.Time) > max {
			t.Fatalf("accepted a token living %v", exp.Sub(claims.IssuedAt.Time))
		}
	}
	if claims.NotBefore != nil && claims.NotBefore.After(fuzzNow.Add(skew)) {
		t.Fatalf("accepted a token not valid before %v", claims.NotBefore.Time)
	}
	if claims.Issuer != fuzzPolicy.Issuer {
		t.Fatalf("accepted issuer %q", claims.Issuer)
	}
	found := false
	for _, a := range claims.Audience {
		found = found || a == fuzzPolicy.Audience
	}
	if !found {
		t.Fatalf("accepted audience %q", claims.Audience)
	}
}

func rawToken(header, payload string) string {
	enc := base64.RawURLEncoding
	return enc.EncodeToString([]byte(header)) + "." + enc.EncodeToString([]byte(payload)) + ".c2ln"
}

func sign(t *testing.T, header, payload string) string {
	t.Helper()
	enc := base64.RawURLEncoding
	unsigned := enc.EncodeToString([]byte(header)) + "." + enc.EncodeToString([]byte(payload))
	sig, err := jwt.SigningMethodHS256.Sign(unsigned, secret)
	if err != nil {
		t.Fatal(err)
	}
	return unsigned + "." + enc.EncodeToString(sig)
}
