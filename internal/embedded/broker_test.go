package embedded_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/IBM/sarama"

	"github.com/laneim/laneim/internal/embedded"
	"github.com/laneim/laneim/wiring"
)

// TestBrokerAppliesRetention: the embedded broker, which holds every
// record in memory, trims a topic to its retention.bytes within its
// cleaner interval: a delivery topic fed faster than its bound does not
// keep growing.
func TestBrokerAppliesRetention(t *testing.T) {
	b, err := embedded.StartBroker(embedded.BrokerConfig{CleanerInterval: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(b.Close)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cfg := wiring.KafkaConfig{Brokers: b.Addrs()}
	const topic = "deliver.retention"
	if err := wiring.EnsureTopics(ctx, cfg, wiring.TopicSpec{Name: topic, Partitions: 1, RetentionBytes: 64 << 10}); err != nil {
		t.Fatal(err)
	}
	sc := sarama.NewConfig()
	sc.Producer.Return.Successes = true
	client, err := sarama.NewClient(b.Addrs(), sc)
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	producer, err := sarama.NewSyncProducerFromClient(client)
	if err != nil {
		t.Fatal(err)
	}
	defer producer.Close()
	value := sarama.ByteEncoder(strings.Repeat("x", 16<<10))
	for range 64 { // 1 MiB, 16 times the bound
		if _, _, err := producer.SendMessage(&sarama.ProducerMessage{Topic: topic, Value: value}); err != nil {
			t.Fatal(err)
		}
	}
	for {
		oldest, err := client.GetOffset(topic, 0, sarama.OffsetOldest)
		if err != nil {
			t.Fatal(err)
		}
		// At most 64 KiB of 16 KiB records stay: the first 60 go.
		if oldest >= 60 {
			return
		}
		select {
		case <-ctx.Done():
			t.Fatalf("oldest offset still %d of 64 after %v: retention not applied", oldest, 30*time.Second)
		case <-time.After(50 * time.Millisecond):
		}
	}
}
