// Package bench is laneIM's load tool: it opens N WebSocket clients in one
// room, pushes R messages a second into the room through the api gateway
// for a duration D, and reports deliveries per second, lost and duplicated
// deliveries, end-to-end latency (push to client receipt) and the CPU the
// cluster and the tool used.
//
// By default it starts a dev cluster (`laneim dev`) as a child process on
// free loopback ports, so the tool's clients and the cluster do not share a
// file-descriptor limit or a CPU account; --target points it at a running
// cluster instead. All traffic stays on loopback.
package bench

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/laneim/laneim/gateways/api"
	"github.com/laneim/laneim/gateways/comet/client"
	"github.com/laneim/laneim/proto/apipb"
	"github.com/laneim/laneim/proto/clientpb"
	"github.com/laneim/laneim/topics"
	"github.com/laneim/laneim/wiring"
	"github.com/laneim/laneim/wiring/directory"
	"github.com/laneim/laneim/wiring/secure"
	"github.com/laneim/laneim/workers/login"
)

// Config is one load run.
type Config struct {
	// Target is the comet's WebSocket URL; empty starts a dev cluster.
	Target string
	// API is the api gateway's address, APIToken its bearer token.
	API, APIToken string
	// APITLS is how to reach the api gateway over TLS (zero: plain gRPC).
	APITLS secure.TLS
	// Redis is the directory's address, to create the room and its members.
	Redis string
	// Secret signs the clients' login tokens.
	Secret string
	// Members is the number of clients in the room.
	Members int
	// Online is the number of clients logged in: Members of them in the
	// room, the others in no room, online all the same (their sessions'
	// heartbeats, their share of the comet). 0 means Members.
	Online int
	// Rate is messages pushed per second; Duration how long.
	Rate     int
	Duration time.Duration
	// Drain is how long to wait after the last push for deliveries.
	Drain time.Duration
	// DialConcurrency bounds simultaneous connection set-ups.
	DialConcurrency int
	// JSON makes clients use the JSON subprotocol.
	JSON bool
	// JoinSeparately makes members join the room with a JoinRoom after
	// the LoginResult, instead of in the Login (Login.join) as the
	// documented client does when it reconnects.
	JoinSeparately bool
	// Executable is the laneim binary that runs the dev cluster.
	Executable string
	// BatchWindow is passed to the dev cluster's comet (0: its default).
	BatchWindow time.Duration
	// Admin lists the cluster processes' admin addresses (/metrics), read
	// for their CPU and memory; the dev cluster's is filled in.
	Admin []string
	// FrameBudget is passed to the dev cluster's comet (0: its default).
	FrameBudget int
	// P99Bound is the p99 latency a rate must stay within to count as
	// sustained (200ms).
	P99Bound time.Duration
	// Pprof serves /debug/pprof/ on the dev cluster's admin address.
	Pprof bool
}

func (c *Config) setDefaults() {
	if c.Members == 0 {
		c.Members = 10000
	}
	if c.Online == 0 {
		c.Online = c.Members
	}
	if c.Rate == 0 {
		c.Rate = 200
	}
	if c.Duration == 0 {
		c.Duration = 10 * time.Second
	}
	if c.Drain == 0 {
		c.Drain = 10 * time.Second
	}
	if c.DialConcurrency == 0 {
		c.DialConcurrency = 64
	}
	if c.P99Bound == 0 {
		c.P99Bound = 200 * time.Millisecond
	}
}

// Validate reports a run that cannot work.
func (c *Config) Validate() error {
	if c.Target != "" && (c.API == "" || c.Redis == "" || c.Secret == "" || c.APIToken == "") {
		return errors.New("bench: with --target, also give --api, --api-token, --redis and --secret")
	}
	if c.Members < 1 || c.Rate < 1 || c.Duration <= 0 {
		return errors.New("bench: --members, --rate and --duration must be positive")
	}
	if c.Online != 0 && c.Online < c.Members {
		return errors.New("bench: --online counts the members: it cannot be less than --members")
	}
	return nil
}

