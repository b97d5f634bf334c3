package app

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"go.uber.org/fx"

	"github.com/laneim/laneim/internal/embedded"
	"github.com/laneim/laneim/internal/seed"
	"github.com/laneim/laneim/wiring"
	"github.com/laneim/laneim/wiring/directory"
	"github.com/laneim/laneim/workers/binlogsync"
)

// DevConfig configures `laneim dev`.
type DevConfig struct {
	// Settings of the workers and gateways. Kafka and Redis are filled in
	// with the embedded servers' addresses.
	Settings Settings
	// KafkaAddr, RedisAddr and EtcdAddr are where the embedded servers
	// listen ("127.0.0.1:0" for any free port; etcd needs a fixed port).
	KafkaAddr, RedisAddr, EtcdAddr string
	// EtcdPeerAddr is etcd's peer listener (default: EtcdAddr's port + 1).
	EtcdPeerAddr string
	// DataDir holds etcd's data (a fresh temporary folder when empty).
	DataDir string
	// Seed is the demo directory file (empty: none).
	Seed string
	// SeedData, when set, is the seed's content, and Seed only names it.
	SeedData []byte
}

// Dev is a whole laneIM cluster in one process: an embedded Kafka-protocol
// broker, etcd and Redis-protocol server, every worker and both gateways.
type Dev struct {
	app      *fx.App
	broker   *embedded.Broker
	redis    *embedded.Redis
	etcd     *embedded.Etcd
	settings Settings
	seeded   *seed.Seed // the directory written at start (no MySQL), if any
	stopTick context.CancelFunc
	tickDone sync.WaitGroup
	tmp      string
}

// StartDev starts the embedded infrastructure, creates the topics, seeds
// the directory and starts every role. Close stops everything.
func StartDev(ctx context.Context, cfg DevConfig, logger *slog.Logger) (_ *Dev, err error) {
	d := &Dev{settings: cfg.Settings}
	defer func() {
		if err != nil {
			// Stop what did start; the start error is the one to report.
			_ = d.Close(context.Background())
		}
	}()
	if cfg.DataDir == "" {
		if d.tmp, err = os.MkdirTemp("", "laneim-dev-"); err != nil {
			return nil, fmt.Errorf("dev: %w", err)
		}
		cfg.DataDir = d.tmp
	}
	if d.settings.History == "" {
		// Dev mode's own folder: made here (a --history of the user's
		// must name an existing folder).
		if err = os.MkdirAll(cfg.DataDir, 0o755); err != nil {
			return nil, fmt.Errorf("dev: %w", err)
		}
		d.settings.History = filepath.Join(cfg.DataDir, "msgstore.db")
	}
	if d.broker, err = embedded.StartBroker(embedded.BrokerConfig{Addr: cfg.KafkaAddr}); err != nil {
		return nil, fmt.Errorf("dev: %w", err)
	}
	if d.redis, err = embedded.StartRedis(cfg.RedisAddr); err != nil {
		return nil, fmt.Errorf("dev: %w", err)
	}
	d.startTicking()
	if cfg.EtcdAddr != "" {
		peer := cfg.EtcdPeerAddr
		if peer == "" {
			var perr error
			if peer, perr = nextPort(cfg.EtcdAddr); perr != nil {
				return nil, fmt.Errorf("dev: etcd address: %w", perr)
			}
		}
		if d.etcd, err = embedded.StartEtcd(embedded.EtcdConfig{Dir: filepath.Join(cfg.DataDir, "etcd"), ClientAddr: cfg.EtcdAddr, PeerAddr: peer}); err != nil {
			return nil, fmt.Errorf("dev: %w", err)
		}
	}
	if d.etcd != nil && d.settings.Etcd == "" {
		d.settings.Etcd = strings.Join(d.etcd.Endpoints(), ",")
	}
	d.settings.Kafka = d.broker.Addrs()[0]
	d.settings.Redis = d.redis.Addr()
	if d.settings.CometID == "" {
		d.settings.CometID = "comet-1"
	}
	infra := d.settings.Infra()
	if err = wiring.EnsureTopics(ctx, infra.Kafka, wiring.PipelineTopics()...); err != nil {
		return nil, fmt.Errorf("dev: %w", err)
	}
	// Redis is new at every start; history is not: the persist worker's
	// sequence guard raises the counters to the stored seqs before routing
	// issues any (workers/persist.Guard).
	roles := append(append([]Role{}, Workers...), Comet, API)
	if d.settings.MySQL != "" {
		// Production's path: the directory follows MySQL's binlog.
		roles = append(roles, Binlog)
	} else if cfg.Seed != "" {
		// Dev only: a demo directory straight into Redis.
		if d.seeded, err = applySeed(ctx, cfg.Seed, cfg.SeedData, infra.Redis); err != nil {
			return nil, fmt.Errorf("dev: %w", err)
		}
	}
	if err = d.settings.Validate(roles...); err != nil {
		return nil, fmt.Errorf("dev: %w", err)
	}
	d.app = fx.New(d.settings.Options(logger, roles...))
	if err = d.app.Start(ctx); err != nil {
		return nil, fmt.Errorf("dev: start: %w", err)
	}
	return d, nil
}

// startTicking advances the embedded Redis's clock with the wall clock so
// that keys expire (miniredis expires keys only when told time passed).
//
// A tick costs miniredis a sort of every key under its global lock (tens
// of milliseconds with 10,000 sessions and a day of message-id keys), and
// every Redis command waits meanwhile. So ticks come once a second, or
// less often when they are slow: a tick is followed by at least 50 times
// its own duration, keeping them under 2% of the time. Keys expire that
// much later than they would in Redis, which dev mode can afford.
func (d *Dev) startTicking() {
	ctx, cancel := context.WithCancel(context.Background())
	d.stopTick = cancel
	d.tickDone.Add(1)
	go func() {
		defer d.tickDone.Done()
		t := time.NewTimer(time.Second)
		defer t.Stop()
		last := time.Now()
		for {
			select {
			case <-ctx.Done():
				return
			case now := <-t.C:
				d.redis.Tick(now.Sub(last))
				last = now
				t.Reset(max(time.Second, 50*time.Since(now)))
			}
		}
	}()
}

