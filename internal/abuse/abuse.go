// Package abuse measures what a misbehaving client costs the others: an
// honest pair of users exchanges messages in a room and measures their
// latency, first alone (the baseline), then while each attack of issue 11
// runs against the same cluster. Each attack is bounded in time and count
// and sends only to the loopback cluster under test.
package abuse

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/laneim/laneim/gateways/comet/client"
	"github.com/laneim/laneim/internal/bench"
	"github.com/laneim/laneim/proto/clientpb"
	"github.com/laneim/laneim/topics"
	"github.com/laneim/laneim/wiring"
	"github.com/laneim/laneim/wiring/directory"
	"github.com/laneim/laneim/workers/login"
)

// Config is one run.
type Config struct {
	// Cluster: Target, Redis and Secret of a running cluster, or empty to
	// start a dev cluster as a child process (see bench.StartDevCluster).
	Cluster bench.Config
	// Baseline and PerAttack are how long the honest pair is measured
	// alone and under each attack (5s and 10s).
	Baseline, PerAttack time.Duration
	// Attacks to run, in order (default: all of Attacks).
	Attacks []string
}

// An attack runs against the cluster until ctx ends and reports what the
// server refused or closed.
type attack func(ctx context.Context, e *env) (refused int64, err error)

// Attacks names the attacks, in the order they run by default.
var Attacks = []string{"junk-login", "ping-flood", "send-flood", "sync-flood", "join-flap", "catchup-flood"}

var attacks = map[string]attack{
	"junk-login":    junkLogins,
	"ping-flood":    pingFlood,
	"send-flood":    sendFlood,
	"sync-flood":    syncFlood,
	"join-flap":     joinFlap,
	"catchup-flood": catchupFlood,
}

// prepares holds what an attack needs done before it is measured.
var prepares = map[string]func(ctx context.Context, e *env) error{
	"catchup-flood": fillCatchup,
}

// Phase is the honest pair's latency during one phase.
type Phase struct {
	Attack   string        `json:"attack"` // "" for the baseline
	Samples  int           `json:"samples"`
	P50      time.Duration `json:"p50_ns"`
	P99      time.Duration `json:"p99_ns"`
	Refused  int64         `json:"attacker_refused"`           // refusals and closes the attacker got
	Served   int64         `json:"attacker_served"`            // what the attacker got served, where counted (catchup-flood: pages)
	Lost     int           `json:"honest_lost"`                // honest messages acknowledged but not received within 5s
	Failed   int           `json:"honest_failed"`              // honest Sends answered with an error (not acknowledged)
	FailedBy string        `json:"honest_failed_by,omitempty"` // the first such error
	RatioP50 float64       `json:"ratio_p50"`
	RatioP99 float64       `json:"ratio_p99"`
	// ServerCores is the cluster's CPU during the phase, in cores, and
	// ServerRSSPeak the highest resident memory of its processes
	// together, sampled twice a second, read from their admin addresses'
	// /metrics (0 when there are none).
	ServerCores   float64 `json:"server_cpu_cores"`
	ServerRSSPeak int64   `json:"server_rss_peak_bytes"`
	// CatchUpP50 and CatchUpP99 are the latency of the honest b's own
	// catch-up reads during the phase, a Sync of its 1:1 conversation
	// with a from the start every half second (answered by the history
	// worker, not from a room's memory); CatchUpRefused counts those
	// answered with an error (UNAVAILABLE: the comet's reads are full).
	CatchUpSamples int           `json:"honest_sync_samples"`
	CatchUpP50     time.Duration `json:"honest_sync_p50_ns"`
	CatchUpP99     time.Duration `json:"honest_sync_p99_ns"`
	CatchUpRefused int           `json:"honest_sync_refused"`
}

// room is where the honest pair and the attackers meet.
const room = "abuse-room"

var users = []string{"honest-a", "honest-b", "flooder", "syncer", "flapper"}

type env struct {
	cfg bench.Config
	// served counts what the running attack got served (catch-up
	// pages read), for attacks that count it.
	served atomic.Int64
}

func (e *env) dial(ctx context.Context, user string, join bool) (*client.Conn, error) {
	tok, err := login.MintToken([]byte(e.cfg.Secret), user, time.Hour)
	if err != nil {
		return nil, err
	}
	c, err := client.Dial(ctx, e.cfg.Target, client.Options{})
	if err != nil {
		return nil, err
	}
	if _, err := c.Login(ctx, tok, "abuse"); err != nil {
		c.Close()
		return nil, fmt.Errorf("abuse: login %s: %w", user, err)
	}
	if join {
		if _, err := c.Join(ctx, room); err != nil {
			c.Close()
			return nil, fmt.Errorf("abuse: %s joins: %w", user, err)
		}
	}
	return c, nil
}