// Result is what a run measured.
type Result struct {
	Members         int     `json:"members"`
	Online          int     `json:"online"` // clients logged in, members included
	Rate            int     `json:"rate"`
	DurationSeconds float64 `json:"duration_seconds"`
	Pushed          int64   `json:"pushed"`
	PushErrors      int64   `json:"push_errors"`
	Expected        int64   `json:"expected_deliveries"`
	Delivered       int64   `json:"delivered"`
	Duplicates      int64   `json:"duplicates"`
	Lost            int64   `json:"lost"`
	// Disconnected counts connections that ended during the run (slow
	// consumers closed by the comet, say); Reconnects how many of them
	// connected again, and Synced the messages they caught up with Sync.
	// Lost counts only what never arrived, live or synced.
	Disconnected   int64   `json:"disconnected_clients"`
	Reconnects     int64   `json:"reconnects"`
	Synced         int64   `json:"synced_messages"`
	DeliveriesPerS float64 `json:"deliveries_per_second"`
	LatencyP50Ms   float64 `json:"latency_p50_ms"`
	LatencyP99Ms   float64 `json:"latency_p99_ms"`
	LatencyMaxMs   float64 `json:"latency_max_ms"`
	// The cluster's own histograms of where that latency went (its admin
	// endpoints' /metrics, 0 without them): a message's age when routing
	// took it (from its submission) and when its Delivery reached the
	// comet (from routing), its wait in the room for its flush (up to one
	// window), and a room frame's lag from its flush to its write to a
	// member. The rest is the members' reads.
	RoutingAgeP50Ms float64 `json:"routing_age_p50_ms"`
	RoutingAgeP99Ms float64 `json:"routing_age_p99_ms"`
	CometAgeP50Ms   float64 `json:"comet_age_p50_ms"`
	CometAgeP99Ms   float64 `json:"comet_age_p99_ms"`
	RoomWaitP50Ms   float64 `json:"room_wait_p50_ms"`
	RoomWaitP99Ms   float64 `json:"room_wait_p99_ms"`
	WriteLagP50Ms   float64 `json:"write_lag_p50_ms"`
	WriteLagP99Ms   float64 `json:"write_lag_p99_ms"`
	FramesReceived  int64   `json:"frames_received"`
	// BytesReceived counts the WebSocket payload bytes of the message
	// frames the members received (protobuf subprotocol only: the JSON
	// subprotocol's frames are decoded by the client and not counted).
	BytesReceived int64   `json:"bytes_received"`
	BytesPerS     float64 `json:"bytes_per_second"`
	// AchievedRate is the push rate reached (messages/s).
	AchievedRate float64 `json:"achieved_rate"`
	// Sustained: nothing lost, p99 within the bound, and at least 97% of
	// the rate achieved.
	Sustained       bool    `json:"sustained"`
	FramesPerS      float64 `json:"frames_per_second"`
	MsgsPerFrame    float64 `json:"messages_per_frame"`
	ClusterCPUCores float64 `json:"cluster_cpu_cores"`
	// ServerMicrosPerDelivery is the cluster's CPU time per delivered
	// message: the figure that tells whether a change helped.
	ServerMicrosPerDelivery float64 `json:"server_us_per_delivery"`
	// ClusterRSS*Bytes is the cluster processes' resident memory before
	// the members connect, with them connected and idle (before pushing),
	// and at the end of the run; RSSPerMemberBytes is (idle-base)/online
	// clients (the members, unless Online says more).
	ClusterRSSBaseBytes int64 `json:"cluster_rss_base_bytes"`
	RSSPerMemberBytes   int64 `json:"rss_per_member_bytes"`
	// RSSPerMemberLoadBytes is (load-base)/online clients: the memory a
	// client costs the cluster while the room is busy.
	RSSPerMemberLoadBytes int64 `json:"rss_per_member_load_bytes"`
	ClusterRSSIdleBytes   int64 `json:"cluster_rss_idle_bytes"`
	ClusterRSSLoadBytes   int64 `json:"cluster_rss_load_bytes"`
	// CometConnections is the comets' connections with the clients idle,
	// before pushing (laneim_comet_connections of the admin addresses).
	CometConnections int64 `json:"comet_connections"`
	// LoginsPerS is how fast the clients connected, logged in and (the
	// members) joined.
	LoginsPerS float64 `json:"logins_per_second"`
	// ServerMillisPerLogin is the cluster's CPU time per client while
	// they connected, logged in and joined: the figure that tells
	// whether a change to the login path helped, on a noisy machine.
	ServerMillisPerLogin float64 `json:"server_ms_per_login"`
	// JoinedInLogin: members joined the room in their Login (Login.join),
	// not with a JoinRoom after it (--join-separately).
	JoinedInLogin bool `json:"joined_in_login"`
	// Cluster says what ran the cluster: "embedded dev (child process)" or
	// the target URL.
	Cluster      string  `json:"cluster"`
	ToolCPUCores float64 `json:"tool_cpu_cores"`
	SetupSeconds float64 `json:"setup_seconds"`
	// SetupRetries counts connection attempts made again during setup
	// after a refusal such as UNAVAILABLE or RATE_LIMITED.
	SetupRetries int64  `json:"setup_retries"`
	Machine      string `json:"machine"`
	// MachineBusy is the share of the machine's CPU time, all cores
	// together, that was busy while pushing and draining: everything on
	// it counted, the cluster, the tool and any other process.
	// MachineSteal is the share a hypervisor gave to other machines. Both
	// are 0 where not measured (no /proc/stat). From about 0.9, latency
	// may include waits for a core.
	MachineBusy  float64 `json:"machine_busy"`
	MachineSteal float64 `json:"machine_steal"`
}

// perClient renders the memory a client costs. It is not measurable when
// the cluster held more before the members came than with them (a
// running cluster that kept the memory of an earlier run, say): the
// difference is then no cost of theirs, and is not shown as one.
func perClient(bytes int64) string {
	if bytes < 0 {
		return "per client not measurable: less than before they came, an earlier run's memory"
	}
	return fmt.Sprintf("%.1f KB per client", float64(bytes)/1e3)
}

