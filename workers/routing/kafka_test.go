package routing_test

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
	"github.com/laneim/laneim/workers/routing"
)

// TestOverKafka runs the routing handler in a real router on the Kafka
// protocol: an accepted message comes out on messages.routed and its
// SendResult on the sender's comet topic, after the refusal of the
// message submitted before it.
func TestOverKafka(t *testing.T) {
	kcfg := testinfra.Kafka(t)
	logger := slog.New(slog.DiscardHandler)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := wiring.EnsureTopics(ctx, kcfg, wiring.TopicSpec{Name: topics.Delivery(origin.Comet), Partitions: 1}); err != nil {
		t.Fatal(err)
	}
	pub, err := wiring.NewPublisher(kcfg)
	if err != nil {
		t.Fatal(err)
	}
	defer pub.Close()
	h := testinfra.Must(routing.New(routing.Config{}, newFakeStore(), pub, logger))(t)
	subscribe := func(group string) (message.Subscriber, error) { return wiring.NewSubscriber(kcfg, group, logger) }
	r, err := wiring.NewRouter(wiring.RouterConfig{RetryInitial: time.Millisecond}, []pipeline.Handler{h.Pipeline()}, subscribe, pub, logger)
	if err != nil {
		t.Fatal(err)
	}
	app := fxtest.New(t, fx.Invoke(func(lc fx.Lifecycle) { wiring.RunRouter(lc, r) }))
	app.RequireStart()
	defer app.RequireStop()

	// Same conversation, so same partition: handled in this order.
	for i, sender := range []string{"carol", "bob"} {
		sub := &topicpb.Submitted{Origin: origin, RequestId: uint64(i + 1), Sender: sender, ClientMsgId: "m", To: &topicpb.Submitted_Room{Room: "lobby"}, Body: []byte("hi")}
		out, err := topics.Submitted.Encode(sub)
		if err != nil {
			t.Fatal(err)
		}
		if err := pub.Publish(topics.Submitted.Name, out); err != nil {
			t.Fatal(err)
		}
	}

	reader, err := wiring.NewSubscriber(kcfg, "test.reader", logger)
	if err != nil {
		t.Fatal(err)
	}
	defer reader.Close()
	subscribeTo := func(topic string) <-chan *message.Message {
		ch, err := reader.Subscribe(ctx, topic)
		if err != nil {
			t.Fatal(err)
		}
		return ch
	}
	next := func(topic string, ch <-chan *message.Message) *message.Message {
		t.Helper()
		select {
		case m := <-ch:
			m.Ack()
			return m
		case <-ctx.Done():
			t.Fatalf("nothing more on %s", topic)
			return nil
		}
	}

	routed, err := topics.Routed.Decode(next(topics.Routed.Name, subscribeTo(topics.Routed.Name)))
	if err != nil {
		t.Fatal(err)
	}
	if m := routed.GetMessage(); m.GetSender() != "bob" || m.GetConversation() != "room:lobby" || m.GetSeq() != 1 || routed.GetRoom() != "lobby" {
		t.Fatalf("routed %v, want bob's lobby message with seq 1", routed)
	}
	answers := subscribeTo(topics.Delivery(origin.Comet))
	refusal, err := topics.Deliveries.Decode(next(topics.Delivery(origin.Comet), answers))
	if err != nil {
		t.Fatal(err)
	}
	if refusal.GetFrame().GetRequestId() != 1 || refusal.GetFrame().GetError().GetCode() != clientpb.Error_NOT_MEMBER {
		t.Fatalf("first answer %v, want NOT_MEMBER to request 1", refusal)
	}
	result, err := topics.Deliveries.Decode(next(topics.Delivery(origin.Comet), answers))
	if err != nil {
		t.Fatal(err)
	}
	if res := result.GetFrame().GetSendResult(); result.GetFrame().GetRequestId() != 2 || res.GetSeq() != 1 || res.GetMessageId() != routed.GetMessage().GetId() {
		t.Fatalf("second answer %v, want the SendResult of %s", result, routed.GetMessage().GetId())
	}
}
