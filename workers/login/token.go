package login

import (
	"errors"
	"fmt"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// Token errors. VerifyToken wraps one of them, so that a refusal can be
// logged for what it is: errors.Is(err, ErrTokenExpired) for a genuine
// token that is too old, errors.Is(err, ErrTokenInvalid) for anything else
// (malformed, badly signed, another algorithm, no "sub" or no "exp").
var (
	ErrTokenExpired = errors.New("login: token expired")
	ErrTokenInvalid = errors.New("login: invalid token")
)

// MintToken returns an HS256-signed JWT whose "sub" is user and whose "exp"
// is ttl from now. A ttl that is not positive mints an already expired
// token, which tests use. MintToken is safe for concurrent use.
func MintToken(secret []byte, user string, ttl time.Duration) (string, error) {
	if len(secret) == 0 {
		return "", errors.New("login: mint token: empty secret")
	}
	if user == "" {
		return "", errors.New("login: mint token: empty user")
	}
	now := time.Now()
	claims := jwt.RegisteredClaims{
		Subject:   user,
		IssuedAt:  jwt.NewNumericDate(now),
		ExpiresAt: jwt.NewNumericDate(now.Add(ttl)),
	}
	tok, err := jwt.NewWithClaims(jwt.SigningMethodHS256, claims).SignedString(secret)
	if err != nil {
		return "", fmt.Errorf("login: sign token: %w", err)
	}
	return tok, nil
}

// VerifyToken checks an HS256 JWT against secret as of now and returns its
// subject, the user id. Only HS256 is accepted (never "none" nor another
// HMAC or key type); "sub" and "exp" are required; the signature is
// checked before the expiry, so a forged expired token is invalid rather
// than expired. The error wraps ErrTokenExpired or ErrTokenInvalid.
// VerifyToken is safe for concurrent use.
func VerifyToken(secret []byte, token string, now time.Time) (user string, err error) {
	if len(secret) == 0 {
		// An empty HMAC key would verify tokens anyone can sign.
		return "", fmt.Errorf("%w: no secret to verify it with", ErrTokenInvalid)
	}
	var claims jwt.RegisteredClaims
	parser := jwt.NewParser(
		jwt.WithValidMethods([]string{jwt.SigningMethodHS256.Alg()}),
		jwt.WithExpirationRequired(),
		jwt.WithTimeFunc(func() time.Time { return now }),
	)
	_, err = parser.ParseWithClaims(token, &claims, func(*jwt.Token) (any, error) { return secret, nil })
	switch {
	case errors.Is(err, jwt.ErrTokenExpired):
		return "", fmt.Errorf("%w (at %s)", ErrTokenExpired, claims.ExpiresAt.Time.UTC().Format(time.RFC3339))
	case err != nil:
		return "", fmt.Errorf("%w: %w", ErrTokenInvalid, err)
	case claims.Subject == "":
		return "", fmt.Errorf("%w: no subject", ErrTokenInvalid)
	}
	return claims.Subject, nil
}