// Run measures the baseline, then each attack, and returns the phases.
func Run(ctx context.Context, cfg Config, progress io.Writer) ([]Phase, error) {
	if cfg.Baseline <= 0 {
		cfg.Baseline = 5 * time.Second
	}
	if cfg.PerAttack <= 0 {
		cfg.PerAttack = 10 * time.Second
	}
	if len(cfg.Attacks) == 0 {
		cfg.Attacks = Attacks
	}
	for _, a := range cfg.Attacks {
		if attacks[a] == nil {
			return nil, fmt.Errorf("abuse: unknown attack %q (one of %s)", a, strings.Join(Attacks, ", "))
		}
	}
	cl := cfg.Cluster
	if cl.Target == "" {
		fmt.Fprintln(progress, "abuse: starting a dev cluster as a child process")
		stop, err := bench.StartDevCluster(ctx, &cl)
		if err != nil {
			return nil, err
		}
		defer stop()
	}
	if err := loopbackOnly(cl.Target); err != nil {
		return nil, err
	}
	if err := seedRoom(ctx, cl); err != nil {
		return nil, err
	}
	e := &env{cfg: cl}
	p, err := newPair(ctx, e)
	if err != nil {
		return nil, err
	}
	defer p.close()

	fmt.Fprintf(progress, "abuse: baseline for %v\n", cfg.Baseline)
	base := p.measureUsage(ctx, cl.Admin, cfg.Baseline)
	phases := []Phase{base}
	for _, name := range cfg.Attacks {
		if prepare := prepares[name]; prepare != nil {
			fmt.Fprintf(progress, "abuse: preparing %s\n", name)
			if err := prepare(ctx, e); err != nil {
				return phases, fmt.Errorf("abuse: prepare %s: %w", name, err)
			}
		}
		fmt.Fprintf(progress, "abuse: %s for %v\n", name, cfg.PerAttack)
		actx, cancel := context.WithTimeout(ctx, cfg.PerAttack)
		var refused int64
		var aerr error
		done := make(chan struct{})
		go func() {
			defer close(done)
			refused, aerr = attacks[name](actx, e)
		}()
		ph := p.measureUsage(actx, cl.Admin, cfg.PerAttack)
		cancel()
		<-done
		if aerr != nil && !errors.Is(aerr, context.DeadlineExceeded) && !errors.Is(aerr, context.Canceled) {
			return phases, fmt.Errorf("abuse: %s: %w", name, aerr)
		}
		ph.Attack, ph.Refused, ph.Served = name, refused, e.served.Swap(0)
		if base.P50 > 0 {
			ph.RatioP50 = float64(ph.P50) / float64(base.P50)
			ph.RatioP99 = float64(ph.P99) / float64(base.P99)
		}
		phases = append(phases, ph)
		// Let the cluster settle before the next attack.
		select {
		case <-ctx.Done():
			return phases, ctx.Err()
		case <-time.After(2 * time.Second):
		}
	}
	return phases, nil
}

// loopbackOnly refuses a target that is not on this machine.
func loopbackOnly(target string) error {
	u, err := url.Parse(target)
	if err != nil {
		return fmt.Errorf("abuse: target %q: %w", target, err)
	}
	switch h := u.Hostname(); h {
	case "127.0.0.1", "localhost", "::1":
		return nil
	default:
		return fmt.Errorf("abuse: target %s is not loopback; attacks are only sent to this machine", h)
	}
}

// seedRoom creates the rooms and their users in the directory: the
// honest pair's room, and the catch-up flood's.
func seedRoom(ctx context.Context, cfg bench.Config) error {
	rdb, err := wiring.NewRedis(ctx, wiring.RedisConfig{Addrs: strings.Split(cfg.Redis, ",")})
	if err != nil {
		return fmt.Errorf("abuse: directory: %w", err)
	}
	defer rdb.Close()
	d := directory.New(rdb)
	if err := d.PutRoom(ctx, directory.Room{ID: room, Name: "abuse", Kind: "group"}); err != nil {
		return fmt.Errorf("abuse: room: %w", err)
	}
	if err := d.PutRoom(ctx, directory.Room{ID: catchupRoom, Name: "abuse catch-up", Kind: "group"}); err != nil {
		return fmt.Errorf("abuse: room: %w", err)
	}
	members := map[string]string{}
	for _, u := range users {
		members[u] = room
	}
	for i := range catchupReaders {
		members[catchupReader(i)] = catchupRoom
	}
	for u, r := range members {
		if err := d.PutUser(ctx, directory.User{ID: u, Name: u}); err != nil {
			return fmt.Errorf("abuse: user %s: %w", u, err)
		}
		if err := d.AddMember(ctx, r, u); err != nil {
			return fmt.Errorf("abuse: member %s: %w", u, err)
		}
	}
	return nil
}

