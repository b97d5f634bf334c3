package api

import (
	"context"
	"net/http"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/status"
)

// metrics counts the gateway's calls by method and status code, and
// times them: gRPC calls, and HTTP/JSON calls apart.
type metrics struct {
	calls       *prometheus.CounterVec
	seconds     *prometheus.HistogramVec
	httpCalls   *prometheus.CounterVec
	httpSeconds *prometheus.HistogramVec
}

// newMetrics registers the gateway's metrics on reg:
// laneim_api_requests_total{method,code}, laneim_api_request_seconds{method},
// laneim_api_http_requests_total{method,status} and
// laneim_api_http_request_seconds{method}.
func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	buckets := prometheus.ExponentialBuckets(0.0005, 4, 9)
	m := &metrics{
		calls: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "laneim_api_requests_total",
			Help: "gRPC calls the api gateway answered, by method and status code (Unauthenticated included).",
		}, []string{"method", "code"}),
		seconds: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "laneim_api_request_seconds",
			Help:    "Time the api gateway took to answer a gRPC call (a stream: its whole life).",
			Buckets: buckets,
		}, []string{"method"}),
		httpCalls: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "laneim_api_http_requests_total",
			Help: "HTTP/JSON calls the api gateway answered, by method (/v1/<method>, or \"other\" for a path that is none) and HTTP status.",
		}, []string{"method", "status"}),
		httpSeconds: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "laneim_api_http_request_seconds",
			Help:    "Time the api gateway took to answer an HTTP/JSON call.",
			Buckets: buckets,
		}, []string{"method"}),
	}
	for _, c := range []prometheus.Collector{m.calls, m.seconds, m.httpCalls, m.httpSeconds} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}

func (m *metrics) observe(method string, start time.Time, err error) {
	m.calls.WithLabelValues(method, status.Code(err).String()).Inc()
	m.seconds.WithLabelValues(method).Observe(time.Since(start).Seconds())
}

// serverOptions measure every gRPC call that passed the token check
// (Server.GRPCServer measures the others where it refuses them).
func (m *metrics) serverOptions() []grpc.ServerOption {
	return []grpc.ServerOption{
		grpc.ChainUnaryInterceptor(func(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
			start := time.Now()
			resp, err := h(ctx, req)
			m.observe(info.FullMethod, start, err)
			return resp, err
		}),
		grpc.ChainStreamInterceptor(func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, h grpc.StreamHandler) error {
			start := time.Now()
			err := h(srv, ss)
			m.observe(info.FullMethod, start, err)
			return err
		}),
	}
}

// observeHTTP measures the HTTP/JSON calls h answers under method.
func (m *metrics) observeHTTP(method string, h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		sw := &statusWriter{ResponseWriter: w, status: http.StatusOK}
		h.ServeHTTP(sw, r)
		m.httpCalls.WithLabelValues(method, strconv.Itoa(sw.status)).Inc()
		m.httpSeconds.WithLabelValues(method).Observe(time.Since(start).Seconds())
	})
}

// statusWriter remembers the status a handler wrote.
type statusWriter struct {
	http.ResponseWriter
	status int
}

func (w *statusWriter) WriteHeader(code int) {
	w.status = code
	w.ResponseWriter.WriteHeader(code)
}