// joinHow says how the members joined the room.
func joinHow(inLogin bool) string {
	if inLogin {
		return "joined in the login"
	}
	return "joined after the login"
}

// onlineBesides says how many clients were online besides the members,
// if any.
func onlineBesides(r *Result) string {
	if r.Online <= r.Members {
		return ""
	}
	return fmt.Sprintf(", %d clients online in all", r.Online)
}

// Text renders a result for people.
func (r *Result) Text(w io.Writer) {
	fmt.Fprintf(w, `laneIM bench: %d members, %d msg/s for %.0fs%s
  pushed           %d (%d push errors)
  deliveries       %d of %d expected, %.0f/s
  lost             %d   duplicates %d   disconnects %d (reconnected %d, %d messages synced)
  frames received  %d (%.0f/s, %.1f messages per frame, %.1f MB/s)
  latency          p50 %.1f ms   p99 %.1f ms   max %.1f ms
  inside cluster   submitted→routing p50 %.1f / p99 %.1f ms, routed→comet p50 %.1f / p99 %.1f ms, room wait p50 %.1f / p99 %.1f ms, flush→write p50 %.1f / p99 %.1f ms
  cpu              cluster %.2f cores (%.2f µs per delivery)   bench tool %.2f cores
  cluster memory   %.0f MB before clients, %.0f MB with them idle (%s), %.0f MB under load (%s)
  setup            %.1fs (%.0f logins+joins/s, %.2f ms of cluster CPU each, %d attempts retried; %s; %d connections at the comets)
  cluster          %s
  machine          %s%s
%s`, r.Members, r.Rate, r.DurationSeconds, onlineBesides(r), r.Pushed, r.PushErrors,
		r.Delivered, r.Expected, r.DeliveriesPerS,
		r.Lost, r.Duplicates, r.Disconnected, r.Reconnects, r.Synced,
		r.FramesReceived, r.FramesPerS, r.MsgsPerFrame, r.BytesPerS/1e6,
		r.LatencyP50Ms, r.LatencyP99Ms, r.LatencyMaxMs,
		r.RoutingAgeP50Ms, r.RoutingAgeP99Ms, r.CometAgeP50Ms, r.CometAgeP99Ms, r.RoomWaitP50Ms, r.RoomWaitP99Ms, r.WriteLagP50Ms, r.WriteLagP99Ms,
		r.ClusterCPUCores, r.ServerMicrosPerDelivery, r.ToolCPUCores,
		float64(r.ClusterRSSBaseBytes)/1e6, float64(r.ClusterRSSIdleBytes)/1e6, perClient(r.RSSPerMemberBytes), float64(r.ClusterRSSLoadBytes)/1e6, perClient(r.RSSPerMemberLoadBytes),
		r.SetupSeconds, r.LoginsPerS, r.ServerMillisPerLogin, r.SetupRetries, joinHow(r.JoinedInLogin), r.CometConnections, r.Cluster, r.Machine, busyText(r), busyNote(r))
}

// SweepTable renders the results of a sweep as a table, and the highest
// sustained rate.
func SweepTable(w io.Writer, rs []*Result, bound time.Duration) {
	if len(rs) == 0 {
		return
	}
	fmt.Fprintf(w, "laneIM bench sweep: %d members, %s\n", rs[0].Members, rs[0].Cluster)
	fmt.Fprintf(w, "%8s %10s %8s %10s %10s %10s %9s %9s %9s %7s %8s %s\n", "rate", "achieved", "lost", "p50 ms", "p99 ms", "deliv/s", "msg/frm", "µs/deliv", "cores", "busy %", "reconn", "sustained")
	best := 0
	for _, r := range rs {
		fmt.Fprintf(w, "%8d %10.0f %8d %10.1f %10.1f %10.0f %9.1f %9.2f %9.2f %7.0f %8d %v\n",
			r.Rate, r.AchievedRate, r.Lost, r.LatencyP50Ms, r.LatencyP99Ms, r.DeliveriesPerS, r.MsgsPerFrame, r.ServerMicrosPerDelivery, r.ClusterCPUCores, 100*r.MachineBusy, r.Reconnects, r.Sustained)
		if r.Sustained {
			best = max(best, r.Rate)
		}
	}
	fmt.Fprintf(w, "highest sustained rate (0 lost, p99 <= %v, >= 97%% of the rate pushed): %d msg/s\n", bound, best)
	fmt.Fprintf(w, "logins+joins %.0f/s (%.2f ms of cluster CPU each); cluster memory %s idle; machine %s\n", rs[0].LoginsPerS, rs[0].ServerMillisPerLogin, perClient(rs[0].RSSPerMemberBytes), rs[0].Machine)
}

// JSON renders a result as one line of JSON.
func (r *Result) JSON() string {
	b, _ := json.Marshal(r)
	return string(b)
}

