package wiring

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.uber.org/fx"
	"golang.org/x/sync/singleflight"
)

// LatencyBuckets are the buckets of laneIM's latency histograms (a
// message's age at routing and at its comet, a room's wait and write
// lag): 1ms to about 5s, each 10% wider than the last, so a quantile read
// from them (interpolated within its bucket) is within 10% of the truth.
var LatencyBuckets = prometheus.ExponentialBuckets(0.001, 1.1, 90)

// ObserveAge records in o the age at nowMs of something stamped at
// thenMs, both Unix milliseconds (a clock behind nowMs's counts as 0).
func ObserveAge(o prometheus.Observer, nowMs, thenMs int64) {
	o.Observe(float64(max(nowMs-thenMs, 0)) / 1e3)
}

// Metrics are the process's Prometheus metrics. Components register their
// own collectors on Registry.
type Metrics struct {
	Registry *prometheus.Registry
	handled  *prometheus.CounterVec
	payloads *prometheus.CounterVec
	seconds  *prometheus.HistogramVec
	ready    atomic.Bool

	checksMu sync.Mutex
	checks   []readyCheck
	// CheckTimeout bounds each readiness check (2s when zero).
	CheckTimeout time.Duration

	// One round of checks at a time, its answer reused for checkReuse:
	// each round connects afresh to every dependency, and a flood of
	// /readyz must not become a flood of connections (outside abuse
	// check: 50 at a time took 1.5 cores and thousands of sockets).
	rounds   singleflight.Group
	lastMu   sync.Mutex
	last     checkRound
	lastDone time.Time
}

// checkRound is the answer of one round of readiness checks.
type checkRound struct {
	lines []string
	ok    bool
}

// checkReuse is how long a round's answer is given again.
const checkReuse = time.Second

// readyCheck is a dependency /readyz asks.
type readyCheck struct {
	name  string
	check func(context.Context) error
}

// NewMetrics returns a registry with Go and process collectors and the
// pipeline handlers' metrics.
func NewMetrics() *Metrics {
	m := &Metrics{
		Registry: prometheus.NewRegistry(),
		handled: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "laneim_handler_messages_total",
			Help: "Messages a pipeline handler finished, by result: ok, or error (after retries: sent to dead letters).",
		}, []string{"handler", "result"}),
		payloads: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "laneim_handler_payloads_total",
			Help: "Payloads a pipeline handler finished, by result: a message the subscriber merged from a run (a batch) counts each payload it carries.",
		}, []string{"handler", "result"}),
		seconds: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "laneim_handler_seconds",
			Help:    "Time a pipeline handler took for a message, retries included.",
			Buckets: prometheus.ExponentialBuckets(0.0001, 4, 10),
		}, []string{"handler"}),
	}
	m.Registry.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}), m.handled, m.payloads, m.seconds)
	return m
}

// Middleware measures every handler: messages and payloads (Merged) by
// result, and latency. The router puts it outside the retries, so it
// sees each message's outcome.
func (m *Metrics) Middleware(h message.HandlerFunc) message.HandlerFunc {
	return func(msg *message.Message) ([]*message.Message, error) {
		name := message.HandlerNameFromCtx(msg.Context())
		start := time.Now()
		out, err := h(msg)
		m.seconds.WithLabelValues(name).Observe(time.Since(start).Seconds())
		result := "ok"
		if err != nil {
			result = "error"
		}
		m.handled.WithLabelValues(name, result).Inc()
		m.payloads.WithLabelValues(name, result).Add(float64(Merged(msg)))
		return out, err
	}
}

// SetReady marks the process ready (or not) for /readyz.
func (m *Metrics) SetReady(ok bool) { m.ready.Store(ok) }

// AddCheck adds a dependency /readyz asks at each request: the process is
// ready only while check returns nil within CheckTimeout.
func (m *Metrics) AddCheck(name string, check func(context.Context) error) {
	m.checksMu.Lock()
	defer m.checksMu.Unlock()
	m.checks = append(m.checks, readyCheck{name, check})
}

// Degraded wraps err, a readiness check's answer, to say that the process
// still does its work, only less well (one Redis shard of several does not
// answer, say): /readyz reports it and stays ready. A check that fails
// outright returns its error as it is.
func Degraded(err error) error {
	if err == nil {
		return nil
	}
	return &degradedError{err}
}

// IsDegraded reports whether err, a readiness check's answer, is
// Degraded.
func IsDegraded(err error) bool {
	var d *degradedError
	return errors.As(err, &d)
}

type degradedError struct{ err error }

func (e *degradedError) Error() string { return "degraded: " + e.err.Error() }
func (e *degradedError) Unwrap() error { return e.err }

