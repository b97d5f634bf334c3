package wiring_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/ThreeDotsLabs/watermill/message/router/middleware"
	"go.uber.org/fx"
	"go.uber.org/fx/fxtest"

	"github.com/laneim/laneim/internal/testinfra"
	"github.com/laneim/laneim/proto/topicpb"
	"github.com/laneim/laneim/topics"
	"github.com/laneim/laneim/wiring"
	"github.com/laneim/laneim/wiring/pipeline"
)

// TestRouterOverKafka runs a handler on the Kafka protocol: good messages
// are handled, an undecodable one goes to dead letters with its reason, and
// a transient failure is retried.
func TestRouterOverKafka(t *testing.T) {
	kcfg := testinfra.Kafka(t)
	logger := slog.New(slog.DiscardHandler)
	pub, err := wiring.NewPublisher(kcfg)
	if err != nil {
		t.Fatal(err)
	}
	defer pub.Close()

	var handled, failedOnce atomic.Int32
	h := pipeline.Handler{
		Name:  "test.routed",
		Topic: topics.Routed.Name,
		Handle: func(msg *message.Message) error {
			r, err := topics.Routed.Decode(msg)
			if err != nil {
				return pipeline.Permanent(err)
			}
			if r.GetRoom() == "flaky" && failedOnce.Add(1) == 1 {
				return errors.New("transient")
			}
			// A retry runs with a live context, not the one the timeout
			// middleware cancelled after the failed attempt.
			if err := msg.Context().Err(); err != nil {
				return pipeline.Permanent(fmt.Errorf("retry ran with a dead context: %w", err))
			}
			handled.Add(1)
			return nil
		},
	}
	subscribe := func(group string) (message.Subscriber, error) { return wiring.NewSubscriber(kcfg, group, logger) }
	r, err := wiring.NewRouter(wiring.RouterConfig{RetryInitial: time.Millisecond}, []pipeline.Handler{h}, subscribe, pub, logger)
	if err != nil {
		t.Fatal(err)
	}
	app := fxtest.New(t, fx.Invoke(func(lc fx.Lifecycle) { wiring.RunRouter(lc, r) }))
	app.RequireStart()
	defer app.RequireStop()

	for _, room := range []string{"a", "flaky", "b"} {
		m, err := topics.Routed.Encode(&topicpb.Routed{Room: room})
		if err != nil {
			t.Fatal(err)
		}
		if err := pub.Publish(topics.Routed.Name, m); err != nil {
			t.Fatal(err)
		}
	}
	if err := pub.Publish(topics.Routed.Name, message.NewMessage("poison-1", []byte{0xff, 0xff})); err != nil {
		t.Fatal(err)
	}

	dl, err := wiring.NewSubscriber(kcfg, "test.deadletters", logger)
	if err != nil {
		t.Fatal(err)
	}
	defer dl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	msgs, err := dl.Subscribe(ctx, topics.DeadLetters)
	if err != nil {
		t.Fatal(err)
	}
	select {
	case m := <-msgs:
		m.Ack()
		if m.UUID != "poison-1" {
			t.Errorf("dead letter %s, want poison-1", m.UUID)
		}
		if m.Metadata.Get(middleware.ReasonForPoisonedKey) == "" || m.Metadata.Get(middleware.PoisonedHandlerKey) != "test.routed" {
			t.Errorf("dead letter metadata %v lacks reason or handler", m.Metadata)
		}
	case <-ctx.Done():
		t.Fatal("no dead letter")
	}
	testinfra.Eventually(t, 20*time.Second, func() bool { return handled.Load() == 3 }, "handled %d of 3", handled.Load())
}
