package fanout_test

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"go.uber.org/fx"
	"go.uber.org/fx/fxtest"

	"github.com/laneim/laneim/internal/testinfra"
	"github.com/laneim/laneim/proto/clientpb"
	"github.com/laneim/laneim/proto/topicpb"
	"github.com/laneim/laneim/topics"
	"github.com/laneim/laneim/wiring"
	"github.com/laneim/laneim/wiring/pipeline"
)

// TestOverKafka runs the fan-out handler in a real router on the Kafka
// protocol: two routed messages of a room reach each target comet's topic
// once each, in order, and nothing reaches a comet that is not a target.
func TestOverKafka(t *testing.T) {
	kcfg := testinfra.Kafka(t)
	logger := slog.New(slog.DiscardHandler)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	comets := []string{"c1", "c2", "c3"}
	for _, c := range comets {
		if err := wiring.EnsureTopics(ctx, kcfg, wiring.TopicSpec{Name: topics.Delivery(c), Partitions: 1}); err != nil {
			t.Fatal(err)
		}
	}
	pub, err := wiring.NewPublisher(kcfg)
	if err != nil {
		t.Fatal(err)
	}
	defer pub.Close()
	subscribe := func(group string) (message.Subscriber, error) { return wiring.NewSubscriber(kcfg, group, logger) }
	r, err := wiring.NewRouter(wiring.RouterConfig{RetryInitial: time.Millisecond}, []pipeline.Handler{newFanout(t, pub).Pipeline()}, subscribe, pub, logger)
	if err != nil {
		t.Fatal(err)
	}
	app := fxtest.New(t, fx.Invoke(func(lc fx.Lifecycle) { wiring.RunRouter(lc, r) }))
	app.RequireStart()
	defer app.RequireStop()

	// c3 is a target of neither message; its topic then gets a marker.
	for seq := uint64(1); seq <= 2; seq++ {
		m := &clientpb.Message{Id: "m", Conversation: "room:lobby", Seq: seq, Sender: "alice"}
		out, err := topics.Routed.Encode(&topicpb.Routed{Message: m, Room: "lobby", Comets: comets[:2]})
		if err != nil {
			t.Fatal(err)
		}
		if err := pub.Publish(topics.Routed.Name, out); err != nil {
			t.Fatal(err)
		}
	}
	marker, err := topics.Deliveries.Encode(&topicpb.Delivery{Room: "marker"})
	if err != nil {
		t.Fatal(err)
	}
	if err := pub.Publish(topics.Delivery("c3"), marker); err != nil {
		t.Fatal(err)
	}

	reader, err := wiring.NewSubscriber(kcfg, "test.reader", logger)
	if err != nil {
		t.Fatal(err)
	}
	defer reader.Close()
	next := func(comet string, ch <-chan *message.Message) *topicpb.Delivery {
		t.Helper()
		select {
		case m := <-ch:
			m.Ack()
			d, err := topics.Deliveries.Decode(m)
			if err != nil {
				t.Fatal(err)
			}
			return d
		case <-ctx.Done():
			t.Fatalf("nothing more on %s", topics.Delivery(comet))
			return nil
		}
	}
	for _, c := range comets[:2] {
		ch, err := reader.Subscribe(ctx, topics.Delivery(c))
		if err != nil {
			t.Fatal(err)
		}
		// One partition: a duplicate of seq 1 would come before seq 2.
		for seq := uint64(1); seq <= 2; seq++ {
			d := next(c, ch)
			msgs := d.GetFrame().GetMessages().GetMessages()
			if d.GetRoom() != "lobby" || len(msgs) != 1 || msgs[0].GetSeq() != seq {
				t.Fatalf("%s: delivery %v, want lobby seq %d", c, d, seq)
			}
		}
	}
	ch, err := reader.Subscribe(ctx, topics.Delivery("c3"))
	if err != nil {
		t.Fatal(err)
	}
	if d := next("c3", ch); d.GetRoom() != "marker" {
		t.Fatalf("c3, not a target, got %v", d)
	}
}
