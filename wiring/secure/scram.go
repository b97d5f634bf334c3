package secure

import (
	"crypto/hmac"
	"crypto/pbkdf2"
	"crypto/rand"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/base64"
	"errors"
	"fmt"
	"hash"
	"strconv"
	"strings"
)

// SCRAM is the client side of a SASL SCRAM exchange (RFC 5802, without
// channel binding), as Kafka speaks it: SCRAM-SHA-256 or SCRAM-SHA-512.
// It implements Sarama's SCRAMClient; make a new one per connection
// (Sarama's SCRAMClientGeneratorFunc). Passwords are used as given
// (no SASLprep): keep them to printable ASCII.
type SCRAM struct {
	hash func() hash.Hash

	user, password string
	nonce          string
	clientFirst    string // client-first-message-bare
	serverSig      []byte
	step           int
	done           bool
}

// NewSCRAM returns a client for mechanism "SCRAM-SHA-256" or "SCRAM-SHA-512".
func NewSCRAM(mechanism string) (*SCRAM, error) {
	switch mechanism {
	case "SCRAM-SHA-256":
		return &SCRAM{hash: sha256.New}, nil
	case "SCRAM-SHA-512":
		return &SCRAM{hash: sha512.New}, nil
	}
	return nil, fmt.Errorf("scram: unknown mechanism %q", mechanism)
}

// Begin starts an exchange. An authorization id other than empty is not
// supported (Kafka requires it to equal the user anyway).
func (s *SCRAM) Begin(user, password, authzID string) error {
	if authzID != "" && authzID != user {
		return errors.New("scram: an authorization id other than the user is not supported")
	}
	b := make([]byte, 24)
	if _, err := rand.Read(b); err != nil {
		return err
	}
	esc := strings.NewReplacer("=", "=3D", ",", "=2C")
	s.user, s.password = esc.Replace(user), password
	s.nonce = base64.RawStdEncoding.EncodeToString(b)
	s.clientFirst = "n=" + s.user + ",r=" + s.nonce
	s.step, s.done, s.serverSig = 0, false, nil
	return nil
}

// gs2 is the GS2 header: no channel binding, no authorization id.
const gs2 = "n,,"

// Step answers the server's challenge: the first call (empty challenge)
// returns the client-first message, the second the client-final message,
// the third checks the server's signature.
func (s *SCRAM) Step(challenge string) (string, error) {
	s.step++
	switch s.step {
	case 1:
		return gs2 + s.clientFirst, nil
	case 2:
		return s.final(challenge)
	case 3:
		s.done = true
		attrs := parseAttrs(challenge)
		if e, ok := attrs["e"]; ok {
			return "", fmt.Errorf("scram: server refused: %s", e)
		}
		v, err := base64.StdEncoding.DecodeString(attrs["v"])
		if err != nil || !hmac.Equal(v, s.serverSig) {
			return "", errors.New("scram: the server's signature does not match (not the server that holds the credentials)")
		}
		return "", nil
	}
	return "", errors.New("scram: exchange already over")
}

func (s *SCRAM) final(serverFirst string) (string, error) {
	attrs := parseAttrs(serverFirst)
	if e, ok := attrs["e"]; ok {
		return "", fmt.Errorf("scram: server refused: %s", e)
	}
	nonce, salt64, iter := attrs["r"], attrs["s"], attrs["i"]
	if !strings.HasPrefix(nonce, s.nonce) || len(nonce) == len(s.nonce) {
		return "", errors.New("scram: server nonce does not extend the client's")
	}
	salt, err := base64.StdEncoding.DecodeString(salt64)
	if err != nil {
		return "", fmt.Errorf("scram: salt: %w", err)
	}
	n, err := strconv.Atoi(iter)
	if err != nil || n < 1 {
		return "", fmt.Errorf("scram: iteration count %q", iter)
	}
	salted, err := pbkdf2.Key(s.hash, s.password, salt, n, s.hash().Size())
	if err != nil {
		return "", fmt.Errorf("scram: %w", err)
	}
	clientKey := s.hmac(salted, "Client Key")
	h := s.hash()
	h.Write(clientKey)
	storedKey := h.Sum(nil)
	withoutProof := "c=" + base64.StdEncoding.EncodeToString([]byte(gs2)) + ",r=" + nonce
	authMessage := s.clientFirst + "," + serverFirst + "," + withoutProof
	proof := s.hmac(storedKey, authMessage)
	for i := range proof {
		proof[i] ^= clientKey[i]
	}
	s.serverSig = s.hmac(s.hmac(salted, "Server Key"), authMessage)
	return withoutProof + ",p=" + base64.StdEncoding.EncodeToString(proof), nil
}

// Done tells whether the exchange is over.
func (s *SCRAM) Done() bool { return s.done }

func (s *SCRAM) hmac(key []byte, msg string) []byte {
	m := hmac.New(s.hash, key)
	m.Write([]byte(msg))
	return m.Sum(nil)
}

// parseAttrs splits "a=x,b=y" into its attributes.
func parseAttrs(msg string) map[string]string {
	out := map[string]string{}
	for _, kv := range strings.Split(msg, ",") {
		if k, v, ok := strings.Cut(kv, "="); ok && len(k) == 1 {
			out[k] = v
		}
	}
	return out
}
