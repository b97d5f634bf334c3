// Package auth verifies and mints laneIM's login tokens: HS256 JWTs
// signed with the cluster's secret. The comet verifies a client's token
// with Verify and forwards only its Claims to the login worker, so no
// bearer token crosses a topic; CheckSecret refuses secrets unfit to sign
// them. It has no dependency on the rest of laneIM.
package auth

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// Token errors. Verify wraps one of them, so that a refusal can be
// logged for what it is: errors.Is(err, ErrTokenExpired) for a genuine
// token that is too old, errors.Is(err, ErrTokenInvalid) for anything else
// (malformed, badly signed, another algorithm, no "sub" or no "exp", the
// wrong issuer or audience, issued in the future, living too long).
var (
	ErrTokenExpired = errors.New("token expired")
	ErrTokenInvalid = errors.New("invalid token")
)

// Defaults of Policy.
const (
	// DefaultMaxTokenLifetime is the longest a token may live (exp - iat).
	DefaultMaxTokenLifetime = 24 * time.Hour
	// DefaultClockSkew is how far in the future a token's "iat" may be
	// (the issuer's clock ahead of ours).
	DefaultClockSkew = 30 * time.Second
	// MinSecretBytes is the shortest HMAC secret CheckSecret accepts: 32
	// bytes, HS256's output size (RFC 7518 section 3.2).
	MinSecretBytes = 32
)

// Policy is what Verify checks beyond the signature, "sub" and "exp". The zero value is the default policy: no issuer or audience
// required, DefaultMaxTokenLifetime and DefaultClockSkew.
type Policy struct {
	// Issuer, when set, must be the token's "iss".
	Issuer string
	// Audience, when set, must be one of the token's "aud".
	Audience string
	// MaxLifetime bounds "exp" - "iat" and, for a token without "iat",
	// "exp" - now (0: DefaultMaxTokenLifetime). A token living longer is
	// invalid, so an "exp" in a far future is refused.
	MaxLifetime time.Duration
	// ClockSkew is how far "iat" and "nbf" may be ahead of now
	// (0: DefaultClockSkew; negative: none). It never extends "exp".
	ClockSkew time.Duration
}

func (p Policy) maxLifetime() time.Duration {
	if p.MaxLifetime > 0 {
		return p.MaxLifetime
	}
	return DefaultMaxTokenLifetime
}

func (p Policy) clockSkew() time.Duration {
	switch {
	case p.ClockSkew > 0:
		return p.ClockSkew
	case p.ClockSkew < 0:
		return 0
	}
	return DefaultClockSkew
}

// Validate reports a policy that cannot work.
func (p Policy) Validate() error {
	if p.MaxLifetime < 0 {
		return fmt.Errorf("auth: negative maximum token lifetime %s", p.MaxLifetime)
	}
	return nil
}

// placeholders are secrets known to be public: those shipped in deploy/
// (the Kubernetes Secret's "change-me: ..." values) and the usual stand-ins.
// CheckSecret refuses them, and any secret containing one of the markers.
var (
	placeholderMarkers = []string{"change-me", "changeme", "change_me", "replace-me", "replaceme", "placeholder", "your-secret", "example"}
	placeholderExact   = []string{"secret", "password", "laneim-dev-secret", "test-secret", "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"}
)

// CheckSecret reports an HMAC secret that must not sign login tokens: one
// shorter than MinSecretBytes, or a known placeholder (such as the
// Kubernetes manifest's "change-me: the HMAC key of login tokens"). The
// message never contains the secret.
func CheckSecret(secret []byte) error {
	s := strings.ToLower(strings.TrimSpace(string(secret)))
	if len(secret) == 0 {
		return errors.New("auth: no token secret")
	}
	for _, m := range placeholderMarkers {
		if strings.Contains(s, m) {
			return fmt.Errorf("auth: the token secret is a placeholder (it contains %q): generate one, e.g. `openssl rand -base64 48`", m)
		}
	}
	for _, p := range placeholderExact {
		if s == p {
			return errors.New("auth: the token secret is a well-known placeholder: generate one, e.g. `openssl rand -base64 48`")
		}
	}
	if len(secret) < MinSecretBytes {
		return fmt.Errorf("auth: the token secret is %d bytes, want at least %d: generate one, e.g. `openssl rand -base64 48`", len(secret), MinSecretBytes)
	}
	if allSame(secret) {
		return errors.New("auth: the token secret repeats one byte: generate one, e.g. `openssl rand -base64 48`")
	}
	return nil
}

