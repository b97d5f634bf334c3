package wiring

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/redis/go-redis/v9"
	"go.uber.org/fx"

	"github.com/laneim/laneim/wiring/pipeline"
)

// Config is what every laneIM process needs to reach its infrastructure.
type Config struct {
	Kafka  KafkaConfig
	Redis  RedisConfig
	Router RouterConfig
	// AdminAddr serves /metrics, /healthz and /readyz; empty: none.
	AdminAddr string
	// Pprof adds Go's profiling endpoints (/debug/pprof/) to AdminAddr.
	// Off by default: profiles expose internals and cost CPU while taken.
	Pprof bool
}

// Module provides a process's shared infrastructure from a supplied Config
// and *slog.Logger: a message.Publisher to Kafka, a BulkPublisher (made
// only in a process that asks for one), a SubscriberFactory, a
// redis.UniversalClient, and a Watermill router that runs every Handler in
// the "handlers" group for the life of the app.
var Module = fx.Module("wiring",
	fx.Provide(
		newPublisher,
		newBulkPublisher,
		newSubscriberFactory,
		newRedis,
		newRouter,
		NewMetrics,
	),
	fx.Invoke(RunRouter, runAdmin),
)

// Ready marks the process ready once every component has started; put it
// last in the app's options.
var Ready = fx.Invoke(markReady)

func newPublisher(lc fx.Lifecycle, cfg Config) (message.Publisher, error) {
	p, err := NewPublisher(cfg.Kafka)
	if err != nil {
		return nil, err
	}
	lc.Append(fx.StopHook(p.Close))
	return p, nil
}

// BulkPublisher is a Kafka publisher of its own for large answers: the
// history worker's pages to comets' bulk lanes (topics.Deliveries). A
// producer keeps one request in flight per broker and puts whatever is
// waiting into the next, so a live frame published through the same
// producer as a catch-up flood waits for requests of megabytes to be
// answered first; in one process (dev mode, or workers run together)
// routing and fan-out did, for 15–40 ms a hop (docs/performance.md,
// twenty-second round).
type BulkPublisher struct{ message.Publisher }

func newBulkPublisher(lc fx.Lifecycle, cfg Config) (BulkPublisher, error) {
	p, err := newPublisher(lc, cfg)
	if err != nil {
		return BulkPublisher{}, fmt.Errorf("bulk publisher: %w", err)
	}
	return BulkPublisher{p}, nil
}

// newSubscriberFactory binds NewSubscriber to the process's Kafka
// configuration. A subscriber belongs to whoever asked for it: the router
// closes those of its handlers (see newRouter).
func newSubscriberFactory(cfg Config, logger *slog.Logger) SubscriberFactory {
	return func(group string) (message.Subscriber, error) {
		return NewSubscriber(cfg.Kafka, group, logger)
	}
}

func newRedis(lc fx.Lifecycle, cfg Config) (redis.UniversalClient, error) {
	c, err := NewRedis(context.Background(), cfg.Redis)
	if err != nil {
		return nil, err
	}
	lc.Append(fx.StopHook(c.Close))
	return c, nil
}

type routerParams struct {
	fx.In
	Lifecycle fx.Lifecycle
	Metrics   *Metrics
	Config    Config
	Handlers  []pipeline.Handler `group:"handlers"`
	Subscribe SubscriberFactory
	Publisher message.Publisher
	Logger    *slog.Logger
}

func newRouter(p routerParams) (*message.Router, error) {
	if len(p.Handlers) > 0 {
		lag := newLagCollector(p.Config.Kafka, p.Handlers)
		if err := p.Metrics.Registry.Register(lag); err != nil {
			return nil, err
		}
		p.Lifecycle.Append(fx.StopHook(lag.Close))
	}
	var subs []*kafkaSubscriber
	subscribe := func(group string) (message.Subscriber, error) {
		s, err := p.Subscribe(group)
		if err != nil {
			return nil, err
		}
		c := &kafkaSubscriber{Subscriber: s}
		subs = append(subs, c)
		return c, nil
	}
	r, err := NewRouter(p.Config.Router, p.Handlers, subscribe, p.Publisher, p.Logger, p.Metrics.Middleware)
	if err != nil {
		return nil, err
	}
	// Closing a router that ran usually closes its handlers' subscribers
	// (Watermill does, unless the handler's context ended first), and a
	// router that never ran closes none. This hook, after RunRouter's,
	// closes whichever are still open: each exactly once.
	p.Lifecycle.Append(fx.StopHook(func() error {
		var errs []error
		for _, s := range subs {
			if err := s.Close(); err != nil {
				errs = append(errs, fmt.Errorf("close subscriber: %w", err))
			}
		}
		return errors.Join(errs...)
	}))
	return r, nil
}

// kafkaSubscriber is a handler's Kafka subscriber whose Close runs once,
// whoever calls it first. Its type name is what dead letters record as
// their subscriber (Watermill's poisoned_subscriber).
type kafkaSubscriber struct {
	message.Subscriber
	once sync.Once
	err  error
}

func (c *kafkaSubscriber) Close() error {
	c.once.Do(func() { c.err = c.Subscriber.Close() })
	return c.err
}