// member is one client. Its frames are read by a reader (reader.go) and
// scanned by peek, without decoding them: only the conversation, seq and
// send time of each message are read.
type member struct {
	conn         *wsConn
	rd           *readers
	seqs         seqSet
	conversation string
	lat          *latencies
	cfg          Config
	user, room   string
	connected    time.Time    // when conn logged in and joined
	synced       atomic.Int64 // messages got by Sync after a reconnect
	retries      atomic.Int64 // connection attempts after a first one failed
	delivered    atomic.Int64
	frames       atomic.Int64
	bytes        atomic.Int64 // payload bytes of the frames counted in frames (protobuf only)
}

// peek scans a binary frame; it consumes message batches, and the pages
// answering the member's Syncs (see peekSync), and leaves every other
// frame to the connection's replies.
func (m *member) peek(data []byte) (*clientpb.ServerFrame, bool) {
	if m.peekBatch(data) {
		return nil, true
	}
	return m.peekSync(data)
}

// peekSync counts the messages of a page answering a Sync as they
// arrive, as catchUp would, and returns what catchUp needs of it: a
// SyncResult with its has_more and, for a page not empty, one message
// standing for it, holding its largest seq.
func (m *member) peekSync(data []byte) (*clientpb.ServerFrame, bool) {
	req, _ := varintField(data, serverFrameRequestID)
	if req == 0 {
		return nil, false
	}
	now := time.Now().UnixNano()
	fresh := 0 // not got before, live or synced
	_, last, more, ok := scanSync(data, m.conversation, func(seq uint64, sent int64) {
		if m.seqs.addNew(seq) {
			m.lat.record(time.Duration(now - sent))
			fresh++
		}
	})
	if !ok {
		return nil, false
	}
	m.delivered.Add(int64(fresh))
	m.synced.Add(int64(fresh))
	res := &clientpb.SyncResult{Conversation: m.conversation, HasMore: more}
	if last > 0 {
		res.Messages = []*clientpb.Message{{Conversation: m.conversation, Seq: last}}
	}
	return &clientpb.ServerFrame{RequestId: req, Body: &clientpb.ServerFrame_SyncResult{SyncResult: res}}, true
}

// peekBatch scans a binary frame holding a message batch and reports
// whether it did.
func (m *member) peekBatch(data []byte) bool {
	now := time.Now().UnixNano()
	var buf [64]uint64 // the frame's seqs, recorded under one lock
	seqs := buf[:0]
	n, ok := scanBatch(data, m.conversation, func(seq uint64, sent int64) {
		m.lat.record(time.Duration(now - sent))
		if seqs = append(seqs, seq); len(seqs) == cap(buf) {
			m.seqs.addAll(seqs)
			seqs = seqs[:0]
		}
	})
	m.seqs.addAll(seqs)
	if !ok {
		return false
	}
	m.frames.Add(1)
	m.bytes.Add(int64(len(data)))
	m.delivered.Add(int64(n))
	return true
}

// record counts a decoded batch (the JSON subprotocol's frames).
func (m *member) record(batch *clientpb.MessageBatch) {
	now := time.Now().UnixNano()
	n := 0
	for _, msg := range batch.GetMessages() {
		if msg.GetConversation() != m.conversation || len(msg.GetBody()) < 8 {
			continue
		}
		m.got(now, msg.GetSeq(), int64(binary.BigEndian.Uint64(msg.GetBody())))
		n++
	}
	m.frames.Add(1)
	m.delivered.Add(int64(n))
}

// got records one message received live at now (Unix nanoseconds) that
// was sent at sent.
func (m *member) got(now int64, seq uint64, sent int64) {
	m.lat.record(time.Duration(now - sent))
	m.seqs.add(seq)
}

// Run performs one load run. progress receives human-readable progress lines.
func Run(ctx context.Context, cfg Config, progress io.Writer) (*Result, error) {
	rs, err := Sweep(ctx, cfg, []int{cfg.Rate}, progress)
	if len(rs) == 0 {
		return nil, err
	}
	return rs[0], err
}

