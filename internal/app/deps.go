package app

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/IBM/sarama"
	"github.com/go-mysql-org/go-mysql/client"
	"github.com/redis/go-redis/v9"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/dig"
	"go.uber.org/zap"

	"github.com/laneim/laneim/wiring"
	"github.com/laneim/laneim/workers/binlogsync"
)

// Dependency is a service a process cannot work without, and how to tell
// that it answers.
type Dependency struct {
	// Name is what it is: kafka, redis, etcd, mysql, scylla.
	Name string
	// Addr is where it was looked for, as configured (never credentials).
	Addr string
	// Flag is the flag that sets Addr, e.g. --redis.
	Flag string
	// Check connects afresh and asks it something cheap, within ctx.
	Check func(ctx context.Context) error
	// Degrades says that the process keeps working while the dependency
	// is away: /readyz reports it as degraded and stays ready. Starting
	// still needs it.
	Degrades bool
}

// UnreachableError is a dependency that did not answer: its message is one
// line naming it, its address and the flag to change.
type UnreachableError struct {
	Dependency Dependency
	Err        error
}

func (e *UnreachableError) Error() string {
	d := e.Dependency
	return fmt.Sprintf("%s at %s does not answer (flag %s or %s): %s",
		d.Name, d.Addr, d.Flag, EnvName(strings.TrimPrefix(d.Flag, "--")), oneLine(e.Err))
}

func (e *UnreachableError) Unwrap() error { return e.Err }

// oneLine flattens an error's message (joined errors, gRPC details) onto
// one line.
func oneLine(err error) string {
	return strings.Join(strings.Fields(err.Error()), " ")
}

// Dependencies lists the services a process running roles needs: Kafka
// always, Redis, etcd, MySQL and Scylla when its roles and settings use them.
func (s *Settings) Dependencies(roles ...Role) []Dependency {
	infra := s.Infra()
	deps := []Dependency{{
		Name: "kafka", Addr: s.Kafka, Flag: "--kafka",
		Check: func(ctx context.Context) error { return checkKafka(ctx, infra.Kafka) },
	}}
	parts := PartsOfRoles(roles...)
	if slices.Contains(parts, PartRedis) {
		deps = append(deps, Dependency{
			Name: "redis", Addr: s.Redis, Flag: "--redis",
			Check: func(ctx context.Context) error { return wiring.CheckRedis(ctx, infra.Redis) },
		})
	}
	if s.Etcd != "" {
		// Registrations outlive an etcd outage (they are put again when
		// it ends) and only pick_comet needs an answer from it: an etcd
		// outage must not take every comet out of its load balancer.
		deps = append(deps, Dependency{Name: "etcd", Addr: s.Etcd, Flag: "--etcd", Check: s.checkEtcd, Degrades: true})
	}
	if slices.Contains(parts, PartMySQL) && s.MySQL != "" {
		cfg, _ := binlogsync.ParseDSN(s.MySQL) // checked by Validate
		deps = append(deps, Dependency{
			Name: "mysql", Addr: cfg.Addr, Flag: "--mysql",
			Check: func(ctx context.Context) error {
				d, ok := ctx.Deadline()
				if !ok {
					d = time.Now().Add(10 * time.Second)
				}
				c, err := client.ConnectWithContext(ctx, cfg.Addr, cfg.User, cfg.Password, cfg.Database, time.Until(d))
				if err != nil {
					return err
				}
				return c.Close()
			},
		})
	}
	if slices.Contains(parts, PartStore) && s.Scylla != "" {
		hosts := splitList(s.Scylla)
		deps = append(deps, Dependency{
			Name: "scylla", Addr: s.Scylla, Flag: "--scylla",
			Check: func(ctx context.Context) error { return dialAny(ctx, hosts) },
		})
	}
	return deps
}

// CheckDependencies checks deps at once, each within timeout, and returns
// the first that does not answer as an *UnreachableError (the one listed
// first when several fail). A dependency that answers degraded (some
// Redis Cluster masters away, see wiring.CheckRedis) passes: the process
// can do part of its work. It returns as soon as ctx ends.
func CheckDependencies(ctx context.Context, timeout time.Duration, deps []Dependency) error {
	errs := make([]error, len(deps))
	var wg sync.WaitGroup
	for i, d := range deps {
		wg.Go(func() {
			cctx, cancel := context.WithTimeout(ctx, timeout)
			defer cancel()
			done := make(chan error, 1)
			// The check is bounded by its own timeouts too; waiting on
			// cctx as well keeps a client that ignores them from holding
			// the process past the timeout or a signal.
			go func() { done <- d.Check(cctx) }()
			select {
			case err := <-done:
				if err != nil && !wiring.IsDegraded(err) {
					errs[i] = &UnreachableError{d, err}
				}
			case <-cctx.Done():
				if ctx.Err() != nil {
					errs[i] = ctx.Err()
				} else {
					errs[i] = &UnreachableError{d, fmt.Errorf("no answer within %s (flag --connect-timeout)", timeout)}
				}
			}
		})
	}
	wg.Wait()
	if err := ctx.Err(); err != nil {
		return err
	}
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}