// applySeed writes the seed at path (or data, named path) into Redis and
// returns it.
func applySeed(ctx context.Context, path string, data []byte, cfg wiring.RedisConfig) (*seed.Seed, error) {
	var s *seed.Seed
	var err error
	if data != nil {
		s, err = seed.Parse(path, data)
	} else {
		s, err = seed.Load(path)
	}
	if err != nil {
		return nil, err
	}
	rdb, err := wiring.NewRedis(ctx, cfg)
	if err != nil {
		return nil, err
	}
	defer rdb.Close()
	return s, s.Apply(ctx, directory.New(rdb))
}

// Settings returns the settings the cluster runs with, embedded addresses included.
func (d *Dev) Settings() Settings { return d.settings }

// EtcdEndpoints returns the embedded etcd's client endpoints, if it runs.
func (d *Dev) EtcdEndpoints() []string {
	if d.etcd == nil {
		return nil
	}
	return d.etcd.Endpoints()
}

// Close stops the roles, then the infrastructure.
func (d *Dev) Close(ctx context.Context) error {
	var errs []error
	if d.app != nil {
		errs = append(errs, d.app.Stop(ctx))
	}
	if d.stopTick != nil {
		d.stopTick()
		d.tickDone.Wait()
	}
	if d.etcd != nil {
		d.etcd.Close()
	}
	if d.redis != nil {
		d.redis.Close()
	}
	if d.broker != nil {
		d.broker.Close()
	}
	if d.tmp != "" {
		errs = append(errs, os.RemoveAll(d.tmp))
	}
	return errors.Join(errs...)
}

// PrintWelcome tells a newcomer what runs and what to do next.
func (d *Dev) PrintWelcome(w io.Writer) {
	s := d.settings
	fmt.Fprintf(w, `
laneIM dev cluster is up (one process, embedded infrastructure).

  web chat                http://%s/
  WebSocket               ws://%s/ws   (comet %s)
  gRPC api gateway        %s   (authorization: Bearer %s)
  Kafka protocol (kfake)  %s
  Redis protocol          %s
`, s.CometAddr, s.CometAddr, s.CometID, s.APIAddr, s.APIToken, s.Kafka, s.Redis)
	if s.APIHTTPAddr != "" {
		fmt.Fprintf(w, "  HTTP/JSON api           http://%s/v1/   (docs/http-api.md)\n", s.APIHTTPAddr)
	}
	if s.AdminAddr != "" {
		fmt.Fprintf(w, "  metrics, health         http://%s/metrics  /healthz  /readyz\n", s.AdminAddr)
	}
	if eps := d.EtcdEndpoints(); len(eps) > 0 {
		fmt.Fprintf(w, "  etcd                    %s\n", eps[0])
	}
	switch {
	case s.MySQL != "":
		fmt.Fprintf(w, "  directory               follows MySQL's binlog (%s)\n", redactDSN(s.MySQL))
	case d.seeded != nil:
		fmt.Fprintf(w, "  directory               demo seed (dev only; --mysql follows a real MySQL)\n")
	default:
		fmt.Fprintf(w, "  directory               empty (--seed \"\"; --mysql follows a real MySQL)\n")
	}
	if d.seeded != nil {
		var users, disabled, rooms []string
		for _, u := range d.seeded.Users {
			if u.Disabled {
				disabled = append(disabled, u.ID)
			} else {
				users = append(users, u.ID)
			}
		}
		for _, r := range d.seeded.Rooms {
			rooms = append(rooms, r.ID)
		}
		fmt.Fprintf(w, "\nDemo users: %s", strings.Join(users, " "))
		if len(disabled) > 0 {
			fmt.Fprintf(w, " (disabled: %s)", strings.Join(disabled, " "))
		}
		fmt.Fprintf(w, "; rooms: %s.\n", strings.Join(rooms, ", "))
	}
	fmt.Fprintf(w, `
Chat from two terminals:
  go run . chat --user alice --room lobby
  go run . chat --user bob --room lobby        (type /msg alice hi for a 1:1 message)

Mint a token for your own client:
  go run . token --user alice

Load test against this cluster:
  go run . bench --target ws://%s/ws --api %s --api-token %s --redis %s --secret %s%s --members 1000 --rate 200 --duration 10s
(or simply: go run . bench --members 1000 --rate 200, which starts its own cluster)

Ctrl-C stops everything.
`, s.CometAddr, s.APIAddr, s.APIToken, s.Redis, s.Secret, adminFlag(s.AdminAddr))
}

// adminFlag is the bench's --admin for the dev cluster's admin address,
// from which it reads the cluster's CPU and memory; empty without one.
func adminFlag(addr string) string {
	if addr == "" {
		return ""
	}
	return " --admin " + addr
}

// nextPort returns host:(port+1) of addr, for etcd's peer listener.
func nextPort(addr string) (string, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return "", err
	}
	p, err := strconv.Atoi(port)
	if err != nil || p == 0 {
		return "", fmt.Errorf("etcd needs a fixed port, got %q", addr)
	}
	return net.JoinHostPort(host, strconv.Itoa(p+1)), nil
}

// redactDSN hides the password of a DSN.
func redactDSN(dsn string) string { return binlogsync.RedactDSN(dsn) }