// Sweep sets the members up once, then pushes at each rate in turn for
// cfg.Duration, waiting for the deliveries of one rate before the next,
// and returns one Result per rate run. It stops after the first rate
// that is not Sustained (its backlog would spoil the next).
func Sweep(ctx context.Context, cfg Config, rates []int, progress io.Writer) ([]*Result, error) {
	cfg.setDefaults()
	if len(rates) == 0 {
		return nil, errors.New("bench: no rate to run")
	}
	cfg.Rate = rates[0]
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	setupStart := time.Now()
	var cluster *devProcess
	if cfg.Target == "" {
		var err error
		fmt.Fprintln(progress, "bench: starting a dev cluster as a child process")
		if cluster, err = startDevProcess(ctx, &cfg); err != nil {
			return nil, err
		}
		defer cluster.stop()
		fmt.Fprintf(progress, "bench: dev cluster admin endpoints on http://%s/metrics\n", cfg.Admin[0])
	}

	room := fmt.Sprintf("bench-%06d", rand.IntN(1_000_000))
	fmt.Fprintf(progress, "bench: creating room %s with %d members (%d clients online)\n", room, cfg.Members, cfg.Online)
	if err := createRoom(ctx, cfg, room); err != nil {
		return nil, err
	}

	fmt.Fprintf(progress, "bench: connecting %d clients to %s\n", cfg.Online, cfg.Target)
	base := sampleCluster(ctx, cluster, cfg.Admin)
	rssBase, loginCPU0 := base.rss, base.cpu
	loginStart := time.Now()
	sink := &latencies{}
	sink.cur.Store(new(histogram))
	rd, err := newReaders()
	if err != nil {
		return nil, err
	}
	defer func() {
		rd.close()
		rd.wait()
	}()
	clients, err := connectMembers(ctx, cfg, room, sink, rd)
	defer func() {
		for _, m := range clients {
			if m != nil {
				m.conn.Close()
			}
		}
	}()
	if err != nil {
		return nil, err
	}
	members := clients[:cfg.Members] // the others are in no room

	tc, err := cfg.APITLS.Client()
	if err != nil {
		return nil, fmt.Errorf("bench: api gateway: %w", err)
	}
	pc, closer, err := api.Dial(ctx, cfg.API, cfg.APIToken, api.WithTLS(tc))
	if err != nil {
		return nil, fmt.Errorf("bench: api gateway: %w", err)
	}
	defer closer.Close()

	var (
		disconnects atomic.Int64
		reconnects  atomic.Int64
		readers     sync.WaitGroup
	)
	readCtx, stopReading := context.WithCancel(ctx)
	defer func() {
		stopReading()
		readers.Wait()
	}()
	// Message batches are consumed by each member's peek (or record); these
	// goroutines drain the other frames (pongs, answers given up on) and,
	// when a connection ends, reconnect and catch up. Each owns its
	// client's conn.
	for _, m := range clients {
		readers.Add(1)
		go func() {
			defer readers.Done()
			// Members ping as docs/protocol.md asks (a silent connection
			// is closed after the comet's idle timeout, 60s by default):
			// about 20s after they connected, which may have been long
			// before the slowest member, and every 20s after that, each
			// at a random point so that 10,000 of them do not ping at once.
			ping := time.NewTimer(pingDelay(m.connected))
			defer ping.Stop()
			for {
				select {
				case <-readCtx.Done():
					return
				case <-ping.C:
					wctx, cancel := context.WithTimeout(readCtx, 5*time.Second)
					_ = m.conn.send(wctx, &clientpb.ClientFrame{Body: &clientpb.ClientFrame_Ping{Ping: &clientpb.Ping{ClientTimeUnixMs: time.Now().UnixMilli()}}})
					cancel()
					ping.Reset(pingDelay(time.Now()))
					continue
				case <-m.conn.done:
				case <-m.conn.replies:
					continue
				}
				// The connection ended: reconnect and catch up, as a
				// client following docs/protocol.md does.
				if readCtx.Err() != nil {
					return
				}
				if disconnects.Add(1) == 1 {
					fmt.Fprintf(progress, "bench: first disconnect (%s): %v\n", m.user, m.conn.err)
				}
				if err := m.reconnect(readCtx); err != nil {
					if readCtx.Err() == nil {
						fmt.Fprintf(progress, "bench: %s gave up reconnecting: %v\n", m.user, err)
					}
					return
				}
				reconnects.Add(1)
				ping.Reset(pingDelay(m.connected))
			}
		}()
	}
	delivered := func() int64 { return sumOf(members, deliveredOf) }
	setup := time.Since(setupStart)
	loginRate := float64(cfg.Online) / time.Since(loginStart).Seconds()
	idle := sampleCluster(ctx, cluster, cfg.Admin)
	loginCPU := (idle.cpu.cluster - loginCPU0.cluster).Seconds() * 1e3 / float64(cfg.Online)
	setupRetries := sumOf(clients, retriesOf)
	rssIdle := idle.rss

	var results []*Result
	var seqBase uint64 // messages pushed by the earlier rates
	for i, rate := range rates {
		if i > 0 {
			time.Sleep(time.Second) // let the last rate's tail settle
		}
		cfg.Rate = rate
		lat := new(histogram)
		sink.cur.Store(lat)
		delivered0, frames0, bytes0, dups0, synced0 := delivered(), sumOf(members, framesOf), sumOf(members, bytesOf), sumOf(members, dupsOf), sumOf(members, syncedOf)
		fmt.Fprintf(progress, "bench: pushing %d msg/s for %v\n", cfg.Rate, cfg.Duration)
		before := sampleCluster(ctx, cluster, cfg.Admin)
		cpu0, stages0 := before.cpu, before.stages
		machine0, machineOK := readMachineCPU()
		start := time.Now()
		pushed, pushErrs := push(ctx, pc, cfg, room)
		pushTime := time.Since(start)
		expected := pushed * int64(cfg.Members)
		drainUntil := time.Now().Add(cfg.Drain)
		for delivered()-delivered0 < expected && time.Now().Before(drainUntil) && ctx.Err() == nil {
			time.Sleep(20 * time.Millisecond)
		}
		elapsed := time.Since(start)
		after := sampleCluster(ctx, cluster, cfg.Admin)
		cpu1, stages, rssLoad := after.cpu, after.stages, after.rss
		machine1, machine1OK := readMachineCPU()

		got := delivered() - delivered0
		res := &Result{
			Members:         cfg.Members,
			Online:          cfg.Online,
			Rate:            cfg.Rate,
			DurationSeconds: cfg.Duration.Seconds(),
			Pushed:          pushed,
			PushErrors:      pushErrs,
			Expected:        expected,
			Delivered:       got,
			Duplicates:      sumOf(members, dupsOf) - dups0,
			Disconnected:    disconnects.Load(),
			Reconnects:      reconnects.Load(),
			Synced:          sumOf(members, syncedOf) - synced0,
			FramesReceived:  sumOf(members, framesOf) - frames0,
			BytesReceived:   sumOf(members, bytesOf) - bytes0,
			DeliveriesPerS:  float64(got) / elapsed.Seconds(),
			LatencyP50Ms:    ms(lat.quantile(0.50)),
			LatencyP99Ms:    ms(lat.quantile(0.99)),
			LatencyMaxMs:    ms(lat.quantile(1)),
			ClusterCPUCores: (cpu1.cluster - cpu0.cluster).Seconds() / elapsed.Seconds(),
			ToolCPUCores:    (cpu1.self - cpu0.self).Seconds() / elapsed.Seconds(),
			SetupSeconds:    setup.Seconds(),
			SetupRetries:    setupRetries,
			Machine:         Machine(),
		}
		if machineOK && machine1OK {
			res.MachineBusy, res.MachineSteal = busyBetween(machine0, machine1)
		}
		res.AchievedRate = float64(pushed) / pushTime.Seconds()
		for _, st := range []struct {
			name     string
			p50, p99 *float64
		}{
			{routingAgeMetric, &res.RoutingAgeP50Ms, &res.RoutingAgeP99Ms},
			{cometAgeMetric, &res.CometAgeP50Ms, &res.CometAgeP99Ms},
			{roomWaitMetric, &res.RoomWaitP50Ms, &res.RoomWaitP99Ms},
			{writeLagMetric, &res.WriteLagP50Ms, &res.WriteLagP99Ms},
		} {
			b := stages[st.name].minus(stages0[st.name])
			*st.p50, *st.p99 = ms(b.quantile(0.50)), ms(b.quantile(0.99))
		}
		res.ServerMicrosPerDelivery = (cpu1.cluster - cpu0.cluster).Seconds() * 1e6 / float64(max(1, got))
		res.FramesPerS = float64(res.FramesReceived) / elapsed.Seconds()
		res.BytesPerS = float64(res.BytesReceived) / elapsed.Seconds()
		res.MsgsPerFrame = float64(got) / float64(max(1, res.FramesReceived))
		res.ClusterRSSBaseBytes, res.ClusterRSSIdleBytes, res.ClusterRSSLoadBytes = rssBase, rssIdle, rssLoad
		res.RSSPerMemberBytes = (rssIdle - rssBase) / int64(max(1, cfg.Online))
		res.RSSPerMemberLoadBytes = (rssLoad - rssBase) / int64(max(1, cfg.Online))
		res.CometConnections = idle.conns
		res.LoginsPerS = loginRate
		res.ServerMillisPerLogin = loginCPU
		res.JoinedInLogin = !cfg.JoinSeparately
		res.Cluster = "embedded dev cluster (laneim dev, child process)"
		if cluster == nil {
			res.Cluster = "target " + cfg.Target
		}
		for _, m := range members {
			res.Lost += m.seqs.missingIn(seqBase+1, seqBase+uint64(pushed))
		}
		seqBase += uint64(pushed)
		res.Sustained = res.Lost == 0 && res.PushErrors == 0 && res.LatencyP99Ms <= float64(cfg.P99Bound.Milliseconds()) && res.AchievedRate >= 0.97*float64(rate)
		results = append(results, res)
		if !res.Sustained || ctx.Err() != nil {
			break
		}
	}
	return results, nil
}

