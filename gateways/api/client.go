package api

import (
	"context"
	"fmt"
	"io"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/laneim/laneim/proto/apipb"
)

// tokenCreds attaches the bearer token to every call.
type tokenCreds string

func (t tokenCreds) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	return map[string]string{"authorization": "Bearer " + string(t)}, nil
}

// RequireTransportSecurity is false: Dial is for plain gRPC on a private
// network or loopback.
func (tokenCreds) RequireTransportSecurity() bool { return false }

// Dial returns a client of the api gateway at addr presenting token, and
// the closer of its connection. It connects lazily.
func Dial(_ context.Context, addr, token string) (apipb.PushClient, io.Closer, error) {
	cc, err := grpc.NewClient(addr,
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithPerRPCCredentials(tokenCreds(token)),
	)
	if err != nil {
		return nil, nil, fmt.Errorf("api: dial %s: %w", addr, err)
	}
	return apipb.NewPushClient(cc), cc, nil
}
