package api

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/laneim/laneim/proto/apipb"
)

// tokenCreds attaches the bearer token to every call.
type tokenCreds string

func (t tokenCreds) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	return map[string]string{"authorization": "Bearer " + string(t)}, nil
}

// RequireTransportSecurity is false: Dial also serves plain gRPC on a
// private network or loopback (WithTLS secures it).
func (tokenCreds) RequireTransportSecurity() bool { return false }

// DialOption changes how Dial connects.
type DialOption func(*dialOptions)

type dialOptions struct {
	tls *tls.Config
}

// WithTLS connects over TLS with c: its RootCAs verify the gateway's
// certificate (nil: the system's roots), and its Certificates are
// presented to a gateway that requires client certificates (mutual TLS).
// A nil c keeps plain gRPC. secure.TLS.Client builds c from files.
func WithTLS(c *tls.Config) DialOption {
	return func(o *dialOptions) { o.tls = c }
}

// Dial returns a client of the api gateway's Push service at addr
// presenting token, and the closer of its connection. It connects lazily.
func Dial(_ context.Context, addr, token string, opts ...DialOption) (apipb.PushClient, io.Closer, error) {
	cc, err := dial(addr, token, opts)
	if err != nil {
		return nil, nil, err
	}
	return apipb.NewPushClient(cc), cc, nil
}

// DialDirectory returns a client of the api gateway's Directory service,
// as Dial does for Push.
func DialDirectory(_ context.Context, addr, token string, opts ...DialOption) (apipb.DirectoryClient, io.Closer, error) {
	cc, err := dial(addr, token, opts)
	if err != nil {
		return nil, nil, err
	}
	return apipb.NewDirectoryClient(cc), cc, nil
}

func dial(addr, token string, opts []DialOption) (*grpc.ClientConn, error) {
	var o dialOptions
	for _, opt := range opts {
		opt(&o)
	}
	creds := insecure.NewCredentials()
	if o.tls != nil {
		creds = credentials.NewTLS(o.tls)
	}
	cc, err := grpc.NewClient(addr,
		grpc.WithTransportCredentials(creds),
		grpc.WithPerRPCCredentials(tokenCreds(token)),
	)
	if err != nil {
		return nil, fmt.Errorf("api: dial %s: %w", addr, err)
	}
	return cc, nil
}
