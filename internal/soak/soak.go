// Package soak is laneIM's soak test: N clients log in to the comets of a
// running cluster (deploy/local/cluster.sh), join rooms or talk 1:1 and send
// at a modest rate for a long while, as docs/protocol.md asks of a client
// (retry a Send on UNAVAILABLE or after its own timeout with the same
// client_msg_id; reconnect, log in and join again when the connection
// ends), while faults are injected: a worker, a comet, the api or the
// broker is SIGKILLed and restarted, or a Redis master is frozen with
// SIGSTOP for a few seconds.
//
// It reports two numbers that must be 0:
//
//   - lost: messages answered with a SendResult that Sync does not find in
//     history at the end, with that seq and message id (see Ledger);
//   - unanswered: requests (Login, JoinRoom, Send, Sync) that got neither
//     an answer nor an Error within a bound while their connection stayed
//     open (see Classify).
//
// Everything it sends goes to loopback; every loop is bounded in count and
// time, and Run returns only once its goroutines have stopped.
package soak

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Config is one soak run.
type Config struct {
	// Targets are the comets' WebSocket URLs; clients are spread over them.
	Targets []string
	// Redis is the directory's address(es), comma-separated, where the
	// soak's users and rooms are created.
	Redis string
	// Secret signs the clients' login tokens.
	Secret string
	// Clients is how many clients run (1,000).
	Clients int
	// Rooms is how many rooms the room members are spread over (4).
	Rooms int
	// Rate is the messages sent per second by all clients together (200).
	Rate float64
	// Duration is how long clients send (10m).
	Duration time.Duration
	// RequestTimeout bounds the wait for any answer: a request not
	// answered within it while its connection stays open is unanswered
	// (10s).
	RequestTimeout time.Duration
	// SendAttempts bounds the attempts at one message (10).
	SendAttempts int
	// Drain bounds how long in-flight messages may still be retried after
	// Duration (60s).
	Drain time.Duration
	// VerifyTimeout bounds the final check of history (2m).
	VerifyTimeout time.Duration
	// Chaos injects faults every ChaosMin..ChaosMax (20s..40s) at random.
	Chaos              bool
	ChaosMin, ChaosMax time.Duration
	// Seed seeds every random choice (faults, timings).
	Seed uint64
	// ClusterScript is deploy/local/cluster.sh, run with kill and restart;
	// RunDir is its state folder (.run/cluster), read for pid files.
	ClusterScript, RunDir string
	// DialConcurrency bounds simultaneous connection set-ups at the start (32).
	DialConcurrency int
}

func (c *Config) setDefaults() {
	if len(c.Targets) == 0 {
		c.Targets = []string{"ws://127.0.0.1:18081/ws", "ws://127.0.0.1:18082/ws"}
	}
	def := func(d *time.Duration, v time.Duration) {
		if *d == 0 {
			*d = v
		}
	}
	def(&c.Duration, 10*time.Minute)
	def(&c.RequestTimeout, 10*time.Second)
	def(&c.Drain, 60*time.Second)
	def(&c.VerifyTimeout, 2*time.Minute)
	def(&c.ChaosMin, 20*time.Second)
	def(&c.ChaosMax, 40*time.Second)
	if c.Clients == 0 {
		c.Clients = 1000
	}
	if c.Rooms == 0 {
		c.Rooms = 4
	}
	if c.Rate == 0 {
		c.Rate = 200
	}
	if c.SendAttempts == 0 {
		c.SendAttempts = 10
	}
	if c.DialConcurrency == 0 {
		c.DialConcurrency = 32
	}
	if c.ClusterScript == "" {
		c.ClusterScript = "deploy/local/cluster.sh"
	}
	if c.RunDir == "" {
		c.RunDir = ".run/cluster"
	}
}

// Validate reports a run that cannot work, or one that would leave
// loopback.
func (c *Config) Validate() error {
	if c.Clients < 2 || c.Rooms < 1 || c.Rate <= 0 || c.Duration <= 0 || c.SendAttempts < 1 {
		return errors.New("soak: --clients (at least 2), --rooms, --rate, --duration and --send-attempts must be positive")
	}
	if c.ChaosMin <= 0 || c.ChaosMax < c.ChaosMin {
		return errors.New("soak: need 0 < --chaos-min <= --chaos-max")
	}
	if c.Secret == "" || c.Redis == "" {
		return errors.New("soak: give --secret and --redis")
	}
	for _, t := range c.Targets {
		u, err := url.Parse(t)
		if err != nil {
			return fmt.Errorf("soak: target %q: %w", t, err)
		}
		if err := loopback(u.Host); err != nil {
			return fmt.Errorf("soak: target %q: %w", t, err)
		}
	}
	for _, a := range strings.Split(c.Redis, ",") {
		if err := loopback(a); err != nil {
			return fmt.Errorf("soak: redis %q: %w", a, err)
		}
	}
	return nil
}