func allSame(b []byte) bool {
	for _, c := range b[1:] {
		if c != b[0] {
			return false
		}
	}
	return true
}

// MintToken returns an HS256-signed JWT whose "sub" is user, whose "iat"
// is now and whose "exp" is ttl from now. A ttl that is not positive mints
// an already expired token, which tests use. MintToken is safe for
// concurrent use.
func MintToken(secret []byte, user string, ttl time.Duration) (string, error) {
	return MintTokenFor(secret, user, ttl, "", "")
}

// MintTokenFor is MintToken with an "iss" and an "aud" (each left out
// when empty), for a cluster whose Policy requires them.
func MintTokenFor(secret []byte, user string, ttl time.Duration, issuer, audience string) (string, error) {
	if len(secret) == 0 {
		return "", errors.New("auth: mint token: empty secret")
	}
	if user == "" {
		return "", errors.New("auth: mint token: empty user")
	}
	now := time.Now()
	claims := jwt.RegisteredClaims{
		Subject:   user,
		Issuer:    issuer,
		IssuedAt:  jwt.NewNumericDate(now),
		ExpiresAt: jwt.NewNumericDate(now.Add(ttl)),
	}
	if audience != "" {
		claims.Audience = jwt.ClaimStrings{audience}
	}
	tok, err := jwt.NewWithClaims(jwt.SigningMethodHS256, claims).SignedString(secret)
	if err != nil {
		return "", fmt.Errorf("auth: sign token: %w", err)
	}
	return tok, nil
}

// Claims are what a verified token says: who, and until when.
type Claims struct {
	// User is the token's "sub".
	User string
	// Expires is the token's "exp".
	Expires time.Time
}

// strictClaims are the registered claims whose "exp", "iat" and "nbf"
// must be JSON numbers (RFC 7519, NumericDate): the library also takes a
// string holding a number, which other verifiers refuse (outside abuse
// check). It decodes the claims in one pass, for the comet checks a token
// per Login and a reconnect storm brings thousands a second.
type strictClaims struct {
	jwt.RegisteredClaims
}

func (c *strictClaims) UnmarshalJSON(b []byte) error {
	var w struct {
		Issuer   string           `json:"iss"`
		Subject  string           `json:"sub"`
		Audience jwt.ClaimStrings `json:"aud"`
		ID       string           `json:"jti"`
		Exp      json.RawMessage  `json:"exp"`
		Iat      json.RawMessage  `json:"iat"`
		Nbf      json.RawMessage  `json:"nbf"`
	}
	if err := json.Unmarshal(b, &w); err != nil {
		return err
	}
	c.RegisteredClaims = jwt.RegisteredClaims{Issuer: w.Issuer, Subject: w.Subject, Audience: w.Audience, ID: w.ID}
	for _, d := range [...]struct {
		name string
		raw  json.RawMessage
		to   **jwt.NumericDate
	}{{"exp", w.Exp, &c.ExpiresAt}, {"iat", w.Iat, &c.IssuedAt}, {"nbf", w.Nbf, &c.NotBefore}} {
		t, err := numericDate(d.raw)
		if err != nil {
			return fmt.Errorf("%q %w", d.name, err)
		}
		*d.to = t
	}
	return nil
}

// numericDate reads a NumericDate as the library does (seconds, a
// fraction kept to jwt.TimePrecision), but only from a JSON number; an
// absent or null claim is nil.
func numericDate(raw json.RawMessage) (*jwt.NumericDate, error) {
	if len(raw) == 0 || string(raw) == "null" {
		return nil, nil
	}
	if c := raw[0]; c != '-' && (c < '0' || c > '9') {
		return nil, errors.New("is not a number")
	}
	f, err := strconv.ParseFloat(string(raw), 64)
	if err != nil {
		return nil, fmt.Errorf("is not a usable number: %w", err)
	}
	sec, frac := math.Modf(f)
	return jwt.NewNumericDate(time.Unix(int64(sec), int64(frac*1e9))), nil
}

