package comet

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/prometheus/client_golang/prometheus"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/fx"

	"github.com/laneim/laneim/topics"
	"github.com/laneim/laneim/wiring"
	"github.com/laneim/laneim/wiring/discovery"
	"github.com/laneim/laneim/wiring/pipeline"
	"github.com/laneim/laneim/wiring/secure"
)

// Module runs a comet: on start it creates the comet's delivery topic
// (its two lanes; a topic of one partition is grown), listens on
// Config.Addr (a port in use fails the start), registers the comet in
// etcd when the graph has a
// *clientv3.Client, then serves WebSockets on Config.Path and "ok" on
// /healthz and starts the heartbeat loop. A start that fails undoes
// itself: the listener and the comet are closed and no goroutine is
// left. With Config.TLSCert and TLSKey it serves wss:// (HTTP/1.1 over
// TLS), otherwise plain ws://. On stop it leaves etcd, shuts the HTTP server down and closes
// the comet. It contributes the comet's Handler to the process's
// router (pipeline.Provide) and provides the *Comet. It needs a
// Config, a wiring.Config, a message.Publisher and a *slog.Logger in the
// graph.
var Module = fx.Module("comet",
	fx.Provide(newWithLifecycle),
	pipeline.Provide((*Comet).Pipeline),
)

type params struct {
	fx.In
	Lifecycle fx.Lifecycle
	Config    Config
	Infra     wiring.Config
	Publisher message.Publisher
	Metrics   *wiring.Metrics
	Logger    *slog.Logger
	// Etcd, when the process has one, is where the comet registers itself.
	Etcd *clientv3.Client `optional:"true"`
}

func newWithLifecycle(p params) (*Comet, error) {
	lc, cfg, infra, pub, metrics, logger := p.Lifecycle, p.Config, p.Infra, p.Publisher, p.Metrics, p.Logger
	c, err := New(cfg, pub, logger.With("comet", cfg.ID))
	if err != nil {
		return nil, err
	}
	if err := registerMetrics(metrics.Registry, c); err != nil {
		return nil, err
	}
	cfg = c.Config()
	mux := http.NewServeMux()
	mux.Handle(cfg.Path, c)
	mux.Handle("/", WebClient())
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, "ok") })
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second, MaxHeaderBytes: wiring.MaxHeaderBytes}
	scheme, useTLS := "ws://", cfg.TLSCert != ""
	if useTLS {
		tc, err := secure.Server(cfg.TLSCert, cfg.TLSKey, "")
		if err != nil {
			c.Close()
			return nil, fmt.Errorf("comet: %w", err)
		}
		// WebSockets upgrade HTTP/1.1 connections: offer only that.
		tc.NextProtos = []string{"http/1.1"}
		srv.TLSConfig = tc
		srv.TLSNextProto = map[string]func(*http.Server, *tls.Conn, http.Handler){}
		scheme = "wss://"
	}
	serveDone := make(chan error, 1)
	var reg *discovery.Registration
	lc.Append(fx.Hook{
		// OnStart starts serving only once nothing is left that can fail:
		// fx runs no OnStop for a hook whose OnStart failed, so a failed
		// start closes what it opened (the listener, the comet) itself.
		OnStart: func(ctx context.Context) (err error) {
			if err := wiring.EnsureTopics(ctx, infra.Kafka, wiring.DeliveryTopic(cfg.ID)); err != nil {
				return fmt.Errorf("comet: %w", err)
			}
			l, err := net.Listen("tcp", cfg.Addr)
			if err != nil {
				return fmt.Errorf("comet: listen: %w", err)
			}
			defer func() {
				if err != nil {
					l.Close()
					c.Close()
				}
			}()
			if p.Etcd != nil {
				// The listener queues connections until Serve below takes
				// them, so the comet may be announced before it serves.
				url := cfg.PublicURL
				if url == "" {
					url = scheme + l.Addr().String() + cfg.Path
				}
				load := func() int64 { return c.Stats().Connections }
				reg, err = discovery.RegisterComet(ctx, p.Etcd, discovery.Comet{ID: cfg.ID, URL: url, Topic: topics.Delivery(cfg.ID)}, 10*time.Second, load, logger)
				if err != nil {
					return fmt.Errorf("comet: %w", err)
				}
			}
			c.Start()
			go func() { // owned: OnStop waits for it
				// Serve and ServeTLS set up the server's fields (HTTP/2):
				// nothing here reads them once it runs.
				if useTLS {
					serveDone <- srv.ServeTLS(l, "", "")
					return
				}
				serveDone <- srv.Serve(l)
			}()
			logger.Info("comet listening", "id", cfg.ID, "addr", l.Addr().String(), "path", cfg.Path, "tls", useTLS)
			return nil
		},
		OnStop: func(ctx context.Context) error {
			if reg != nil {
				// Leave the directory first so no client is sent here.
				_ = reg.Close(ctx)
			}
			// Shutdown stops accepting and ends idle HTTP connections;
			// the comet closes the WebSockets (hijacked) itself.
			err := srv.Shutdown(ctx)
			err = errors.Join(err, c.Close())
			if serr := <-serveDone; serr != nil && !errors.Is(serr, http.ErrServerClosed) {
				err = errors.Join(err, serr)
			}
			return err
		},
	})
	return c, nil
}

