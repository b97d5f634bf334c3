package api

import (
	"context"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	reflectpb "google.golang.org/grpc/reflection/grpc_reflection_v1"

	"github.com/laneim/laneim/internal/testinfra"
	"github.com/laneim/laneim/proto/apipb"
)

type nobodyOnline struct{}

func (nobodyOnline) Online(_ context.Context, users ...string) (map[string]bool, error) {
	return map[string]bool{}, nil
}

func (nobodyOnline) RoomOnline(context.Context, string) (int, int, error) { return 0, 0, nil }

// TestReflectionAndMetrics: the gateway lists its services by gRPC
// reflection (to a caller with the token), and counts its calls by method
// and status code.
func TestReflectionAndMetrics(t *testing.T) {
	t.Parallel()
	s, err := New(Config{Token: "secret-token", MaxBodyBytes: 10}, &testinfra.Recorder{}, nobodyOnline{}, Optional{}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	m, err := newMetrics(reg)
	if err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s.metrics = m
	g := s.GRPCServer()
	done := make(chan error, 1)
	go func() { done <- g.Serve(l) }()
	defer func() {
		g.Stop()
		<-done
	}()
	conn, err := grpc.NewClient(l.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	authed := metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer secret-token")

	stream, err := reflectpb.NewServerReflectionClient(conn).ServerReflectionInfo(authed)
	if err != nil {
		t.Fatal(err)
	}
	if err := stream.Send(&reflectpb.ServerReflectionRequest{MessageRequest: &reflectpb.ServerReflectionRequest_ListServices{}}); err != nil {
		t.Fatal(err)
	}
	resp, err := stream.Recv()
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, svc := range resp.GetListServicesResponse().GetService() {
		names = append(names, svc.GetName())
	}
	if !strings.Contains(strings.Join(names, " "), "laneim.api.v1.Push") {
		t.Fatalf("reflection lists %v, no laneim.api.v1.Push", names)
	}
	_ = stream.CloseSend()

	pc := apipb.NewPushClient(conn)
	if _, err := pc.RoomOnline(authed, &apipb.RoomOnlineRequest{Room: "lobby"}); err != nil {
		t.Fatal(err)
	}
	if _, err := pc.RoomOnline(ctx, &apipb.RoomOnlineRequest{Room: "lobby"}); err == nil {
		t.Fatal("a call without the token was answered")
	}
	method := "/laneim.api.v1.Push/RoomOnline"
	for code, want := range map[string]float64{"OK": 1, "Unauthenticated": 1} {
		if got := testutil.ToFloat64(m.calls.WithLabelValues(method, code)); got != want {
			t.Errorf("laneim_api_requests_total{method=%q,code=%q} = %v, want %v", method, code, got, want)
		}
	}
	if n := testutil.CollectAndCount(reg, "laneim_api_request_seconds"); n == 0 {
		t.Error("no laneim_api_request_seconds")
	}
}

// TestHTTPMetrics: the HTTP/JSON calls are counted by method and status,
// and timed, refusals included.
func TestHTTPMetrics(t *testing.T) {
	t.Parallel()
	s, err := New(Config{Token: "secret-token", MaxBodyBytes: 10}, &testinfra.Recorder{}, nobodyOnline{}, Optional{}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	if s.metrics, err = newMetrics(reg); err != nil {
		t.Fatal(err)
	}
	h := s.HTTPHandler()
	call := func(method, path, token string) {
		req := httptest.NewRequest(method, path, strings.NewReader(`{"room":"lobby"}`))
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		h.ServeHTTP(httptest.NewRecorder(), req)
	}
	call(http.MethodPost, "/v1/room_online", "secret-token")
	call(http.MethodPost, "/v1/room_online", "secret-token")
	call(http.MethodPost, "/v1/room_online", "wrong")
	call(http.MethodGet, "/v1/room_online", "secret-token")
	call(http.MethodPost, "/v2/nothing", "secret-token")
	for _, c := range []struct {
		method, status string
		want           float64
	}{
		{"/v1/room_online", "200", 2},
		{"/v1/room_online", "401", 1},
		{"/v1/room_online", "405", 1},
		{"other", "404", 1},
	} {
		if got := testutil.ToFloat64(s.metrics.httpCalls.WithLabelValues(c.method, c.status)); got != c.want {
			t.Errorf("laneim_api_http_requests_total{method=%q,status=%q} = %v, want %v", c.method, c.status, got, c.want)
		}
	}
	if n := testutil.CollectAndCount(reg, "laneim_api_http_request_seconds"); n != 2 {
		t.Errorf("laneim_api_http_request_seconds has %d series, want 2 (a method and other)", n)
	}
}
