package login

import (
	"time"

	"github.com/laneim/laneim/wiring/auth"
)

// The token checks moved to package wiring/auth, which the comet uses to
// verify tokens before anything reaches a topic; these names remain for
// the tools that mint and check tokens.

// Token errors; see auth.ErrTokenExpired and auth.ErrTokenInvalid.
var (
	ErrTokenExpired = auth.ErrTokenExpired
	ErrTokenInvalid = auth.ErrTokenInvalid
)

// Defaults of TokenPolicy; see package auth.
const (
	DefaultMaxTokenLifetime = auth.DefaultMaxTokenLifetime
	DefaultClockSkew        = auth.DefaultClockSkew
	MinSecretBytes          = auth.MinSecretBytes
)

// TokenPolicy is auth.Policy.
type TokenPolicy = auth.Policy

// CheckSecret is auth.CheckSecret.
func CheckSecret(secret []byte) error { return auth.CheckSecret(secret) }

// MintToken is auth.MintToken.
func MintToken(secret []byte, user string, ttl time.Duration) (string, error) {
	return auth.MintToken(secret, user, ttl)
}

// MintTokenFor is auth.MintTokenFor.
func MintTokenFor(secret []byte, user string, ttl time.Duration, issuer, audience string) (string, error) {
	return auth.MintTokenFor(secret, user, ttl, issuer, audience)
}

// VerifyToken checks a token under the default policy and returns its
// subject; see auth.Verify.
func VerifyToken(secret []byte, token string, now time.Time) (user string, err error) {
	return VerifyTokenPolicy(secret, token, now, TokenPolicy{})
}

// VerifyTokenPolicy checks a token under policy and returns its subject;
// see auth.Verify.
func VerifyTokenPolicy(secret []byte, token string, now time.Time, policy TokenPolicy) (user string, err error) {
	c, err := auth.Verify(secret, token, now, policy)
	return c.User, err
}
