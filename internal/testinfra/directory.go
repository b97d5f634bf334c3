package testinfra

import (
	"context"
	"path/filepath"
	"runtime"
	"testing"

	"github.com/laneim/laneim/internal/seed"
	"github.com/laneim/laneim/wiring/directory"
)

// DemoSeed is the path of the demo directory, testdata/seed.json.
func DemoSeed() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..", "testdata", "seed.json")
}

// DemoDirectory starts a redis-server for the test and returns a directory
// holding the demo users, rooms and blocks.
func DemoDirectory(t testing.TB) *directory.Store {
	t.Helper()
	store := directory.New(RedisClient(t))
	s, err := seed.Load(DemoSeed())
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Apply(context.Background(), store); err != nil {
		t.Fatal(err)
	}
	return store
}