// loopback accepts host:port addresses on loopback only: the soak kills
// and freezes local processes and must not load anything else.
func loopback(hostport string) error {
	host, _, err := net.SplitHostPort(hostport)
	if err != nil {
		return err
	}
	if host == "localhost" {
		return nil
	}
	if ip := net.ParseIP(host); ip != nil && ip.IsLoopback() {
		return nil
	}
	return errors.New("not a loopback address")
}

// run is the state shared by a run's clients.
type run struct {
	cfg      *Config
	tally    Tally
	ledger   Ledger
	lat      latencies
	progress *logger

	reconnects, disconnects, abandoned, sent, gaveUp atomic.Int64
	conns                                            sync.WaitGroup // frame drainers, one per connection
}

// Run performs one soak run and returns its summary. progress receives
// what happens (faults, unanswered requests, reconnect failures) as it
// happens.
func Run(ctx context.Context, cfg Config, progress io.Writer) (*Summary, error) {
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.Chaos {
		if err := checkChaos(&cfg); err != nil {
			return nil, err
		}
	}
	r := &run{cfg: &cfg, progress: newLogger(progress)}
	runID := strconv.FormatInt(time.Now().Unix(), 36)
	members := plan(&cfg, runID)
	r.progress.printf("soak: run %s: creating %d users in %d rooms", runID, len(members), cfg.Rooms)
	if err := createDirectory(ctx, &cfg, runID, members); err != nil {
		return nil, err
	}
	for _, m := range members {
		m.r = r
	}
	defer func() {
		for _, m := range members {
			m.close()
		}
		r.conns.Wait()
	}()

	r.progress.printf("soak: connecting %d clients to %s", len(members), strings.Join(cfg.Targets, " "))
	setup := time.Now()
	connectAll(ctx, &cfg, members)
	if ctx.Err() != nil {
		return nil, ctx.Err()
	}
	connected := 0
	for _, m := range members {
		if m.conn != nil {
			connected++
		}
	}
	r.progress.printf("soak: %d of %d clients connected in %.1fs; sending %.0f msg/s for %v (chaos %v)",
		connected, len(members), time.Since(setup).Seconds(), cfg.Rate, cfg.Duration, cfg.Chaos)

	// soft ends the sending and the faults; hard bounds the retries of
	// messages still in flight then.
	start := time.Now()
	soft, stopSoft := context.WithTimeout(ctx, cfg.Duration)
	defer stopSoft()
	hard, stopHard := context.WithTimeout(ctx, cfg.Duration+cfg.Drain)
	defer stopHard()
	var wg sync.WaitGroup
	var ch *chaos
	if cfg.Chaos {
		ch = newChaos(&cfg, r.progress, start)
		wg.Add(1)
		go func() {
			defer wg.Done()
			ch.run(soft)
		}()
	}
	interval := time.Duration(float64(time.Second) * float64(len(members)) / cfg.Rate)
	for i, m := range members {
		wg.Add(1)
		go func() {
			defer wg.Done()
			m.loop(soft, hard, interval, rand.New(rand.NewPCG(cfg.Seed, uint64(i)+1)))
		}()
	}
	wg.Wait()
	sendTime := time.Since(start)
	stopHard()

	r.progress.printf("soak: sending done after %.0fs; checking history of %d conversations", sendTime.Seconds(), len(r.ledger.Conversations()))
	vctx, stopVerify := context.WithTimeout(ctx, cfg.VerifyTimeout)
	defer stopVerify()
	vstart := time.Now()
	lost, unverified, verifyErrs := verify(vctx, r, members)
	s := r.summary(sendTime, len(members), lost, unverified, verifyErrs)
	s.VerifySeconds = time.Since(vstart).Seconds()
	s.Connected = connected
	if ch != nil {
		s.Faults, s.FaultsTotal = ch.counts()
	}
	return s, ctx.Err()
}