// latencies is where members record latencies: the histogram of the rate
// being run, swapped between rates.
type latencies struct{ cur atomic.Pointer[histogram] }

func (l *latencies) record(d time.Duration) { l.cur.Load().record(d) }

// sumOf adds up f over the members, skipping those not made yet (nil).
func sumOf(members []*member, f func(*member) int64) (n int64) {
	for _, m := range members {
		if m != nil {
			n += f(m)
		}
	}
	return n
}

// What the members count, for sumOf.
func deliveredOf(m *member) int64 { return m.delivered.Load() }
func retriesOf(m *member) int64   { return m.retries.Load() }
func syncedOf(m *member) int64    { return m.synced.Load() }
func dupsOf(m *member) int64      { return m.seqs.duplicates() }
func framesOf(m *member) int64    { return m.frames.Load() }
func bytesOf(m *member) int64     { return m.bytes.Load() }

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// createRoom writes the room, its members and the other clients' users
// into the directory.
func createRoom(ctx context.Context, cfg Config, room string) error {
	rdb, err := wiring.NewRedis(ctx, wiring.RedisConfig{Addrs: strings.Split(cfg.Redis, ",")})
	if err != nil {
		return fmt.Errorf("bench: directory: %w", err)
	}
	defer rdb.Close()
	store := directory.New(rdb)
	if err := store.PutRoom(ctx, directory.Room{ID: room, Name: "bench", Kind: "group"}); err != nil {
		return fmt.Errorf("bench: room: %w", err)
	}
	// Every member is attempted; the first error is returned.
	var g errgroup.Group
	g.SetLimit(32)
	for i := range cfg.Online {
		g.Go(func() error {
			u := memberID(i)
			err := store.PutUser(ctx, directory.User{ID: u, Name: u})
			if err == nil && i < cfg.Members {
				err = store.AddMember(ctx, room, u)
			}
			if err != nil {
				return fmt.Errorf("bench: member %s: %w", u, err)
			}
			return nil
		})
	}
	return g.Wait()
}

