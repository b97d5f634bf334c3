package wiring_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/IBM/sarama"
	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/ThreeDotsLabs/watermill/message/router/middleware"
	"github.com/ThreeDotsLabs/watermill/pubsub/gochannel"

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
	t.Parallel()
	k := testinfra.KafkaPipeline(t)
	var logged testinfra.SyncBuffer
	k.Logger = slog.New(slog.NewTextHandler(&logged, nil))
	var failedOnce atomic.Int32
	var handled sync.Map // rooms
	k.Run(pipeline.Handler{
		Name:  "test.routed",
		Topic: topics.Routed.Name,
		Handle: func(msg *message.Message) error {
			r, err := topics.Routed.Decode(msg)
			if err != nil {
				return pipeline.Permanent(err)
			}
			// The subscriber may have merged the messages.
			rs := topics.SplitRouted(r)
			for _, r := range rs {
				if r.GetRoom() == "flaky" && failedOnce.Add(1) == 1 {
					return errors.New("transient")
				}
			}
			// A retry runs with a live context, not the one the timeout
			// middleware cancelled after the failed attempt.
			if err := msg.Context().Err(); err != nil {
				return pipeline.Permanent(fmt.Errorf("retry ran with a dead context: %w", err))
			}
			for _, r := range rs {
				handled.Store(r.GetRoom(), true)
			}
			return nil
		},
	})

	for _, room := range []string{"a", "flaky", "b"} {
		m, err := topics.Routed.Encode(&topicpb.Routed{Room: room})
		if err != nil {
			t.Fatal(err)
		}
		k.Publish(topics.Routed.Name, m)
	}
	k.Publish(topics.Routed.Name, message.NewMessage("poison-1", []byte{0xff, 0xff}))

	m := k.Next(topics.DeadLetters)
	if m.UUID != "poison-1" {
		t.Errorf("dead letter %s, want poison-1", m.UUID)
	}
	if m.Metadata.Get(middleware.ReasonForPoisonedKey) == "" || m.Metadata.Get(middleware.PoisonedHandlerKey) != "test.routed" {
		t.Errorf("dead letter metadata %v lacks reason or handler", m.Metadata)
	}
	// One log line for it, with its handler, topic, id and reason; none
	// for the transient failure that a retry cured.
	var lines []string
	for _, l := range strings.Split(logged.String(), "\n") {
		if strings.Contains(l, "message dead-lettered") {
			lines = append(lines, l)
		}
	}
	if len(lines) != 1 {
		t.Fatalf("%d dead-letter log lines, want 1:\n%s", len(lines), logged.String())
	}
	for _, w := range []string{"handler=test.routed", "topic=" + topics.Routed.Name, "uuid=poison-1", "reason="} {
		if !strings.Contains(lines[0], w) {
			t.Errorf("dead-letter log line lacks %q: %s", w, lines[0])
		}
	}
	testinfra.Eventually(t, 20*time.Second, func() error {
		var got []string
		handled.Range(func(k, _ any) bool { got = append(got, k.(string)); return true })
		if len(got) != 3 {
			return fmt.Errorf("handled %v", got)
		}
		return nil
	}, "a, flaky and b handled")
}

// TestPublishTooLargeIsPermanent: a message over the broker's limit fails
// as pipeline.Permanent, so the handler that published it goes to dead
// letters at once instead of retrying for seconds while holding its
// partition (issue 10).
func TestPublishTooLargeIsPermanent(t *testing.T) {
	t.Parallel()
	k := testinfra.KafkaPipeline(t)
	err := k.Pub.Publish(topics.Routed.Name, message.NewMessage("big", make([]byte, 2<<20)))
	if err == nil || !pipeline.IsPermanent(err) {
		t.Fatalf("publishing 2 MiB = %v, want a permanent error", err)
	}
	if err := k.Pub.Publish(topics.Routed.Name, message.NewMessage("small", []byte("x"))); err != nil {
		t.Fatalf("a small message after it: %v", err)
	}
}