// pair is the honest pair: a sends, b receives. Like every client
// docs/protocol.md describes, b pings while it only listens: the comet
// closes a connection silent for a minute, and a run of all the attacks
// lasts longer than that (b's close once looked like join-flap losing
// messages).
type pair struct {
	a, b *client.Conn
	conv string
	n    atomic.Int64

	stopPing context.CancelFunc
	pinging  sync.WaitGroup
}

// pingEvery is how often b pings.
const pingEvery = 20 * time.Second

func newPair(ctx context.Context, e *env) (*pair, error) {
	a, err := e.dial(ctx, "honest-a", true)
	if err != nil {
		return nil, err
	}
	b, err := e.dial(ctx, "honest-b", true)
	if err != nil {
		a.Close()
		return nil, err
	}
	// A few 1:1 messages, for b's catch-up reads (catchUps), sent by b,
	// which sends nothing else: a's messages a second must not be spent.
	for i := range 5 {
		if _, err := b.SendUser(ctx, "honest-a", fmt.Appendf(nil, "to catch up on %d", i)); err != nil {
			a.Close()
			b.Close()
			return nil, fmt.Errorf("abuse: honest 1:1: %w", err)
		}
	}
	p := &pair{a: a, b: b, conv: topics.RoomConversation(room)}
	pctx, cancel := context.WithCancel(context.Background())
	p.stopPing = cancel
	p.pinging.Add(1)
	go func() {
		defer p.pinging.Done()
		t := time.NewTicker(pingEvery)
		defer t.Stop()
		for i := uint64(1); ; i++ {
			select {
			case <-pctx.Done():
				return
			case <-t.C:
			}
			wctx, wcancel := context.WithTimeout(pctx, 5*time.Second)
			_ = b.Write(wctx, &clientpb.ClientFrame{RequestId: 2_000_000 + i, Body: &clientpb.ClientFrame_Ping{Ping: &clientpb.Ping{ClientTimeUnixMs: time.Now().UnixMilli()}}})
			wcancel()
		}
	}()
	return p, nil
}

func (p *pair) close() {
	p.stopPing()
	p.pinging.Wait()
	p.a.Close()
	p.b.Close()
}