func memberID(i int) string { return fmt.Sprintf("bench-user-%d", i) }

// connectMembers dials and logs in every client online, DialConcurrency
// at a time, the first cfg.Members joining room: the clients, members
// first.
func connectMembers(ctx context.Context, cfg Config, room string, lat *latencies, rd *readers) ([]*member, error) {
	members := make([]*member, cfg.Online)
	// Every client is attempted (the caller closes those that connected);
	// the first error is returned.
	var g errgroup.Group
	g.SetLimit(cfg.DialConcurrency)
	for i := range cfg.Online {
		g.Go(func() error {
			in := room
			if i >= cfg.Members {
				in = ""
			}
			m, err := connectOne(ctx, cfg, memberID(i), in, lat, rd)
			members[i] = m
			return err
		})
	}
	return members, g.Wait()
}

// connectOne connects user, a member of room, or in no room if room is
// empty.
func connectOne(ctx context.Context, cfg Config, user, room string, lat *latencies, rd *readers) (*member, error) {
	m := &member{lat: lat, cfg: cfg, user: user, room: room, rd: rd}
	if room != "" {
		m.conversation = topics.RoomConversation(room)
	}
	c, err := m.dialRetry(ctx)
	if err != nil {
		return nil, err
	}
	m.conn = c
	return m, nil
}

// dialAttempts bounds the attempts at connecting one member.
const dialAttempts = 10

// dialRetry does what docs/protocol.md asks of a client that cannot
// connect or whose Login or Join is answered UNAVAILABLE or RATE_LIMITED
// (a comet busy with a storm of logins, say): try again, up to
// dialAttempts times, backing off from 100ms to 2s with jitter.
func (m *member) dialRetry(ctx context.Context) (*wsConn, error) {
	var err error
	for attempt := range dialAttempts {
		if attempt > 0 {
			m.retries.Add(1)
			select {
			case <-ctx.Done():
				return nil, ctx.Err()
			case <-time.After(client.Backoff(attempt-1, 100*time.Millisecond, 2*time.Second)):
			}
		}
		var c *wsConn
		if c, err = m.dial(ctx); err == nil {
			return c, nil
		}
		if !retryable(err) {
			return nil, err
		}
	}
	return nil, err
}

// retryable reports whether another attempt may succeed: anything but a
// refusal of the member itself (bad token, unknown user or room, not a
// member).
func retryable(err error) bool {
	var e *client.Error
	if !errors.As(err, &e) {
		return true
	}
	switch e.Code {
	case clientpb.Error_BAD_TOKEN, clientpb.Error_UNKNOWN_USER, clientpb.Error_UNKNOWN_ROOM, clientpb.Error_NOT_MEMBER:
		return false
	}
	return true
}

// dial connects, logs in and joins the room, within a minute, and hands
// the connection to a reader.
func (m *member) dial(ctx context.Context) (*wsConn, error) {
	ctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	tok, err := login.MintToken([]byte(m.cfg.Secret), m.user, time.Hour)
	if err != nil {
		return nil, err
	}
	c, err := dialWS(ctx, m.cfg.Target, m.cfg.JSON, m.peek, m.record)
	if err != nil {
		return nil, fmt.Errorf("bench: dial for %s: %w", m.user, err)
	}
	if err := c.login(ctx, tok, m.room, m.cfg.JoinSeparately); err != nil {
		c.Close()
		return nil, fmt.Errorf("bench: %s: %w", m.user, err)
	}
	m.connected = time.Now()
	m.rd.add(c)
	return c, nil
}

// pingDelay is how long a member connected or last pinged at since waits
// before its next Ping: 15 to 20 seconds after since, at once if that is
// past.
func pingDelay(since time.Time) time.Duration {
	return max(0, 15*time.Second+rand.N(5*time.Second)-time.Since(since))
}

