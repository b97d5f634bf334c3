package api_test

import (
	"context"
	"log/slog"
	"net"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/laneim/laneim/gateways/api"
	"github.com/laneim/laneim/internal/testinfra"
	"github.com/laneim/laneim/proto/apipb"
	"github.com/laneim/laneim/wiring/secure"
)

// serveTLS runs the gateway over TLS with a certificate serverCA issues,
// requiring client certificates signed by clientCA when it is not nil,
// and returns its address.
func serveTLS(t *testing.T, serverCA, clientCA *testinfra.CA) string {
	t.Helper()
	cert, key := serverCA.Issue("api")
	cfg := api.Config{Token: "secret-token", TLSCert: cert, TLSKey: key}
	if clientCA != nil {
		cfg.ClientCA = clientCA.File
	}
	s, err := api.New(cfg, &testinfra.Recorder{}, fakePresence{}, api.Optional{}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	serveGRPC(t, s, l)
	return l.Addr().String()
}

// call makes one RoomOnline call through a client dialled with tc.
func call(t *testing.T, addr string, tc secure.TLS, plain bool) error {
	t.Helper()
	var opts []api.DialOption
	if !plain {
		c, err := tc.Client()
		if err != nil {
			t.Fatal(err)
		}
		opts = append(opts, api.WithTLS(c))
	}
	pc, closer, err := api.Dial(context.Background(), addr, "secret-token", opts...)
	if err != nil {
		t.Fatal(err)
	}
	defer closer.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	r, err := pc.RoomOnline(ctx, &apipb.RoomOnlineRequest{Room: "lobby"})
	if err == nil && r.GetOnlineUsers() != 5 {
		t.Fatalf("room online = %v", r)
	}
	return err
}

func TestTLS(t *testing.T) {
	t.Parallel()
	ca := testinfra.NewCA(t, "api")
	addr := serveTLS(t, ca, nil)
	if err := call(t, addr, secure.TLS{CA: ca.File}, false); err != nil {
		t.Fatalf("client trusting the CA: %v", err)
	}
	if err := call(t, addr, secure.TLS{}, true); status.Code(err) != codes.Unavailable {
		t.Errorf("plain client: %v, want Unavailable", err)
	}
	if err := call(t, addr, secure.TLS{CA: testinfra.NewCA(t, "other").File}, false); status.Code(err) != codes.Unavailable {
		t.Errorf("client trusting another CA: %v, want Unavailable", err)
	}
}

func TestMutualTLS(t *testing.T) {
	t.Parallel()
	serverCA, clientCA := testinfra.NewCA(t, "api"), testinfra.NewCA(t, "api-clients")
	addr := serveTLS(t, serverCA, clientCA)

	cert, key := clientCA.Issue("backend")
	if err := call(t, addr, secure.TLS{CA: serverCA.File, Cert: cert, Key: key}, false); err != nil {
		t.Fatalf("client with a certificate the client CA signed: %v", err)
	}
	if err := call(t, addr, secure.TLS{CA: serverCA.File}, false); status.Code(err) != codes.Unavailable {
		t.Errorf("client without a certificate: %v, want Unavailable", err)
	}
	// A certificate from the server's CA is not one of the clients'.
	otherCert, otherKey := serverCA.Issue("intruder")
	if err := call(t, addr, secure.TLS{CA: serverCA.File, Cert: otherCert, Key: otherKey}, false); status.Code(err) != codes.Unavailable {
		t.Errorf("client with a certificate of another CA: %v, want Unavailable", err)
	}
}

func TestTLSConfigRefused(t *testing.T) {
	t.Parallel()
	for name, cfg := range map[string]api.Config{
		"cert without key":   {Token: "t", TLSCert: "c.pem"},
		"client CA, no cert": {Token: "t", ClientCA: "ca.pem"},
		"missing files":      {Token: "t", TLSCert: "/nonexistent/c.pem", TLSKey: "/nonexistent/k.pem"},
	} {
		if _, err := api.New(cfg, &testinfra.Recorder{}, fakePresence{}, api.Optional{}, slog.New(slog.DiscardHandler)); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}
