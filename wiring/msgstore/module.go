package msgstore

import (
	"errors"
	"time"

	"go.uber.org/fx"
)

// Config chooses and configures the store of a process.
type Config struct {
	// Scylla, when it names hosts, selects the Scylla/Cassandra store.
	Scylla ScyllaConfig
	// Path is the embedded store's file. Required unless Scylla is used.
	Path string
	// Retention per kind of conversation; zero keeps messages forever.
	Retention Retention
	// Sweep is how often expired messages are deleted (1 minute).
	Sweep time.Duration
}

// Module provides the process's Store, opened at start and closed at stop.
var Module = fx.Module("history",
	fx.Provide(func(lc fx.Lifecycle, cfg Config) (Store, error) {
		if len(cfg.Scylla.Hosts) > 0 {
			cfg.Scylla.Retention = cfg.Retention
			s, err := OpenScylla(cfg.Scylla)
			if err != nil {
				return nil, err
			}
			lc.Append(fx.StopHook(s.Close))
			return s, nil
		}
		if cfg.Path == "" {
			return nil, errors.New("history: no store configured (flag --history or --scylla)")
		}
		b, err := OpenBolt(cfg.Path, cfg.Retention, cfg.Sweep)
		if err != nil {
			return nil, err
		}
		lc.Append(fx.StopHook(b.Close))
		return b, nil
	}),
)