// checkKafka fetches the cluster's metadata over a new client whose every
// network wait is bounded by ctx's deadline.
func checkKafka(ctx context.Context, cfg wiring.KafkaConfig) error {
	sc, err := cfg.Sarama()
	if err != nil {
		return err
	}
	if d, ok := ctx.Deadline(); ok {
		t := max(time.Until(d), 10*time.Millisecond)
		sc.Net.DialTimeout, sc.Net.ReadTimeout, sc.Net.WriteTimeout = t, t, t
	}
	sc.Metadata.Retry.Max = 0
	c, err := sarama.NewClient(cfg.Brokers, sc)
	if err != nil {
		return err
	}
	defer c.Close()
	if len(c.Brokers()) == 0 {
		return errors.New("no brokers in the metadata")
	}
	return nil
}

// checkEtcd reads a key over a new client.
func (s *Settings) checkEtcd(ctx context.Context) error {
	cfg := s.Discovery()
	tc, err := cfg.TLS.Client()
	if err != nil {
		return err
	}
	dial := 5 * time.Second
	if d, ok := ctx.Deadline(); ok {
		dial = max(time.Until(d), 10*time.Millisecond)
	}
	c, err := clientv3.New(clientv3.Config{Endpoints: cfg.Endpoints, DialTimeout: dial, TLS: tc, Username: cfg.Username, Password: cfg.Password, Context: ctx, Logger: zap.NewNop()})
	if err != nil {
		return err
	}
	defer c.Close()
	_, err = c.Get(ctx, "/laneim/ping")
	return err
}

// dialAny opens (and closes) a TCP connection to one of hosts.
func dialAny(ctx context.Context, hosts []string) error {
	var errs []error
	var d net.Dialer
	for _, h := range hosts {
		c, err := d.DialContext(ctx, "tcp", h)
		if err == nil {
			return c.Close()
		}
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// checkPaths refuses a --history database whose folder does not exist
// and TLS material that does not exist. A typo then fails at start instead
// of creating a folder or failing at the first connection.
func (s *Settings) checkPaths() error {
	for _, f := range []struct{ flag, path string }{
		{"kafka-ca", s.KafkaCA}, {"kafka-cert", s.KafkaCert}, {"kafka-key", s.KafkaKey},
		{"redis-ca", s.RedisCA}, {"redis-cert", s.RedisCert}, {"redis-key", s.RedisKey},
		{"etcd-ca", s.EtcdCA}, {"etcd-cert", s.EtcdCert}, {"etcd-key", s.EtcdKey},
		{"api-tls-cert", s.APITLSCert}, {"api-tls-key", s.APITLSKey}, {"api-client-ca", s.APIClientCA},
		{"comet-tls-cert", s.CometTLSCert}, {"comet-tls-key", s.CometTLSKey},
	} {
		if f.path == "" {
			continue
		}
		if _, err := os.Stat(f.path); err != nil {
			return fmt.Errorf("--%s %s: no such file (flag --%s or %s)", f.flag, f.path, f.flag, EnvName(f.flag))
		}
	}
	if s.History != "" {
		dir := filepath.Dir(s.History)
		if fi, err := os.Stat(dir); err != nil || !fi.IsDir() {
			return fmt.Errorf("--history %s: folder %s does not exist (create it, or change --history or %s)", s.History, dir, EnvName("history"))
		}
	}
	return nil
}

// Brief turns an error of fx (a component that failed to build or start,
// wrapped in the chain of what needed it, with Go source paths) into its
// cause on one line.
func Brief(err error) error {
	if err == nil {
		return nil
	}
	return errors.New(oneLine(dig.RootCause(err)))
}

// redisLog sends go-redis's own log lines (a pool that failed to dial,
// printed beside the error it returns anyway) to the process's logger at
// debug level, instead of stderr.
type redisLog struct{ logger *slog.Logger }

func (l redisLog) Printf(ctx context.Context, format string, v ...any) {
	l.logger.DebugContext(ctx, fmt.Sprintf(format, v...), "component", "go-redis")
}

// QuietRedis routes go-redis's log lines to logger at debug level. It sets
// a global of go-redis: call it once, at the start of a process.
func QuietRedis(logger *slog.Logger) { redis.SetLogger(redisLog{logger}) }
