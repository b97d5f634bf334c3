package wiring

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/laneim/laneim/wiring/secure"
)

// RedisConfig says how to reach Redis, standalone or Cluster.
type RedisConfig struct {
	// Addrs are host:port addresses. One address means a standalone
	// server unless Cluster is set; several mean a Cluster.
	Addrs []string
	// Cluster forces Cluster mode with a single seed address.
	Cluster bool
	// Username and Password authenticate with AUTH; a Username selects a
	// Redis 6+ ACL user (empty: the default user).
	Username string
	Password string
	DB       int
	// TLS secures the connections (zero: plain TCP). A Cluster's nodes
	// must all present certificates the CA signs.
	TLS secure.TLS
}

// Validate reports a configuration that cannot work.
func (c RedisConfig) Validate() error {
	if len(c.Addrs) == 0 {
		return errors.New("redis: no address configured (flag --redis or LANEIM_REDIS)")
	}
	if c.DB != 0 && (c.Cluster || len(c.Addrs) > 1) {
		return errors.New("redis: a Cluster has only database 0")
	}
	return c.TLS.Validate("redis")
}

// ClusterSlotsReload is how stale a Redis Cluster client's map of slots
// to nodes may grow while it sends commands. go-redis re-reads it at once
// on a MOVED answer, but a dead master answers nothing: with the
// library's 60 s, the workers kept dialling a master for 18 s after its
// replica had been promoted (outside fault check). Reading the map costs
// one CLUSTER SLOTS.
const ClusterSlotsReload = 2 * time.Second

// NewRedis connects to Redis and checks that it answers.
func NewRedis(ctx context.Context, cfg RedisConfig) (redis.UniversalClient, error) {
	c, err := newRedisClient(cfg)
	if err != nil {
		return nil, err
	}
	pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if err := c.Ping(pctx).Err(); err != nil {
		c.Close()
		return nil, fmt.Errorf("redis: ping %v: %w", cfg.Addrs, err)
	}
	return c, nil
}

// newRedisClient returns a client for cfg without asking Redis anything.
func newRedisClient(cfg RedisConfig) (redis.UniversalClient, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	tc, err := cfg.TLS.Client()
	if err != nil {
		return nil, fmt.Errorf("redis: %w", err)
	}
	opts := &redis.UniversalOptions{
		Addrs:         cfg.Addrs,
		Username:      cfg.Username,
		Password:      cfg.Password,
		TLSConfig:     tc,
		DB:            cfg.DB,
		IsClusterMode: cfg.Cluster,
		PoolSize:      64,
		// A caller's deadline bounds its command (a worker answering a
		// client within a bound while Redis hangs), not only ReadTimeout.
		ContextTimeoutEnabled: true,
	}
	if len(opts.Addrs) > 1 || opts.IsClusterMode { // as NewUniversalClient decides
		co := opts.Cluster()
		co.ClusterStateReloadInterval = ClusterSlotsReload
		return redis.NewClusterClient(co), nil
	}
	return redis.NewUniversalClient(opts), nil
}

// CheckRedis asks Redis, over a new client, whether it answers, within
// ctx: a ping, or for a Cluster a ping of every master the cluster's map
// of slots names. Some masters not answering while others do is
// Degraded, naming them: the keys of their slots are out of reach, the
// others are served.
func CheckRedis(ctx context.Context, cfg RedisConfig) error {
	c, err := newRedisClient(cfg)
	if err != nil {
		return err
	}
	defer c.Close()
	cc, ok := c.(*redis.ClusterClient)
	if !ok {
		return c.Ping(ctx).Err()
	}
	var (
		mu       sync.Mutex
		masters  int
		down     []string
		firstErr error
	)
	err = cc.ForEachMaster(ctx, func(ctx context.Context, m *redis.Client) error {
		perr := m.Ping(ctx).Err()
		mu.Lock()
		defer mu.Unlock()
		masters++
		if perr != nil {
			down = append(down, m.Options().Addr)
			if firstErr == nil {
				firstErr = perr
			}
		}
		return nil
	})
	if err != nil { // the map of slots could not be read
		return err
	}
	if len(down) == 0 {
		return nil
	}
	slices.Sort(down)
	err = fmt.Errorf("%d of %d masters do not answer (%s): %w", len(down), masters, strings.Join(down, ", "), firstErr)
	if len(down) == masters {
		return err
	}
	return Degraded(err)
}