// reconnect does what docs/protocol.md asks of a client whose connection
// ended: connect again (dialRetry), log in, join, and Sync the conversation from the last seq it holds
// without a gap, page after page; live messages flow meanwhile, and a
// message both synced and received live counts once.
// A connection that ends during the catch-up is connected again, up to
// reconnectAttempts times in all.
func (m *member) reconnect(ctx context.Context) error {
	var err error
	for range reconnectAttempts {
		m.conn.Close()
		var c *wsConn
		if c, err = m.dialRetry(ctx); err != nil {
			return err
		}
		m.conn = c
		if err = m.catchUp(ctx); err == nil {
			return nil
		}
		select {
		case <-c.done:
		default:
			return err
		}
	}
	return err
}

// reconnectAttempts bounds the connections a reconnect makes.
const reconnectAttempts = 5

// syncAttempts bounds the attempts at one page of a catch-up.
const syncAttempts = 20

// shedAttempts bounds, apart, the attempts at one page refused with a
// retry_after_ms because the comet had too many catch-up reads waiting:
// the server says when to come back, and a crowd catching up after mass
// cuts waits minutes for its turn (the run's end stops it sooner).
const shedAttempts = 600

// catchUp Syncs the conversation after the member's contiguous seqs. A
// page answered UNAVAILABLE or RATE_LIMITED (a storm of Syncs after a
// comet died, say) is asked again after a backoff, as docs/protocol.md
// asks of a client.
func (m *member) catchUp(ctx context.Context) error {
	if m.room == "" {
		return nil // in no room: nothing to catch up
	}
	after := m.seqs.contiguous()
	attempt, shed := 0, 0
	for range 10000 + shedAttempts { // pages and attempts; bounded
		pctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		r, err := m.conn.do(pctx, &clientpb.ClientFrame{Body: &clientpb.ClientFrame_Sync{Sync: &clientpb.Sync{Conversation: m.conversation, AfterSeq: after, Limit: 500}}})
		cancel()
		res := r.GetSyncResult()
		var ce *client.Error
		isShed := errors.As(err, &ce) && ce.Code == clientpb.Error_UNAVAILABLE && ce.RetryAfter > 0
		if errors.As(err, &ce) && retryable(err) && (attempt < syncAttempts || isShed && shed < shedAttempts) {
			wait := max(ce.RetryAfter, client.Backoff(attempt, 100*time.Millisecond, 2*time.Second))
			if isShed {
				shed++
				wait = ce.RetryAfter
			} else {
				attempt++
			}
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-m.conn.done:
				return fmt.Errorf("bench: %s syncs %s: connection ended: %w", m.user, m.conversation, m.conn.err)
			case <-time.After(wait):
			}
			continue
		}
		attempt, shed = 0, 0
		if err != nil {
			return fmt.Errorf("bench: %s syncs %s: %w", m.user, m.conversation, err)
		}
		now := time.Now().UnixNano()
		n := 0
		for _, msg := range res.GetMessages() {
			after = max(after, msg.GetSeq())
			if len(msg.GetBody()) < 8 || !m.seqs.addNew(msg.GetSeq()) {
				continue
			}
			m.lat.record(time.Duration(now - int64(binary.BigEndian.Uint64(msg.GetBody()))))
			n++
		}
		m.delivered.Add(int64(n))
		m.synced.Add(int64(n))
		if !res.GetHasMore() || len(res.GetMessages()) == 0 {
			return nil
		}
	}
	return nil
}

// pushers is how many api calls push keeps in flight for a rate: one per
// 10 msg/s, at least 16 and at most 256. Each call waits for the broker's
// ack, so a fixed few callers would cap the rate offered at the api's
// latency on a loaded machine, not at what the cluster can carry.
func pushers(rate int) int { return min(max(rate/10, 16), 256) }

// push sends cfg.Rate messages a second for cfg.Duration, spread evenly in
// 10ms ticks, from pushers(cfg.Rate) concurrent callers. Each body starts
// with the send time in Unix nanoseconds.
func push(ctx context.Context, pc apipb.PushClient, cfg Config, room string) (pushed, failed int64) {
	jobs := make(chan struct{}, cfg.Rate)
	var ok, bad atomic.Int64
	var wg sync.WaitGroup
	for range pushers(cfg.Rate) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range jobs {
				body := make([]byte, 8, 16)
				binary.BigEndian.PutUint64(body, uint64(time.Now().UnixNano()))
				body = append(body, "hello"...)
				cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
				_, err := pc.PushRoom(cctx, &apipb.PushRoomRequest{Room: room, From: "bench", Content: &apipb.Content{Body: body, ContentType: "application/x-laneim-bench"}})
				cancel()
				if err != nil {
					bad.Add(1)
				} else {
					ok.Add(1)
				}
			}
		}()
	}
	const tick = 10 * time.Millisecond
	total := int(float64(cfg.Rate) * cfg.Duration.Seconds())
	start := time.Now()
	t := time.NewTicker(tick)
	sent := 0
loop:
	for sent < total {
		select {
		case <-ctx.Done():
			break loop
		case now := <-t.C:
			due := min(total, int(float64(cfg.Rate)*now.Sub(start).Seconds()))
			for ; sent < due; sent++ {
				jobs <- struct{}{}
			}
		}
	}
	t.Stop()
	close(jobs)
	wg.Wait()
	return ok.Load(), bad.Load()
}