// Check runs every readiness check at once and returns one line per
// check ("redis: ok", "redis: degraded: " and why, or "redis: " and why
// not) and whether all passed, a degraded one counting as passed.
//
// Requests that come while a round runs share its answer, and one that
// comes less than a second after a round ended gets that round's answer.
func (m *Metrics) Check(ctx context.Context) (lines []string, ok bool) {
	m.lastMu.Lock()
	if !m.lastDone.IsZero() && time.Since(m.lastDone) < checkReuse {
		r := m.last
		m.lastMu.Unlock()
		return slices.Clone(r.lines), r.ok
	}
	m.lastMu.Unlock()
	v, _, _ := m.rounds.Do("", func() (any, error) {
		// The round is bounded by CheckTimeout, not by the request
		// that started it: the others share its answer.
		lines, ok := m.checkRound(context.WithoutCancel(ctx))
		r := checkRound{lines, ok}
		m.lastMu.Lock()
		m.last, m.lastDone = r, time.Now()
		m.lastMu.Unlock()
		return r, nil
	})
	r := v.(checkRound)
	return slices.Clone(r.lines), r.ok
}

// checkRound runs every readiness check at once (see Check).
func (m *Metrics) checkRound(ctx context.Context) (lines []string, ok bool) {
	m.checksMu.Lock()
	checks := slices.Clone(m.checks)
	m.checksMu.Unlock()
	timeout := cmp.Or(m.CheckTimeout, 2*time.Second)
	errs := make([]error, len(checks))
	var wg sync.WaitGroup
	for i, c := range checks {
		wg.Go(func() {
			cctx, cancel := context.WithTimeout(ctx, timeout)
			defer cancel()
			errs[i] = c.check(cctx)
		})
	}
	wg.Wait()
	ok = true
	for i, c := range checks {
		if errs[i] != nil && !IsDegraded(errs[i]) {
			ok = false
		}
		if errs[i] != nil {
			lines = append(lines, c.name+": "+strings.Join(strings.Fields(errs[i].Error()), " "))
		} else {
			lines = append(lines, c.name+": ok")
		}
	}
	return lines, ok
}

// AdminHandler serves /metrics, /healthz (the process runs: no dependency
// is asked) and /readyz (it finished starting, has not begun stopping, and
// every readiness check passes; the body has a line per check).
func (m *Metrics) AdminHandler() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(m.Registry, promhttp.HandlerOpts{}))
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, "ok") })
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, r *http.Request) {
		if !m.ready.Load() {
			http.Error(w, "not ready: starting or stopping", http.StatusServiceUnavailable)
			return
		}
		lines, ok := m.Check(r.Context())
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		if !ok {
			w.WriteHeader(http.StatusServiceUnavailable)
			fmt.Fprintln(w, "not ready")
		} else {
			fmt.Fprintln(w, "ready")
		}
		for _, l := range lines {
			fmt.Fprintln(w, l)
		}
	})
	return mux
}

// runAdmin serves the admin endpoints on cfg.AdminAddr for the life of the
// app; the process is ready once every start hook has run.
func runAdmin(lc fx.Lifecycle, cfg Config, m *Metrics, logger *slog.Logger) {
	if cfg.AdminAddr == "" {
		return
	}
	h := m.AdminHandler()
	if cfg.Pprof {
		mux := http.NewServeMux()
		mux.Handle("/", h)
		mux.HandleFunc("/debug/pprof/", pprof.Index)
		mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
		mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
		h = mux
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second, MaxHeaderBytes: MaxHeaderBytes}
	done := make(chan error, 1)
	lc.Append(fx.Hook{
		OnStart: func(context.Context) error {
			l, err := net.Listen("tcp", cfg.AdminAddr)
			if err != nil {
				return fmt.Errorf("admin: listen: %w", err)
			}
			go func() { done <- srv.Serve(l) }()
			logger.Info("admin endpoints", "addr", l.Addr().String(), "paths", "/metrics /healthz /readyz")
			return nil
		},
		OnStop: func(ctx context.Context) error {
			err := srv.Shutdown(ctx)
			if serr := <-done; serr != nil && !errors.Is(serr, http.ErrServerClosed) {
				err = errors.Join(err, serr)
			}
			return err
		},
	})
}

// markReady is invoked last: its start hook runs after every other one.
func markReady(lc fx.Lifecycle, m *Metrics) {
	lc.Append(fx.StartStopHook(func() { m.SetReady(true) }, func() { m.SetReady(false) }))
}

// MaxHeaderBytes bounds the request headers laneIM's HTTP servers read
// (the comets' upgrades, the HTTP api, the admin endpoints): 32 KiB,
// well above what a browser sends with its cookies, instead of net/http's
// 1 MiB, which let every upgrade left unfinished hold a megabyte until
// its header timeout (outside abuse check). Larger headers are answered
// 431.
const MaxHeaderBytes = 32 << 10
