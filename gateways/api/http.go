package api

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"time"

	"go.uber.org/fx"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/laneim/laneim/topics"
	"github.com/laneim/laneim/wiring"
)

// The HTTP/JSON api serves every method of the gRPC services as
//
//	POST /v1/<method>   (push_users, put_room, ...)
//
// with the request message as its JSON body (protobuf's JSON mapping:
// bytes in base64, 64-bit integers as strings; an empty body is the empty
// request) and the reply message as JSON, snake_case field names and
// every field present. Errors are {"error": {"code": "NOT_FOUND",
// "message": "..."}} with the gRPC code's name and its HTTP status.
// docs/http-api.md documents it for callers.

// route is one method of the HTTP api, served at /v1/<name>.
type route struct {
	name string
	h    http.HandlerFunc
}

func (s *Server) routes() []route {
	return []route{
		{"push_users", rpc(s, s.PushUsers)},
		{"push_room", rpc(s, s.PushRoom)},
		{"broadcast", rpc(s, s.Broadcast)},
		{"online_status", rpc(s, s.OnlineStatus)},
		{"room_online", rpc(s, s.RoomOnline)},
		{"history", rpc(s, s.History)},
		{"pick_comet", rpc(s, s.PickComet)},
		{"put_user", rpc(s, s.PutUser)},
		{"delete_user", rpc(s, s.DeleteUser)},
		{"put_room", rpc(s, s.PutRoom)},
		{"delete_room", rpc(s, s.DeleteRoom)},
		{"add_member", rpc(s, s.AddMember)},
		{"remove_member", rpc(s, s.RemoveMember)},
		{"block", rpc(s, s.Block)},
		{"unblock", rpc(s, s.Unblock)},
	}
}

// HTTPHandler returns the HTTP/JSON api. It authenticates each request as
// the gRPC server does; TLS is the http.Server's (see HTTPServer).
func (s *Server) HTTPHandler() http.Handler {
	observe := func(_ string, h http.Handler) http.Handler { return h }
	if s.metrics != nil {
		observe = s.metrics.observeHTTP
	}
	mux := http.NewServeMux()
	for _, r := range s.routes() {
		mux.Handle("/v1/"+r.name, observe("/v1/"+r.name, r.h))
	}
	mux.Handle("/", observe("other", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusNotFound, "NOT_FOUND", fmt.Sprintf("api: no method at %s (POST /v1/<method>, see docs/http-api.md)", r.URL.Path))
	})))
	return mux
}

// HTTPServer returns an http.Server serving HTTPHandler, with the gRPC
// server's TLS configuration when it has one (serve it with ServeTLS(l,
// "", "")).
func (s *Server) HTTPServer() *http.Server {
	hs := &http.Server{
		Handler:           s.HTTPHandler(),
		ReadHeaderTimeout: 10 * time.Second,
		MaxHeaderBytes:    wiring.MaxHeaderBytes,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      30 * time.Second,
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          slog.NewLogLogger(s.logger.Handler(), slog.LevelWarn),
	}
	if s.tls != nil {
		hs.TLSConfig = s.tls.Clone()
	}
	return hs
}

// maxRequestBytes bounds an HTTP request body: a largest push body in
// base64, room for the longest list of the longest user ids (quoted,
// with room for escapes), and the rest of the message.
func (s *Server) maxRequestBytes() int64 {
	return int64(2*s.cfg.MaxBodyBytes + s.cfg.MaxUsers*(8+4*topics.MaxIDLen) + 4096)
}

// The JSON mapping of replies.
var (
	marshal   = protojson.MarshalOptions{UseProtoNames: true, EmitUnpopulated: true}
	unmarshal = protojson.UnmarshalOptions{}
)

// rpc serves one method over HTTP: POST only, token checked, body
// bounded, JSON in and out.
func rpc[Req any, PReq interface {
	*Req
	proto.Message
}, Rep proto.Message](s *Server, call func(context.Context, PReq) (Rep, error)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost {
			w.Header().Set("Allow", http.MethodPost)
			writeError(w, http.StatusMethodNotAllowed, "METHOD_NOT_ALLOWED", "api: use POST")
			return
		}
		if err := s.checkToken(r.Header.Values("Authorization")); err != nil {
			w.Header().Set("WWW-Authenticate", "Bearer")
			writeStatus(w, err)
			return
		}
		body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, s.maxRequestBytes()))
		if err != nil {
			var tooLarge *http.MaxBytesError
			if errors.As(err, &tooLarge) {
				writeError(w, http.StatusRequestEntityTooLarge, "INVALID_ARGUMENT", fmt.Sprintf("api: request body exceeds %d bytes", tooLarge.Limit))
				return
			}
			writeError(w, http.StatusBadRequest, "INVALID_ARGUMENT", fmt.Sprintf("api: read request: %v", err))
			return
		}
		req := PReq(new(Req))
		if len(bytes.TrimSpace(body)) > 0 {
			if err := unmarshal.Unmarshal(body, req); err != nil {
				writeError(w, http.StatusBadRequest, "INVALID_ARGUMENT", fmt.Sprintf("api: bad JSON request: %v", err))
				return
			}
		}
		rep, err := call(r.Context(), req)
		if err != nil {
			writeStatus(w, err)
			return
		}
		out, err := marshal.Marshal(rep)
		if err != nil {
			writeError(w, http.StatusInternalServerError, "INTERNAL", fmt.Sprintf("api: encode reply: %v", err))
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(out)
	}
}

