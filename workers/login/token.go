package login

import (
	"errors"
	"fmt"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// ErrTokenExpired is returned for a well-formed, correctly signed token
// whose expiry has passed.
var ErrTokenExpired = errors.New("login: token expired")

// MintToken returns an HS256-signed JWT for user, valid for ttl.
func MintToken(secret []byte, user string, ttl time.Duration) (string, error) {
	if len(secret) == 0 {
		return "", errors.New("login: empty secret")
	}
	if user == "" {
		return "", errors.New("login: empty user")
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

// VerifyToken checks an HS256 JWT against secret at time now and returns
// its subject. Other algorithms (including "none") are refused; "sub" and
// "exp" are required.
func VerifyToken(secret []byte, token string, now time.Time) (user string, err error) {
	var claims jwt.RegisteredClaims
	parser := jwt.NewParser(
		jwt.WithValidMethods([]string{jwt.SigningMethodHS256.Alg()}),
		jwt.WithExpirationRequired(),
		jwt.WithTimeFunc(func() time.Time { return now }),
	)
	_, err = parser.ParseWithClaims(token, &claims, func(*jwt.Token) (any, error) { return secret, nil })
	switch {
	case errors.Is(err, jwt.ErrTokenExpired):
		return "", ErrTokenExpired
	case err != nil:
		return "", fmt.Errorf("login: bad token: %w", err)
	case claims.Subject == "":
		return "", errors.New("login: bad token: no subject")
	}
	return claims.Subject, nil
}
