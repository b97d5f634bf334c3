package wiring_test

import (
	"context"
	"testing"
	"time"

	"github.com/IBM/sarama"
	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/laneim/laneim/internal/testinfra"
	"github.com/laneim/laneim/proto/clientpb"
	"github.com/laneim/laneim/proto/topicpb"
	"github.com/laneim/laneim/topics"
	"github.com/laneim/laneim/wiring"
)

// TestPartitioner checks where laneIM's producers put messages: a
// delivery topic's in their lane, whatever else by its key's hash, as
// Sarama's hash partitioner does.
func TestPartitioner(t *testing.T) {
	hash := sarama.NewHashPartitioner("messages.routed")
	tests := []struct {
		name       string
		topic, key string
		partitions int32
		want       int32 // -1: hash's choice
	}{
		{"live", "deliver.c1", "", 2, 0},
		{"live.nil", "deliver.c1", "\x00nil", 2, 0},
		{"bulk", "deliver.c1", topics.DeliveryBulkKey, 2, 1},
		{"bulk.one.partition", "deliver.c1", topics.DeliveryBulkKey, 1, 0},
		{"other.key", "deliver.c1", "room:lobby", 2, 0},
		{"hashed", "messages.routed", "room:lobby", 8, -1},
		{"hashed.other", "messages.routed", "dm:a:b", 8, -1},
		{"prefix.only", "deliver.", topics.DeliveryBulkKey, 8, -1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := &sarama.ProducerMessage{Topic: tt.topic}
			if tt.key != "\x00nil" {
				m.Key = sarama.StringEncoder(tt.key)
			}
			want := tt.want
			if want < 0 {
				var err error
				if want, err = hash.Partition(m, tt.partitions); err != nil {
					t.Fatal(err)
				}
			}
			p := wiring.Partitioner(tt.topic)
			got, err := p.Partition(m, tt.partitions)
			if err != nil {
				t.Fatal(err)
			}
			if got != want {
				t.Errorf("Partition(%q) in %s of %d = %d, want %d", tt.key, tt.topic, tt.partitions, got, want)
			}
			if !p.RequiresConsistency() {
				t.Error("RequiresConsistency = false: a key's messages could change partitions")
			}
		})
	}
}

// partitions returns how many partitions topic has.
func partitions(t *testing.T, brokers []string, topic string) int {
	t.Helper()
	sc := sarama.NewConfig()
	sc.Version = sarama.V3_0_0_0
	admin, err := sarama.NewClusterAdmin(brokers, sc)
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close()
	meta, err := admin.DescribeTopics([]string{topic})
	if err != nil || len(meta) != 1 || meta[0].Err != sarama.ErrNoError {
		t.Fatalf("describe %s: %v %+v", topic, err, meta)
	}
	return len(meta[0].Partitions)
}

// TestEnsureTopicsGrowsDeliveryTopics checks that a comet's delivery
// topic made with one partition, before the lanes, is grown to them,
// and that a topic not marked Grow keeps its partitions.
func TestEnsureTopicsGrowsDeliveryTopics(t *testing.T) {
	cfg := testinfra.Kafka(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	old := wiring.DeliveryTopic("c1")
	if !old.Grow || old.Partitions != 2 {
		t.Fatalf("DeliveryTopic = %+v, want 2 partitions and Grow", old)
	}
	old.Partitions, old.Grow = 1, false
	keyed := wiring.TopicSpec{Name: "keyed", Partitions: 2}
	if err := wiring.EnsureTopics(ctx, cfg, old, keyed); err != nil {
		t.Fatal(err)
	}
	keyed.Partitions = 4
	for range 2 { // growing again is a no-op
		if err := wiring.EnsureTopics(ctx, cfg, wiring.DeliveryTopic("c1"), keyed); err != nil {
			t.Fatal(err)
		}
	}
	if n := partitions(t, cfg.Brokers, topics.Delivery("c1")); n != 2 {
		t.Errorf("delivery topic has %d partitions, want 2", n)
	}
	if n := partitions(t, cfg.Brokers, "keyed"); n != 2 {
		t.Errorf("topic not marked Grow has %d partitions, want its own 2", n)
	}
}

// TestDeliveryLanesIndependent checks what the lanes are for: a read's
// answer on a comet's delivery topic that is not yet handled does not
// hold up the live messages published after it, and each lane keeps its
// order.
func TestDeliveryLanesIndependent(t *testing.T) {
	cfg := testinfra.Kafka(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := wiring.EnsureTopics(ctx, cfg, wiring.DeliveryTopic("c1")); err != nil {
		t.Fatal(err)
	}
	pub, err := wiring.NewPublisher(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer pub.Close()
	dt := topics.DeliveriesOf("c1")
	publish := func(d *topicpb.Delivery) {
		t.Helper()
		msg, err := dt.Encode(d)
		if err != nil {
			t.Fatal(err)
		}
		if err := pub.Publish(dt.Name, msg); err != nil {
			t.Fatal(err)
		}
	}
	answer := func(req uint64) *topicpb.Delivery {
		return &topicpb.Delivery{Conns: []string{"x"}, Frame: &clientpb.ServerFrame{RequestId: req, Body: &clientpb.ServerFrame_SyncResult{SyncResult: &clientpb.SyncResult{Conversation: "room:r"}}}}
	}
	live := func(seq uint64) *topicpb.Delivery {
		return &topicpb.Delivery{Room: "r", Frame: &clientpb.ServerFrame{Body: &clientpb.ServerFrame_Messages{Messages: &clientpb.MessageBatch{Messages: []*clientpb.Message{{Conversation: "room:r", Seq: seq}}}}}}
	}
	publish(answer(1))
	publish(answer(2))

	sub, err := wiring.NewSubscriber(cfg, "laneim.comet.c1", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	msgs, err := sub.Subscribe(ctx, dt.Name)
	if err != nil {
		t.Fatal(err)
	}
	next := func() *message.Message {
		t.Helper()
		select {
		case m := <-msgs:
			return m
		case <-ctx.Done():
			t.Fatal("no message")
			return nil
		}
	}
	// The bulk lane's first answer, held unacked: its lane waits.
	// (The subscriber may have merged both answers into it.)
	held := next()
	var answered []uint64
	for _, d := range topics.Split(dt, mustDecode(t, dt, held)) {
		answered = append(answered, d.GetFrame().GetRequestId())
	}
	if answered[0] != 1 {
		t.Fatalf("first message answers %v, want request 1 first", answered)
	}
	for seq := uint64(1); seq <= 3; seq++ {
		publish(live(seq))
	}
	for seq := uint64(1); seq <= 3; {
		m := next()
		for _, d := range topics.Split(dt, mustDecode(t, dt, m)) {
			got := d.GetFrame().GetMessages().GetMessages()
			if len(got) != 1 || got[0].GetSeq() != seq {
				t.Fatalf("live lane gave %v, want seq %d (answer 1 still unacked)", d, seq)
			}
			seq++
		}
		m.Ack()
	}
	held.Ack()
	if len(answered) == 1 {
		if d := mustDecode(t, dt, next()); d.GetFrame().GetRequestId() != 2 {
			t.Fatalf("after answer 1 came %v, want the answer to request 2", d)
		}
	} else if answered[1] != 2 {
		t.Fatalf("first message answers %v, want requests 1 and 2 in order", answered)
	}
}

func mustDecode(t *testing.T, dt topics.Topic[*topicpb.Delivery], m *message.Message) *topicpb.Delivery {
	t.Helper()
	d, err := dt.Decode(m)
	if err != nil {
		t.Fatal(err)
	}
	return d
}
