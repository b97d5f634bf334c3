package binlogsync

import (
	"context"
	"errors"
	"log/slog"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/redis/go-redis/v9"
	"go.uber.org/fx"

	"github.com/laneim/laneim/wiring/directory"
)

var _ Directory = (*directory.Store)(nil)

// Module runs the binlog sync worker for the life of the app: it needs a
// Config, a *directory.Store, a redis.UniversalClient, a
// message.Publisher and a *slog.Logger in the graph. If the saved
// position is gone, it logs how to recover and shuts the app down.
var Module = fx.Module("binlogsync",
	fx.Provide(func(cfg Config, store *directory.Store, rdb redis.UniversalClient, pub message.Publisher, logger *slog.Logger) (*Syncer, error) {
		return New(cfg, store, NewPositions(rdb, cfg.PositionKey), pub, logger.With("worker", "binlogsync"))
	}),
	fx.Invoke(run),
)

func run(lc fx.Lifecycle, s *Syncer, shutdown fx.Shutdowner, logger *slog.Logger) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	lc.Append(fx.Hook{
		OnStart: func(context.Context) error {
			go func() {
				defer close(done)
				if err := s.Run(ctx); err != nil {
					logger.Error("binlog sync stopped", "err", err)
					_ = shutdown.Shutdown(fx.ExitCode(1))
				}
			}()
			return nil
		},
		OnStop: func(stopCtx context.Context) error {
			cancel()
			select {
			case <-done:
				return nil
			case <-stopCtx.Done():
				return errors.New("binlogsync: did not stop in time")
			}
		},
	})
}
