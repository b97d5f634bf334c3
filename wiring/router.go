package wiring

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/ThreeDotsLabs/watermill/message/router/middleware"
	"go.uber.org/fx"

	"github.com/laneim/laneim/topics"
	"github.com/laneim/laneim/wiring/pipeline"
)

// RouterConfig tunes the shared middleware.
type RouterConfig struct {
	// MaxRetries is how many times a failing message is retried before it
	// goes to the dead-letter topic.
	MaxRetries int
	// RetryInitial starts the backoff, which doubles up to RetryMax at
	// each step. Watermill's Retry takes a step for ShouldRetry and one
	// for the wait, so the waits are 2, 8, 32... times RetryInitial
	// (100ms, 400ms, 1.6s, 2s, 2s by default).
	RetryInitial, RetryMax time.Duration
	// Timeout bounds one attempt of a handler.
	Timeout time.Duration
}

func (c *RouterConfig) setDefaults() {
	if c.MaxRetries == 0 {
		c.MaxRetries = 5
	}
	if c.RetryInitial == 0 {
		c.RetryInitial = 50 * time.Millisecond
	}
	if c.RetryMax == 0 {
		c.RetryMax = 2 * time.Second
	}
	if c.Timeout == 0 {
		c.Timeout = 10 * time.Second
	}
}

// SubscriberFactory returns a subscriber for a consumer group.
type SubscriberFactory func(group string) (message.Subscriber, error)

// NewRouter builds a Watermill router running handlers, each under its own
// consumer group, with laneIM's middleware: recovered panics, retries with
// exponential backoff, a per-attempt timeout, and poison messages moved to
// topics.DeadLetters with the error in their metadata.
//
// observe, if given, wraps each handler inside the poison queue and
// outside the retries: it sees one outcome per message, the error of one
// that is about to go to dead letters included.
//
// The router owns the subscribers it gets from subscribe: closing a
// router that ran closes them (Watermill closes a running handler's
// subscriber), and a failing NewRouter closes those it got. The caller
// closes those of a router it never runs.
func NewRouter(cfg RouterConfig, handlers []pipeline.Handler, subscribe SubscriberFactory, deadLetters message.Publisher, logger *slog.Logger, observe ...message.HandlerMiddleware) (*message.Router, error) {
	cfg.setDefaults()
	wlog := watermillLogger(logger)
	r, err := message.NewRouter(message.RouterConfig{CloseTimeout: 15 * time.Second}, wlog)
	if err != nil {
		return nil, fmt.Errorf("router: %w", err)
	}
	poison, err := middleware.PoisonQueueWithFilter(deadLetters, topics.DeadLetters, deadLettered)
	if err != nil {
		return nil, fmt.Errorf("router: poison queue: %w", err)
	}
	r.AddMiddleware(poison, logDeadLetters(logger))
	r.AddMiddleware(observe...)
	r.AddMiddleware(
		middleware.Retry{
			MaxRetries:      cfg.MaxRetries,
			InitialInterval: cfg.RetryInitial,
			MaxInterval:     cfg.RetryMax,
			Multiplier:      2,
			ShouldRetry:     func(p middleware.RetryParams) bool { return !pipeline.IsPermanent(p.Err) },
			// Each attempt gets a fresh context: the timeout middleware
			// cancels the previous attempt's when it returns.
			ResetContextOnRetry: true,
			Logger:              wlog,
		}.Middleware,
		middleware.Timeout(cfg.Timeout),
		middleware.Recoverer,
	)
	var subs []message.Subscriber
	for _, h := range handlers {
		sub, err := subscribe(pipeline.ConsumerGroup(h.Name))
		if err != nil {
			for _, s := range subs {
				_ = s.Close()
			}
			return nil, fmt.Errorf("router: subscriber for %s: %w", h.Name, err)
		}
		subs = append(subs, sub)
		r.AddConsumerHandler(h.Name, h.Topic, sub, h.Handle)
	}
	return r, nil
}

// deadLettered reports whether a handler's failure sends its message to
// dead letters: every failure but the end of the router's context (a
// worker stopping), whose message is left unacknowledged instead, to be
// handled again by the next consumer of its partition.
func deadLettered(err error) bool { return !errors.Is(err, context.Canceled) }

// logDeadLetters logs, at warning level, each message whose handler failed
// for good: the poison queue around it sends it to dead letters.
func logDeadLetters(logger *slog.Logger) message.HandlerMiddleware {
	return func(h message.HandlerFunc) message.HandlerFunc {
		return func(msg *message.Message) ([]*message.Message, error) {
			out, err := h(msg)
			if err != nil && deadLettered(err) {
				ctx := msg.Context()
				logger.Warn("message dead-lettered",
					"handler", message.HandlerNameFromCtx(ctx),
					"topic", message.SubscribeTopicFromCtx(ctx),
					"uuid", msg.UUID,
					"key", msg.Metadata.Get(topics.KeyMetadata),
					"reason", err.Error(),
					"dead_letters", topics.DeadLetters)
			}
			return out, err
		}
	}
}

// RunRouter starts r in a goroutine owned by the fx lifecycle: OnStart
// returns once the router runs, OnStop closes it and waits.
func RunRouter(lc fx.Lifecycle, r *message.Router) {
	done := make(chan error, 1)
	lc.Append(fx.Hook{
		OnStart: func(ctx context.Context) error {
			go func() { done <- r.Run(context.Background()) }()
			select {
			case <-r.Running():
				return nil
			case err := <-done:
				return fmt.Errorf("router: %w", err)
			case <-ctx.Done():
				return ctx.Err()
			}
		},
		OnStop: func(ctx context.Context) error {
			if err := r.Close(); err != nil {
				return fmt.Errorf("router: close: %w", err)
			}
			select {
			case <-done:
				return nil
			case <-ctx.Done():
				return ctx.Err()
			}
		},
	})
}

// watermillLogger adapts logger for Watermill, one level down: Watermill
// logs every subscription and handler start at Info, which is Debug for
// an operator of laneIM.
func watermillLogger(logger *slog.Logger) watermill.LoggerAdapter {
	return watermill.NewSlogLoggerWithLevelMapping(logger, map[slog.Level]slog.Level{
		slog.LevelInfo: slog.LevelDebug,
	})
}