// TestTopicRetention: topics whose messages are of no use after a while
// are created with their retention: login.requests, whose payloads hold
// bearer tokens (issue 11), and history.requests keep an hour; a comet's
// delivery topic an hour and 64 MiB per lane, in 16 MiB segments (a
// client paging through large messages must not grow the broker without
// bound, and a broker deletes whole segments only).
func TestTopicRetention(t *testing.T) {
	t.Parallel()
	k := testinfra.KafkaPipeline(t)
	if err := wiring.EnsureTopics(context.Background(), k.Kafka, wiring.DeliveryTopic("c-retention")); err != nil {
		t.Fatal(err)
	}
	sc, err := k.Kafka.Sarama()
	if err != nil {
		t.Fatal(err)
	}
	admin, err := sarama.NewClusterAdmin(k.Kafka.Brokers, sc)
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close()
	for _, tt := range []struct {
		topic        string
		ms, maxBytes string // "" : not set on the topic
		segment      string
	}{
		{topics.LoginRequests.Name, "3600000", "", ""},
		{topics.HistoryRequests.Name, "3600000", "", ""},
		{topics.Delivery("c-retention"), "3600000", "67108864", "16777216"},
		{topics.Routed.Name, "", "", ""},
	} {
		entries, err := admin.DescribeConfig(sarama.ConfigResource{Type: sarama.TopicResource, Name: tt.topic})
		if err != nil {
			t.Fatal(err)
		}
		got := map[string]string{}
		for _, e := range entries {
			if !e.Default && e.Source == sarama.SourceTopic {
				got[e.Name] = e.Value
			}
		}
		if got["retention.ms"] != tt.ms || got["retention.bytes"] != tt.maxBytes || got["segment.bytes"] != tt.segment {
			t.Errorf("%s: retention.ms %q, retention.bytes %q, segment.bytes %q; want %q, %q, %q", tt.topic,
				got["retention.ms"], got["retention.bytes"], got["segment.bytes"], tt.ms, tt.maxBytes, tt.segment)
		}
	}
}

// TestStoppingDoesNotDeadLetter: a message whose handler is cut short
// because its worker stops (the router's context ends) is left
// unacknowledged, not sent to dead letters, where it would be lost to
// the pipeline and logged as poison.
func TestStoppingDoesNotDeadLetter(t *testing.T) {
	t.Parallel()
	bus := gochannel.NewGoChannel(gochannel.Config{Persistent: true}, watermill.NopLogger{})
	defer bus.Close()
	// Dead letters go elsewhere: the router closes bus, its subscriber.
	deadBus := gochannel.NewGoChannel(gochannel.Config{Persistent: true}, watermill.NopLogger{})
	defer deadBus.Close()
	dead, err := deadBus.Subscribe(context.Background(), topics.DeadLetters)
	if err != nil {
		t.Fatal(err)
	}
	entered := make(chan struct{})
	var once sync.Once
	r, err := wiring.NewRouter(wiring.RouterConfig{}, []pipeline.Handler{{
		Name:  "test.stopping",
		Topic: "in",
		Handle: func(msg *message.Message) error {
			once.Do(func() { close(entered) })
			<-msg.Context().Done() // works until the worker stops
			return msg.Context().Err()
		},
	}}, func(string) (message.Subscriber, error) { return bus, nil }, deadBus, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = r.Run(context.Background()) }()
	<-r.Running()
	if err := bus.Publish("in", message.NewMessage("m-1", []byte("x"))); err != nil {
		t.Fatal(err)
	}
	select {
	case <-entered:
	case <-time.After(10 * time.Second):
		t.Fatal("handler not called")
	}
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case m := <-dead:
		t.Fatalf("message %s dead-lettered on stop (reason %q)", m.UUID, m.Metadata.Get(middleware.ReasonForPoisonedKey))
	case <-time.After(500 * time.Millisecond):
	}
}
