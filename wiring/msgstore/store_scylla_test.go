package msgstore_test

import (
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/laneim/laneim/wiring/msgstore"
	"github.com/laneim/laneim/wiring/msgstore/msgstoretest"
)

// TestScyllaContract runs the store contract against a real Scylla or
// Cassandra when LANEIM_TEST_SCYLLA names one (host:port,...). None can be
// installed on this project's machines, so without it the test is skipped,
// and deploy/test.sh says so.
func TestScyllaContract(t *testing.T) {
	hosts := os.Getenv("LANEIM_TEST_SCYLLA")
	if hosts == "" {
		t.Skip("SKIPPED: Scylla contract suite needs LANEIM_TEST_SCYLLA=host:9042 (no Scylla/Cassandra can be installed here)")
	}
	msgstoretest.Run(t, func(t *testing.T) msgstore.Store {
		s, err := msgstore.OpenScylla(msgstore.ScyllaConfig{
			Hosts:             strings.Split(hosts, ","),
			Keyspace:          fmt.Sprintf("laneim_test_%d", time.Now().UnixNano()),
			Consistency:       "ONE",
			ReplicationFactor: 1,
		})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		return s
	})
}
