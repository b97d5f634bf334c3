// Command pushnotify runs the example push-notification handler as its own process:
//
//	go run ./examples/pushnotify/cmd --kafka 127.0.0.1:9092 --url http://127.0.0.1:9000/push
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

	"github.com/laneim/laneim/examples/pushnotify"
	"github.com/laneim/laneim/wiring"
)

func main() {
	kafka := flag.String("kafka", os.Getenv("LANEIM_KAFKA"), "Kafka brokers, comma-separated")
	url := flag.String("url", "", "where to POST each notification")
	window := flag.Duration("window", time.Minute, "at most one notification per user and conversation per window")
	flag.Parse()
	logger := slog.New(slog.NewTextHandler(os.Stderr, nil))
	app := fx.New(
		fx.Supply(wiring.Config{Kafka: wiring.KafkaConfig{Brokers: strings.Split(*kafka, ","), ClientID: "laneim-pushnotify"}}, logger, pushnotify.Config{URL: *url, Window: *window}),
		wiring.Module, // Kafka publisher, subscribers and the router (Redis is never opened: nothing here asks for it)
		pushnotify.Module,
		fx.WithLogger(func() fxevent.Logger { return fxevent.NopLogger }),
	)
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	startCtx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := app.Start(startCtx); err != nil {
		fmt.Fprintln(os.Stderr, "pushnotify:", err)
		os.Exit(1)
	}
	logger.Info("pushnotify: started, consumer group laneim.pushnotify", "url", *url, "kafka", *kafka)
	<-ctx.Done()
	stopCtx, cancel2 := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel2()
	if err := app.Stop(stopCtx); err != nil {
		fmt.Fprintln(os.Stderr, "pushnotify:", err)
		os.Exit(1)
	}
}
