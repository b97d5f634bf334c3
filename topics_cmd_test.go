package main

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
)

// TestTopicsReplicationFactor: `laneim topics --replication-factor N`
// creates the topics with N replicas, so a factor above the number of
// brokers is refused by the broker, and a factor below 1 by the command.
func TestTopicsReplicationFactor(t *testing.T) {
	c, err := kfake.NewCluster(kfake.NumBrokers(2))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	kafka := strings.Join(c.ListenAddrs(), ",")
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