// measure sends a message every 100 ms for d (at most 10,000) and
// returns the latency from send to b's receipt. Messages not received
// within 5 s count as lost.
func (p *pair) measure(ctx context.Context, d time.Duration) Phase {
	var mu sync.Mutex
	sent := map[string]time.Time{}
	failed, failedBy := 0, ""
	var lat []time.Duration
	stop := time.Now().Add(d)
	recvDone := make(chan struct{})
	rctx, cancel := context.WithCancel(context.Background())
	go func() { // b reads until the phase and its grace period end
		defer close(recvDone)
		for {
			select {
			case <-rctx.Done():
				return
			case f, ok := <-p.b.Frames():
				if !ok {
					return
				}
				now := time.Now()
				for _, m := range f.GetMessages().GetMessages() {
					mu.Lock()
					if t, ok := sent[string(m.GetBody())]; ok && m.GetSender() == "honest-a" {
						lat = append(lat, now.Sub(t))
						delete(sent, string(m.GetBody()))
					}
					mu.Unlock()
				}
			}
		}
	}()
	tick := time.NewTicker(100 * time.Millisecond)
	for i := 0; i < 10_000 && time.Now().Before(stop); i++ {
		body := fmt.Sprintf("honest-%d", p.n.Add(1))
		mu.Lock()
		sent[body] = time.Now()
		mu.Unlock()
		sctx, scancel := context.WithTimeout(context.Background(), 5*time.Second)
		_, err := p.a.Send(sctx, &clientpb.Send{ClientMsgId: body, To: &clientpb.Send_Room{Room: room}, Body: []byte(body)})
		scancel()
		if err != nil {
			// Not acknowledged: a refusal the attack caused, counted
			// apart from messages acknowledged and then lost.
			mu.Lock()
			delete(sent, body)
			if failed++; failedBy == "" {
				failedBy = err.Error()
			}
			mu.Unlock()
		}
		select {
		case <-tick.C:
		case <-ctx.Done():
		}
		if ctx.Err() != nil && time.Now().Before(stop) {
			break
		}
	}
	tick.Stop()
	// Grace for the last messages.
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		mu.Lock()
		left := len(sent)
		mu.Unlock()
		if left == 0 {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	cancel()
	<-recvDone
	mu.Lock()
	defer mu.Unlock()
	return Phase{Samples: len(lat), P50: bench.Quantile(lat, 0.5), P99: bench.Quantile(lat, 0.99), Lost: len(sent), Failed: failed, FailedBy: failedBy}
}

// measureUsage is measure, with what the phase cost the cluster whose
// admin addresses are admin, and the honest b's own catch-up reads
// meanwhile (catchUps).
func (p *pair) measureUsage(ctx context.Context, admin []string, d time.Duration) Phase {
	start := time.Now()
	cpu0, rss0 := bench.Usage(ctx, admin)
	sctx, stop := context.WithCancel(ctx)
	var reads readStats
	var peak int64
	var bg sync.WaitGroup
	bg.Go(func() { reads = p.catchUps(sctx) })
	bg.Go(func() { peak = peakRSS(sctx, admin) })
	ph := p.measure(ctx, d)
	stop()
	bg.Wait()
	ph.CatchUpSamples, ph.CatchUpRefused = len(reads.lat), reads.refused
	ph.CatchUpP50, ph.CatchUpP99 = bench.Quantile(reads.lat, 0.5), bench.Quantile(reads.lat, 0.99)
	cpu1, rss1 := bench.Usage(context.WithoutCancel(ctx), admin)
	ph.ServerRSSPeak = max(rss0, peak, rss1)
	if wall := time.Since(start); cpu1 > cpu0 && wall > 0 {
		ph.ServerCores = float64(cpu1-cpu0) / float64(wall)
	}
	return ph
}

// peakRSS samples the resident memory of the cluster whose admin
// addresses are admin twice a second until ctx ends (at most maxRounds
// times), and returns the highest.
func peakRSS(ctx context.Context, admin []string) int64 {
	var top int64
	t := time.NewTicker(500 * time.Millisecond)
	defer t.Stop()
	for range maxRounds {
		select {
		case <-ctx.Done():
			return top
		case <-t.C:
			_, rss := bench.Usage(ctx, admin)
			top = max(top, rss)
		}
	}
	return top
}

// refusedNote says how many of the honest catch-up reads were refused.
func refusedNote(n int) string {
	if n == 0 {
		return ""
	}
	return fmt.Sprintf(" (%d refused)", n)
}

// readStats is what catchUps measured.
type readStats struct {
	lat     []time.Duration
	refused int
}

// catchUps has b read its 1:1 conversation with a from the start every
// half second until ctx ends (at most maxRounds times), as a client
// catching up does, and returns the latencies of the reads answered.
func (p *pair) catchUps(ctx context.Context) readStats {
	var st readStats
	conv := topics.DirectConversation("honest-a", "honest-b")
	t := time.NewTicker(500 * time.Millisecond)
	defer t.Stop()
	for range maxRounds {
		select {
		case <-ctx.Done():
			return st
		case <-t.C:
		}
		rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		start := time.Now()
		_, err := p.b.Sync(rctx, conv, 0, 50)
		cancel()
		switch {
		case err == nil:
			st.lat = append(st.lat, time.Since(start))
		case ctx.Err() == nil:
			st.refused++
		}
	}
	return st
}

// Table prints the phases: the honest pair's latency under each attack
// and its ratio to the baseline.
func Table(w io.Writer, phases []Phase) {
	fmt.Fprintf(w, "%-13s %8s %10s %10s %9s %9s %10s %8s %6s %6s %6s %8s %12s\n", "attack", "samples", "p50 ms", "p99 ms", "p50 ×", "p99 ×", "refused", "served", "lost", "failed", "cores", "peak MB", "sync p50/p99")
	for _, p := range phases {
		name := p.Attack
		if name == "" {
			name = "(baseline)"
		}
		fmt.Fprintf(w, "%-13s %8d %10.1f %10.1f %9.2f %9.2f %10d %8d %6d %6d %6.2f %8d %5.0f/%-5.0f%s\n", name, p.Samples,
			float64(p.P50.Microseconds())/1000, float64(p.P99.Microseconds())/1000, p.RatioP50, p.RatioP99, p.Refused, p.Served, p.Lost, p.Failed,
			p.ServerCores, p.ServerRSSPeak>>20, float64(p.CatchUpP50.Microseconds())/1000, float64(p.CatchUpP99.Microseconds())/1000, refusedNote(p.CatchUpRefused))
		if p.FailedBy != "" {
			fmt.Fprintf(w, "%-13s first failed send: %s\n", "", p.FailedBy)
		}
	}
}
