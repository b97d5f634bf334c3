package api

import (
	"context"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/status"
)

// metrics counts the gateway's gRPC calls by method and status code, and
// times them.
type metrics struct {
	calls   *prometheus.CounterVec
	seconds *prometheus.HistogramVec
}

// newMetrics registers the gateway's metrics on reg:
// laneim_api_requests_total{method,code} and laneim_api_request_seconds{method}.
func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		calls: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "laneim_api_requests_total",
			Help: "gRPC calls the api gateway answered, by method and status code (Unauthenticated included).",
		}, []string{"method", "code"}),
		seconds: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "laneim_api_request_seconds",
			Help:    "Time the api gateway took to answer a gRPC call (a stream: its whole life).",
			Buckets: prometheus.ExponentialBuckets(0.0005, 4, 9),
		}, []string{"method"}),
	}
	for _, c := range []prometheus.Collector{m.calls, m.seconds} {
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

// observedGRPCServer is s.GRPCServer with every call measured by m (nil:
// none): those that pass the token check by interceptors, the others
// where the check refuses them, before any interceptor.
func (s *Server) observedGRPCServer(m *metrics) *grpc.Server {
	if m == nil {
		return s.GRPCServer()
	}
	s.refused = func(method string, err error) { m.observe(method, time.Now(), err) }
	return s.GRPCServer(m.serverOptions()...)
}

// serverOptions measure every call that passed the token check.
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
