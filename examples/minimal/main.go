// Command minimal is the smallest laneIM handler, the one the README's
// "Adding a handler" shows whole: a process of its own that subscribes to
// messages.routed under the consumer group laneim.minimal and logs every
// routed message. Beside a running cluster (go run . dev):
//
//	go run ./examples/minimal --kafka 127.0.0.1:9092
package main

import (
	"context"
	"flag"
	"log/slog"
	"os"
	"strings"

	"github.com/ThreeDotsLabs/watermill/message"
	"go.uber.org/fx"

	"github.com/laneim/laneim/proto/topicpb"
	"github.com/laneim/laneim/topics"
	"github.com/laneim/laneim/wiring"
	"github.com/laneim/laneim/wiring/pipeline"
)

func main() {
	kafka := flag.String("kafka", "127.0.0.1:9092", "Kafka brokers, comma-separated")
	flag.Parse()
	logger := slog.New(slog.NewTextHandler(os.Stderr, nil))
	cfg := wiring.Config{Kafka: wiring.KafkaConfig{Brokers: strings.Split(*kafka, ","), ClientID: "laneim-minimal"}}
	// wiring.Module runs the process's router over Kafka: retries, dead
	// letters, metrics. Run stops the process on SIGINT and SIGTERM.
	fx.New(fx.Supply(cfg, logger), wiring.Module, Module, fx.NopLogger).Run()
}

// Module contributes the handler to the process's router.
var Module = pipeline.Provide(func(logger *slog.Logger) pipeline.Handler {
	// The payload is decoded once, by pipeline.On; an error returned is
	// retried, then dead-lettered.
	return pipeline.On("minimal", topics.Routed, func(_ context.Context, r *topicpb.Routed, _ *message.Message) error {
		// A Routed may carry several messages of one conversation.
		for _, one := range topics.SplitRouted(r) {
			m := one.GetMessage()
			logger.Info("routed", "conversation", m.GetConversation(), "seq", m.GetSeq(), "sender", m.GetSender())
		}
		return nil
	})
})