// httpCodes maps gRPC codes to their JSON name and HTTP status (the
// mapping of Google's HTTP APIs).
var httpCodes = map[codes.Code]struct {
	name   string
	status int
}{
	codes.Canceled:           {"CANCELLED", 499},
	codes.Unknown:            {"UNKNOWN", http.StatusInternalServerError},
	codes.InvalidArgument:    {"INVALID_ARGUMENT", http.StatusBadRequest},
	codes.DeadlineExceeded:   {"DEADLINE_EXCEEDED", http.StatusGatewayTimeout},
	codes.NotFound:           {"NOT_FOUND", http.StatusNotFound},
	codes.AlreadyExists:      {"ALREADY_EXISTS", http.StatusConflict},
	codes.PermissionDenied:   {"PERMISSION_DENIED", http.StatusForbidden},
	codes.ResourceExhausted:  {"RESOURCE_EXHAUSTED", http.StatusTooManyRequests},
	codes.FailedPrecondition: {"FAILED_PRECONDITION", http.StatusBadRequest},
	codes.Aborted:            {"ABORTED", http.StatusConflict},
	codes.OutOfRange:         {"OUT_OF_RANGE", http.StatusBadRequest},
	codes.Unimplemented:      {"UNIMPLEMENTED", http.StatusNotImplemented},
	codes.Internal:           {"INTERNAL", http.StatusInternalServerError},
	codes.Unavailable:        {"UNAVAILABLE", http.StatusServiceUnavailable},
	codes.DataLoss:           {"DATA_LOSS", http.StatusInternalServerError},
	codes.Unauthenticated:    {"UNAUTHENTICATED", http.StatusUnauthorized},
}

// writeStatus writes err, a gRPC status error, as a JSON error.
func writeStatus(w http.ResponseWriter, err error) {
	st := status.Convert(err)
	c, ok := httpCodes[st.Code()]
	if !ok {
		c = httpCodes[codes.Unknown]
	}
	writeError(w, c.status, c.name, st.Message())
}

// errorBody is the JSON of every HTTP error.
type errorBody struct {
	Error struct {
		Code    string `json:"code"`
		Message string `json:"message"`
	} `json:"error"`
}

func writeError(w http.ResponseWriter, httpStatus int, code, msg string) {
	var b errorBody
	b.Error.Code, b.Error.Message = code, msg
	out, _ := json.Marshal(b)
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(httpStatus)
	_, _ = w.Write(out)
}

type httpParams struct {
	fx.In
	Server *Server
	Logger *slog.Logger
}

// serveHTTP runs the HTTP/JSON api on Config.HTTPAddr, when set.
func serveHTTP(lc fx.Lifecycle, p httpParams) {
	s := p.Server
	if s.cfg.HTTPAddr == "" {
		return
	}
	hs := s.HTTPServer()
	done := make(chan error, 1)
	lc.Append(fx.Hook{
		OnStart: func(context.Context) error {
			l, err := net.Listen("tcp", s.cfg.HTTPAddr)
			if err != nil {
				return fmt.Errorf("api: listen http: %w", err)
			}
			// Decided before serving: Serve writes hs.TLSConfig.
			useTLS := hs.TLSConfig != nil
			go func() {
				if useTLS {
					done <- hs.ServeTLS(l, "", "")
				} else {
					done <- hs.Serve(l)
				}
			}()
			p.Logger.Info("api gateway HTTP listening", "addr", l.Addr().String(), "tls", useTLS)
			return nil
		},
		OnStop: func(ctx context.Context) error {
			ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			defer cancel()
			if err := hs.Shutdown(ctx); err != nil {
				_ = hs.Close()
			}
			if err := <-done; err != nil && !errors.Is(err, http.ErrServerClosed) {
				return fmt.Errorf("api: http: %w", err)
			}
			return nil
		},
	})
}
