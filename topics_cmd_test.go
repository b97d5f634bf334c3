package main

import (
	"bytes"
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/laneim/laneim/wiring"
)

// TestTopicsReplicationFactor: `laneim topics --replication-factor N`
// creates the topics with N replicas, so a factor above the number of
// brokers is refused by the broker, and a factor below 1 by the command.
func TestTopicsReplicationFactor(t *testing.T) {
	kafka := twoBrokers(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	tests := []struct {
		factor  string
		wantErr string
	}{
		{"0", "want at least 1"},
		{"3", "replication"}, // 3 replicas on 2 brokers
		{"2", ""},
	}
	for _, tt := range tests {
		err := runTopics(ctx, []string{"--kafka", kafka, "--replication-factor", tt.factor})
		switch {
		case tt.wantErr == "" && err != nil:
			t.Errorf("--replication-factor %s: %v", tt.factor, err)
		case tt.wantErr != "" && (err == nil || !strings.Contains(strings.ToLower(err.Error()), tt.wantErr)):
			t.Errorf("--replication-factor %s: %v, want an error about %q", tt.factor, err, tt.wantErr)
		}
	}
}

// TestTopicsSaysExistingTopicsKeepTheirReplicas: topics created with one
// replica keep it when `laneim topics --replication-factor 2` runs later,
// and the command says so (outside check: it said nothing).
func TestTopicsSaysExistingTopicsKeepTheirReplicas(t *testing.T) {
	kafka := twoBrokers(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var out, errOut bytes.Buffer
	if err := topicsCmd(ctx, []string{"--kafka", kafka}, &out, &errOut); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), "messages.routed\t") || strings.Contains(out.String(), "existed before") || errOut.Len() > 0 {
		t.Fatalf("first run:\n%s\n%s", out.String(), errOut.String())
	}
	out.Reset()
	if err := topicsCmd(ctx, []string{"--kafka", kafka, "--replication-factor", "2"}, &out, &errOut); err != nil {
		t.Fatal(err)
	}
	n := len(wiring.PipelineTopics())
	if got := strings.Count(out.String(), "1 replicas (existed before: 1 replicas, not 2;"); got != n {
		t.Errorf("%d of %d topics said to keep 1 replica:\n%s", got, n, out.String())
	}
	if want := fmt.Sprintf("%d topics have fewer replicas than --replication-factor 2", n); !strings.Contains(errOut.String(), want) {
		t.Errorf("warning %q, want %q", errOut.String(), want)
	}
	// More replicas than brokers: the topics exist, so nothing fails,
	// but the command says why it cannot be (newcomer check).
	errOut.Reset()
	if err := topicsCmd(ctx, []string{"--kafka", kafka, "--replication-factor", "3"}, &out, &errOut); err != nil {
		t.Fatal(err)
	}
	if want := "--replication-factor 3 is more than the cluster's brokers (2)"; !strings.Contains(errOut.String(), want) {
		t.Errorf("warning %q, want %q", errOut.String(), want)
	}
}

// twoBrokers starts a Kafka-protocol cluster of two brokers for the test
// and returns their addresses, comma-separated.
func twoBrokers(t *testing.T) string {
	t.Helper()
	c, err := kfake.NewCluster(kfake.NumBrokers(2))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return strings.Join(c.ListenAddrs(), ",")
}