// Verify checks an HS256 JWT against secret as of now and returns its
// claims. Only HS256 is accepted (never "none" nor another HMAC or key
// type); "sub" and "exp" are required; the signature is checked before
// the expiry, so a forged expired token is invalid rather than expired.
// Then policy: "iss" and "aud" when it names them, "iat" and "nbf" at
// most its clock skew ahead of now, and a lifetime ("exp" - "iat", or
// "exp" - now without "iat") within its maximum. The error wraps
// ErrTokenExpired or ErrTokenInvalid and never contains the token. Verify
// is safe for concurrent use.
func Verify(secret []byte, token string, now time.Time, policy Policy) (Claims, error) {
	if len(secret) == 0 {
		// An empty HMAC key would verify tokens anyone can sign.
		return Claims{}, fmt.Errorf("%w: no secret to verify it with", ErrTokenInvalid)
	}
	skew := policy.clockSkew()
	var claims strictClaims
	// The library checks the algorithm, then the signature; the claims
	// are checked here, so that the clock skew applies to "iat" and "nbf"
	// but never extends "exp" (the library's leeway would).
	parser := jwt.NewParser(
		jwt.WithValidMethods([]string{jwt.SigningMethodHS256.Alg()}),
		jwt.WithoutClaimsValidation(),
	)
	tok, err := parser.ParseWithClaims(token, &claims, func(*jwt.Token) (any, error) { return secret, nil })
	if err != nil {
		return Claims{}, fmt.Errorf("%w: %w", ErrTokenInvalid, err)
	}
	if _, ok := tok.Header["crit"]; ok {
		// RFC 7515 4.1.11: a token whose critical extensions the
		// recipient does not implement is invalid; laneIM implements
		// none (the library does not check).
		return Claims{}, fmt.Errorf("%w: a critical header extension (crit), which laneIM does not implement", ErrTokenInvalid)
	}
	if claims.ExpiresAt == nil {
		return Claims{}, fmt.Errorf("%w: no expiry", ErrTokenInvalid)
	}
	exp := claims.ExpiresAt.Time
	if now.After(exp) {
		return Claims{}, fmt.Errorf("%w (at %s)", ErrTokenExpired, exp.UTC().Format(time.RFC3339))
	}
	if claims.Subject == "" {
		return Claims{}, fmt.Errorf("%w: no subject", ErrTokenInvalid)
	}
	if policy.Issuer != "" && claims.Issuer != policy.Issuer {
		return Claims{}, fmt.Errorf("%w: wrong or missing issuer", ErrTokenInvalid)
	}
	if policy.Audience != "" && !slices.Contains(claims.Audience, policy.Audience) {
		return Claims{}, fmt.Errorf("%w: wrong or missing audience", ErrTokenInvalid)
	}
	late := now.Add(skew)
	if claims.NotBefore != nil && claims.NotBefore.After(late) {
		return Claims{}, fmt.Errorf("%w: not valid before %s", ErrTokenInvalid, claims.NotBefore.UTC().Format(time.RFC3339))
	}
	maxLife := policy.maxLifetime()
	if claims.IssuedAt != nil {
		iat := claims.IssuedAt.Time
		if iat.After(late) {
			return Claims{}, fmt.Errorf("%w: issued in the future (%s, now %s)", ErrTokenInvalid, iat.UTC().Format(time.RFC3339), now.UTC().Format(time.RFC3339))
		}
		if life := exp.Sub(iat); life > maxLife {
			return Claims{}, fmt.Errorf("%w: lives %s, longer than the maximum %s", ErrTokenInvalid, life, maxLife)
		}
	}
	// Without "iat" (or with an "iat" in the past) the remaining life is
	// bounded too, so an "exp" in a far future is refused either way.
	if left := exp.Sub(now); left > maxLife+skew {
		return Claims{}, fmt.Errorf("%w: expires in %s, beyond the maximum lifetime %s", ErrTokenInvalid, left.Round(time.Second), maxLife)
	}
	return Claims{User: claims.Subject, Expires: exp}, nil
}
