package wiring_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/IBM/sarama"
	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/laneim/laneim/wiring"
)

// TestEnsureTopicsReplicas checks that a topic is created with the
// replication factor its spec asks for (1 when zero), and that a factor
// the cluster cannot satisfy is an error rather than a silent 1.
func TestEnsureTopicsReplicas(t *testing.T) {
	c, err := kfake.NewCluster(kfake.NumBrokers(3))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	cfg := wiring.KafkaConfig{Brokers: c.ListenAddrs(), ClientID: "laneim-test"}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	tests := []struct {
		name     string
		replicas int16
		want     int    // replicas per partition; 0 when creation must fail
		wantErr  string // part of the error when it must fail
	}{
		{name: "rf.default", replicas: 0, want: 1},
		{name: "rf.one", replicas: 1, want: 1},
		{name: "rf.three", replicas: 3, want: 3},
		{name: "rf.four", replicas: 4, wantErr: "replication"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := wiring.EnsureTopics(ctx, cfg, wiring.TopicSpec{Name: tt.name, Partitions: 2, Replicas: tt.replicas})
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(strings.ToLower(err.Error()), tt.wantErr) {
					t.Fatalf("EnsureTopics = %v, want an error about %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			sc := sarama.NewConfig()
			sc.Version = sarama.V2_8_0_0
			admin, err := sarama.NewClusterAdmin(cfg.Brokers, sc)
			if err != nil {
				t.Fatal(err)
			}
			defer admin.Close()
			meta, err := admin.DescribeTopics([]string{tt.name})
			if err != nil {
				t.Fatal(err)
			}
			if len(meta) != 1 || len(meta[0].Partitions) != 2 {
				t.Fatalf("described %+v, want one topic of 2 partitions", meta)
			}
			for _, p := range meta[0].Partitions {
				if len(p.Replicas) != tt.want {
					t.Errorf("partition %d has replicas %v, want %d", p.ID, p.Replicas, tt.want)
				}
			}
		})
	}
}