// registerMetrics exposes the comet's counters to Prometheus.
func registerMetrics(reg *prometheus.Registry, c *Comet) error {
	labels := prometheus.Labels{"comet": c.ID()}
	stat := func(f func(Stats) int64) func() float64 { return func() float64 { return float64(f(c.Stats())) } }
	cs := []prometheus.Collector{
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "laneim_comet_connections", Help: "Open WebSocket connections.", ConstLabels: labels}, stat(func(s Stats) int64 { return s.Connections })),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "laneim_comet_parked_connections", Help: "Connections waiting for their client with no goroutine of their own (read again when the client sends).", ConstLabels: labels}, stat(func(s Stats) int64 { return s.Parked })),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "laneim_comet_rooms", Help: "Rooms with local members.", ConstLabels: labels}, stat(func(s Stats) int64 { return s.Rooms })),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "laneim_comet_slow_consumers_total", Help: "Connections closed because their send queue was full.", ConstLabels: labels}, stat(func(s Stats) int64 { return s.SlowConsumers })),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "laneim_comet_frames_sent_total", Help: "Frames written to clients.", ConstLabels: labels}, stat(func(s Stats) int64 { return s.FramesSent })),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "laneim_comet_bytes_sent_total", Help: "Bytes written to clients.", ConstLabels: labels}, stat(func(s Stats) int64 { return s.BytesSent })),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "laneim_comet_rate_limited_total", Help: "Client frames refused with RATE_LIMITED.", ConstLabels: labels}, stat(func(s Stats) int64 { return s.RateLimited })),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "laneim_comet_refused_total", Help: "Client requests refused by a limit other than the rate: a field too long, too many requests waiting, a second Login.", ConstLabels: labels}, stat(func(s Stats) int64 { return s.Refused })),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "laneim_comet_queued_bytes", Help: "Bytes queued to all connections, bounded by --max-queued-bytes (a room's frame counts once per member).", ConstLabels: labels}, stat(func(s Stats) int64 { return s.QueuedBytes })),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "laneim_comet_over_budget_total", Help: "Connections closed as slow consumers because the comet's queued bytes exceeded --max-queued-bytes (the largest queues first; also in laneim_comet_slow_consumers_total).", ConstLabels: labels}, stat(func(s Stats) int64 { return s.OverBudget })),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "laneim_comet_struck_out_total", Help: "Connections refused with HTTP 429 because their address had too many connections closed for abuse (oversized frames, rate limits ignored) just before.", ConstLabels: labels}, stat(func(s Stats) int64 { return s.StruckOut })),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "laneim_comet_address_limited_total", Help: "Connections refused with HTTP 429 because their client address (IPv6: /64) had --max-conns-per-address connections already.", ConstLabels: labels}, stat(func(s Stats) int64 { return s.AddressLimited })),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "laneim_comet_bad_tokens_total", Help: "Logins refused BAD_TOKEN by the comet: a token invalid, expired, or naming no possible user.", ConstLabels: labels}, stat(func(s Stats) int64 { return s.BadTokens })),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "laneim_comet_reads_in_flight", Help: "History reads (Sync, Conversations) waiting for their answer, bounded by --max-reads-in-flight.", ConstLabels: labels}, stat(func(s Stats) int64 { return s.Reads })),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "laneim_comet_recent_syncs_total", Help: "Syncs answered from the messages the comet's rooms keep, without the history worker (--recent-bytes).", ConstLabels: labels}, stat(func(s Stats) int64 { return s.RecentSyncs })),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "laneim_comet_recent_bytes", Help: "Bytes of the messages the comet's rooms keep to answer catch-ups, bounded (about) by --recent-bytes.", ConstLabels: labels}, stat(func(s Stats) int64 { return s.RecentBytes })),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "laneim_comet_reads_shed_total", Help: "History reads answered UNAVAILABLE (with retry_after_ms) at once because --max-reads-in-flight reads were waiting.", ConstLabels: labels}, stat(func(s Stats) int64 { return s.ReadsShed })),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "laneim_comet_requests_unanswered_total", Help: "Requests answered UNAVAILABLE by the comet because the pipeline's answer did not come within the request timeout.", ConstLabels: labels}, stat(func(s Stats) int64 { return s.Unanswered })),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "laneim_comet_repeats_dropped_total", Help: "Messages dropped because they repeated a (conversation, seq) already queued: once per room for room messages, once per connection for direct ones.", ConstLabels: labels}, stat(func(s Stats) int64 { return s.RepeatsDropped })),
	}
	cs = append(cs, c.lat.collectors()...)
	for _, col := range cs {
		if err := reg.Register(col); err != nil {
			return fmt.Errorf("comet: metrics: %w", err)
		}
	}
	return nil
}
