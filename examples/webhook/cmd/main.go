// Command webhook runs the example webhook handler as its own process:
//
//	go run ./examples/webhook/cmd --kafka 127.0.0.1:9092 --url http://127.0.0.1:9000/hook
//
// It is assembled from the same fx modules as every laneIM worker.
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"go.uber.org/fx"
	"go.uber.org/fx/fxevent"

	"github.com/laneim/laneim/examples/webhook"
	"github.com/laneim/laneim/wiring"
)

func main() {
	kafka := flag.String("kafka", os.Getenv("LANEIM_KAFKA"), "Kafka brokers, comma-separated")
	url := flag.String("url", "", "where to POST each routed message")
	flag.Parse()
	logger := slog.New(slog.NewTextHandler(os.Stderr, nil))
	app := fx.New(
		fx.Supply(wiring.Config{Kafka: wiring.KafkaConfig{Brokers: strings.Split(*kafka, ","), ClientID: "laneim-webhook"}}, logger, webhook.Config{URL: *url}),
		wiring.Module, // Kafka publisher, subscribers and the router (Redis is never opened: nothing here asks for it)
		webhook.Module,
		fx.WithLogger(func() fxevent.Logger { return fxevent.NopLogger }),
	)
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	startCtx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := app.Start(startCtx); err != nil {
		fmt.Fprintln(os.Stderr, "webhook:", err)
		os.Exit(1)
	}
	logger.Info("webhook: started, consumer group laneim.webhook", "url", *url, "kafka", *kafka)
	<-ctx.Done()
	stopCtx, cancel2 := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel2()
	if err := app.Stop(stopCtx); err != nil {
		fmt.Fprintln(os.Stderr, "webhook:", err)
		os.Exit(1)
	}
}
