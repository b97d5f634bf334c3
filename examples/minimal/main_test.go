package main

import (
	"log/slog"
	"strings"
	"testing"
	"time"

	"go.uber.org/fx"
	"go.uber.org/fx/fxtest"
	"go.uber.org/goleak"

	"github.com/laneim/laneim/internal/testinfra"
	"github.com/laneim/laneim/proto/clientpb"
	"github.com/laneim/laneim/proto/topicpb"
	"github.com/laneim/laneim/topics"
	"github.com/laneim/laneim/wiring"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		// Sarama's meters share one ticker goroutine, started by the first
		// meter and never stopped.
		goleak.IgnoreTopFunction("github.com/rcrowley/go-metrics.(*meterArbiter).tick"),
	)
}

// TestLogsRoutedMessages runs the handler as main does, over the Kafka
// protocol: each message of a routed batch is logged once.
func TestLogsRoutedMessages(t *testing.T) {
	kcfg := testinfra.Kafka(t)
	var log testinfra.SyncBuffer
	app := fxtest.New(t, fx.Supply(wiring.Config{Kafka: kcfg}, slog.New(slog.NewTextHandler(&log, nil))), wiring.Module, Module)
	app.RequireStart()
	defer app.RequireStop()
	pub, err := wiring.NewPublisher(kcfg)
	if err != nil {
		t.Fatal(err)
	}
	defer pub.Close()
	batch := &topicpb.Routed{
		Message: &clientpb.Message{Conversation: "room:lobby", Seq: 7, Sender: "alice"},
		More:    []*topicpb.Routed{{Message: &clientpb.Message{Conversation: "room:lobby", Seq: 8, Sender: "bob"}}},
	}
	m, err := topics.Routed.Encode(batch)
	if err != nil {
		t.Fatal(err)
	}
	if err := pub.Publish(topics.Routed.Name, m); err != nil {
		t.Fatal(err)
	}
	want := []string{"conversation=room:lobby seq=7 sender=alice", "conversation=room:lobby seq=8 sender=bob"}
	testinfra.Eventually(t, 30*time.Second, func() bool {
		for _, w := range want {
			if !strings.Contains(log.String(), w) {
				return false
			}
		}
		return true
	}, "both messages of the batch logged")
}
