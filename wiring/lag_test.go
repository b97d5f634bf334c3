package wiring_test

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/IBM/sarama"
	"github.com/ThreeDotsLabs/watermill-kafka/v3/pkg/kafka"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/laneim/laneim/internal/testinfra"
	"github.com/laneim/laneim/topics"
	"github.com/laneim/laneim/wiring"
	"github.com/laneim/laneim/wiring/pipeline"
)

// TestLagOverKafka checks laneim_handler_lag_messages on the Kafka
// protocol: a group that committed nothing lags by the whole topic, one
// that acknowledged some messages by the rest, partition by partition.
func TestLagOverKafka(t *testing.T) {
	const (
		topic      = "test.lag"
		partitions = 2
		produced   = 10
		acked      = 4
	)
	kcfg := testinfra.Kafka(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := wiring.EnsureTopics(ctx, kcfg, wiring.TopicSpec{Name: topic, Partitions: partitions}); err != nil {
		t.Fatal(err)
	}
	pub, err := wiring.NewPublisher(kcfg)
	if err != nil {
		t.Fatal(err)
	}
	defer pub.Close()
	// The publisher partitions by key with Sarama's hash partitioner.
	var ends [partitions]int
	hash := sarama.NewHashPartitioner(topic)
	for i := range produced {
		key := fmt.Sprintf("k%d", i)
		p, err := hash.Partition(&sarama.ProducerMessage{Topic: topic, Key: sarama.StringEncoder(key)}, partitions)
		if err != nil {
			t.Fatal(err)
		}
		ends[p]++
		m := message.NewMessage(key, []byte(key))
		m.Metadata.Set(topics.KeyMetadata, key)
		if err := pub.Publish(topic, m); err != nil {
			t.Fatal(err)
		}
	}
	if ends[0] == 0 || ends[1] == 0 {
		t.Fatalf("keys all on one partition: %v", ends)
	}

	lag := wiring.NewLagCollector(kcfg, []pipeline.Handler{{Name: "lag.reader", Topic: topic}, {Name: "lag.idle", Topic: topic}})
	defer lag.Close()
	expect := func(reader [partitions]int) string {
		var b strings.Builder
		b.WriteString("# HELP laneim_handler_lag_messages Messages of the handler's topic not yet committed by its consumer group, by partition.\n")
		b.WriteString("# TYPE laneim_handler_lag_messages gauge\n")
		for p := range partitions {
			fmt.Fprintf(&b, "laneim_handler_lag_messages{handler=%q,partition=\"%d\",topic=%q} %d\n", "lag.idle", p, topic, ends[p])
			fmt.Fprintf(&b, "laneim_handler_lag_messages{handler=%q,partition=\"%d\",topic=%q} %d\n", "lag.reader", p, topic, reader[p])
		}
		return b.String()
	}
	// Nothing committed yet: both groups lag by the whole topic.
	if err := testutil.CollectAndCompare(lag, strings.NewReader(expect(ends)), "laneim_handler_lag_messages"); err != nil {
		t.Fatal(err)
	}

	sub, err := wiring.NewSubscriber(kcfg, pipeline.ConsumerGroup("lag.reader"), slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	msgs, err := sub.Subscribe(ctx, topic)
	if err != nil {
		t.Fatal(err)
	}
	left := ends
	for range acked {
		select {
		case m := <-msgs:
			p, ok := kafka.MessagePartitionFromCtx(m.Context())
			if !ok {
				t.Fatal("message without partition")
			}
			left[p]--
			m.Ack()
		case <-ctx.Done():
			t.Fatal("no message")
		}
	}
	// The acknowledged messages are committed (auto-commit, 200ms) and no
	// longer count; the idle group still lags by everything.
	var last error
	testinfra.Eventually(t, 20*time.Second, func() bool {
		last = testutil.CollectAndCompare(lag, strings.NewReader(expect(left)), "laneim_handler_lag_messages")
		return last == nil
	}, "lag after %d acks: %v", acked, last)
}
