package main

import (
	"context"
	"io"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/laneim/laneim/workers/login"
)

// TestDevSecretIsAccepted: dev mode's built-in secret passes the login
// worker's checks, and a token minted by `laneim token` with its defaults
// verifies under the default policy.
func TestDevSecretIsAccepted(t *testing.T) {
	if err := login.CheckSecret([]byte(devSecret)); err != nil {
		t.Fatalf("dev secret refused: %v", err)
	}
	t.Setenv("LANEIM_SECRET", devSecret) // whatever the environment says
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout := os.Stdout
	os.Stdout = w
	err = runToken(context.Background(), []string{"--user", "alice"})
	os.Stdout = stdout
	w.Close()
	out, _ := io.ReadAll(r)
	if err != nil {
		t.Fatal(err)
	}
	user, err := login.VerifyTokenPolicy([]byte(devSecret), strings.TrimSpace(string(out)), time.Now(), login.TokenPolicy{})
	if err != nil || user != "alice" {
		t.Fatalf("laneim token's token: %q, %v", user, err)
	}
}
