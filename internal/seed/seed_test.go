package seed_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/laneim/laneim/internal/seed"
	"github.com/laneim/laneim/internal/testinfra"
	"github.com/laneim/laneim/wiring/directory"
)

func TestDemoSeedAppliesToRedis(t *testing.T) {
	t.Parallel()
	s, err := seed.Load(testinfra.DemoSeed())
	if err != nil {
		t.Fatal(err)
	}
	store := directory.New(testinfra.RedisClient(t))
	ctx := context.Background()
	for range 2 { // idempotent
		if err := s.Apply(ctx, store); err != nil {
			t.Fatal(err)
		}
	}
	u, ok, err := store.User(ctx, "mallory")
	if err != nil || !ok || !u.Disabled {
		t.Errorf("mallory = %+v, %v, %v; want disabled user", u, ok, err)
	}
	if ok, err := store.IsMember(ctx, "dev", "alice"); err != nil || !ok {
		t.Errorf("alice in dev = %v, %v", ok, err)
	}
	if ok, err := store.IsMember(ctx, "dev", "carol"); err != nil || ok {
		t.Errorf("carol in dev = %v, %v", ok, err)
	}
	if ok, err := store.Blocks(ctx, "erin", "dave"); err != nil || !ok {
		t.Errorf("erin blocks dave = %v, %v", ok, err)
	}
}

func TestLoadRejectsBadSeeds(t *testing.T) {
	tests := []struct{ name, body string }{
		{"not json", "{"},
		{"user without id", `{"users":[{"name":"x"}]}`},
		{"unknown member", `{"users":[{"id":"a"}],"rooms":[{"id":"r","members":["b"]}]}`},
		{"unknown block", `{"users":[{"id":"a"}],"blocks":[{"user":"a","blocks":"z"}]}`},
		{"user id with a colon", `{"users":[{"id":"acme:alice"}]}`},
		{"user id of the system sender", `{"users":[{"id":"~system"}]}`},
		{"user id too long", `{"users":[{"id":"` + strings.Repeat("x", 65) + `"}]}`},
		{"room id with a colon", `{"users":[{"id":"a"}],"rooms":[{"id":"r:1","members":["a"]}]}`},
		{"room id with a space", `{"rooms":[{"id":"a room"}]}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := filepath.Join(t.TempDir(), "s.json")
			if err := os.WriteFile(p, []byte(tt.body), 0o644); err != nil {
				t.Fatal(err)
			}
			if _, err := seed.Load(p); err == nil {
				t.Error("Load succeeded")
			}
		})
	}
}
