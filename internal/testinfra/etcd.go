package testinfra

import (
	"path/filepath"
	"testing"

	"github.com/laneim/laneim/internal/embedded"
)

// Etcd starts a single-member etcd (embedded, on free loopback ports, its
// data in the test's temporary directory), stopped when the test ends or
// by Close before.
func Etcd(t testing.TB) *embedded.Etcd {
	t.Helper()
	e, err := embedded.StartEtcd(embedded.EtcdConfig{
		Dir:        filepath.Join(t.TempDir(), "etcd"),
		ClientAddr: FreeAddr(t),
		PeerAddr:   FreeAddr(t),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.Close)
	return e
}
