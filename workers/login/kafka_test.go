package login_test

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/ThreeDotsLabs/watermill/message/router/middleware"
	"go.uber.org/fx"
	"go.uber.org/fx/fxtest"

	"github.com/laneim/laneim/internal/testinfra"
	"github.com/laneim/laneim/proto/clientpb"
	"github.com/laneim/laneim/proto/topicpb"
	"github.com/laneim/laneim/topics"
	"github.com/laneim/laneim/wiring"
	"github.com/laneim/laneim/wiring/pipeline"
	"github.com/laneim/laneim/workers/login"
)

// TestOverKafka runs the login handler in a real router on the Kafka
// protocol: an accepted login comes out on session.events, a refused one
// on the comet's delivery topic, an undecodable one in dead letters.
func TestOverKafka(t *testing.T) {
	kcfg := testinfra.Kafka(t)
	logger := slog.New(slog.DiscardHandler)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := wiring.EnsureTopics(ctx, kcfg, wiring.TopicSpec{Name: topics.Delivery("c1"), Partitions: 1}); err != nil {
		t.Fatal(err)
	}
	pub, err := wiring.NewPublisher(kcfg)
	if err != nil {
		t.Fatal(err)
	}
	defer pub.Close()
	h, err := login.New(login.Config{Secret: secret}, fakeUsers{"alice": {ID: "alice"}}, pub, logger)
	if err != nil {
		t.Fatal(err)
	}
	subscribe := func(group string) (message.Subscriber, error) { return wiring.NewSubscriber(kcfg, group, logger) }
	r, err := wiring.NewRouter(wiring.RouterConfig{RetryInitial: time.Millisecond}, []pipeline.Handler{h.Pipeline()}, subscribe, pub, logger)
	if err != nil {
		t.Fatal(err)
	}
	app := fxtest.New(t, fx.Invoke(func(lc fx.Lifecycle) { wiring.RunRouter(lc, r) }))
	app.RequireStart()
	defer app.RequireStop()

	for i, tok := range []string{mint(t, secret, "alice", time.Hour), "forged"} {
		req := &topicpb.LoginRequest{Session: &topicpb.Session{Comet: "c1", Conn: "x." + string(rune('1'+i))}, RequestId: uint64(i + 1), Token: tok, Device: "web"}
		out, err := topics.LoginRequests.Encode(req)
		if err != nil {
			t.Fatal(err)
		}
		if err := pub.Publish(topics.LoginRequests.Name, out); err != nil {
			t.Fatal(err)
		}
	}
	if err := pub.Publish(topics.LoginRequests.Name, message.NewMessage("poison-1", []byte{0xff, 0xff})); err != nil {
		t.Fatal(err)
	}

	reader, err := wiring.NewSubscriber(kcfg, "test.reader", logger)
	if err != nil {
		t.Fatal(err)
	}
	defer reader.Close()
	next := func(topic string) *message.Message {
		t.Helper()
		ch, err := reader.Subscribe(ctx, topic)
		if err != nil {
			t.Fatal(err)
		}
		select {
		case m := <-ch:
			m.Ack()
			return m
		case <-ctx.Done():
			t.Fatalf("nothing on %s", topic)
			return nil
		}
	}

	ev, err := topics.SessionEvents.Decode(next(topics.SessionEvents.Name))
	if err != nil {
		t.Fatal(err)
	}
	if ev.GetKind() != topicpb.SessionEvent_OPENED || ev.GetUser() != "alice" || ev.GetSession().GetConn() != "x.1" || ev.GetRequestId() != 1 {
		t.Fatalf("session event %v, want alice's x.1 opened", ev)
	}
	d, err := topics.Deliveries.Decode(next(topics.Delivery("c1")))
	if err != nil {
		t.Fatal(err)
	}
	if d.GetFrame().GetError().GetCode() != clientpb.Error_BAD_TOKEN || d.GetFrame().GetRequestId() != 2 || len(d.GetConns()) != 1 || d.GetConns()[0] != "x.2" {
		t.Fatalf("delivery %v, want BAD_TOKEN to x.2", d)
	}
	dl := next(topics.DeadLetters)
	if dl.UUID != "poison-1" || dl.Metadata.Get(middleware.PoisonedHandlerKey) != login.Name {
		t.Fatalf("dead letter %s from %q, want poison-1 from %s", dl.UUID, dl.Metadata.Get(middleware.PoisonedHandlerKey), login.Name)
	}
}
