// Package api is laneIM's gateway for a product's backend: push to users,
// to a room or to everyone, ask who is online, read history, and (without
// MySQL) manage users, rooms, memberships and blocks. It serves the same
// methods over gRPC (services Push and Directory) and, when given an HTTP
// address, over HTTP/JSON (docs/http-api.md).
//
// Every call must carry "authorization: Bearer <token>" (gRPC metadata or
// HTTP header) with the configured API token; others are refused with
// Unauthenticated (HTTP 401). Both listeners use the same TLS settings:
// with none they speak plain text, for loopback or a private network.
//
// Pushes enter the pipeline as trusted submitted messages: they get
// sequence numbers and are routed and fanned out like clients' messages,
// without membership or block checks. A push without a sender comes from
// topics.SystemSender, which no user id can be. Every user and room id in
// a request must follow the id rule (topics.ValidID), and a conversation
// must parse (topics.ParseConversation); others are InvalidArgument.
package api

import (
	"context"
	"crypto/subtle"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/google/uuid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/reflection"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/tap"

	"github.com/laneim/laneim/proto/apipb"
	"github.com/laneim/laneim/proto/clientpb"
	"github.com/laneim/laneim/proto/topicpb"
	"github.com/laneim/laneim/topics"
	"github.com/laneim/laneim/wiring/directory"
	"github.com/laneim/laneim/wiring/discovery"
	"github.com/laneim/laneim/wiring/msgstore"
	"github.com/laneim/laneim/wiring/pipeline"
	"github.com/laneim/laneim/wiring/secure"
)

// Config configures the api gateway.
type Config struct {
	// Addr is the gRPC listen address (127.0.0.1:9090).
	Addr string
	// HTTPAddr is the HTTP/JSON listen address; empty: no HTTP api.
	HTTPAddr string
	// DirectoryFollowsMySQL is true when MySQL is the system of record
	// (binlog sync keeps the directory): Directory calls are then refused
	// with FailedPrecondition, unless MySQL is set.
	DirectoryFollowsMySQL bool
	// MySQL, a DSN (mysql://user:password@host:port/database), makes the
	// Directory service write the system of record's tables instead of
	// Redis; binlog sync brings the changes to the directory.
	MySQL string
	// Token is the bearer token callers must present. Required.
	Token string
	// MaxBodyBytes is the largest body accepted (16 KiB).
	MaxBodyBytes int
	// MaxUsers bounds the users of one PushUsers or OnlineStatus (1000).
	MaxUsers int
	// TLSCert and TLSKey are PEM files: with them the gateway serves gRPC
	// over TLS; without, plain gRPC (loopback or a private network).
	TLSCert, TLSKey string
	// ClientCA, a PEM file, turns on mutual TLS: a caller must present a
	// certificate signed by one of its authorities, or the handshake fails
	// (the bearer token is still required).
	ClientCA string
}

func (c *Config) setDefaults() {
	if c.Addr == "" {
		c.Addr = "127.0.0.1:9090"
	}
	if c.MaxBodyBytes <= 0 {
		c.MaxBodyBytes = 16 << 10
	}
	if c.MaxUsers <= 0 {
		c.MaxUsers = 1000
	}
}

// Validate reports a configuration that cannot work.
func (c Config) Validate() error {
	if c.Token == "" {
		return errors.New("api: no token")
	}
	if (c.TLSCert == "") != (c.TLSKey == "") {
		return errors.New("api: TLS certificate and key go together (flags --api-tls-cert and --api-tls-key)")
	}
	if c.ClientCA != "" && c.TLSCert == "" {
		return errors.New("api: a client CA (mutual TLS) needs the server's TLS certificate and key (flags --api-tls-cert and --api-tls-key)")
	}
	return nil
}

// serverTLS loads the gateway's TLS configuration; nil when TLS is off.
func (c Config) serverTLS() (*tls.Config, error) {
	if c.TLSCert == "" {
		return nil, nil
	}
	tc, err := secure.Server(c.TLSCert, c.TLSKey, c.ClientCA)
	if err != nil {
		return nil, fmt.Errorf("api: %w", err)
	}
	return tc, nil
}

// Presence answers online questions.
type Presence interface {
	Online(ctx context.Context, users ...string) (map[string]bool, error)
	RoomOnline(ctx context.Context, room string) (users, conns int, err error)
}

// History reads stored messages, and the edits and recalls of a range of
// them (for current_state); msgstore.Store implements it.
type History interface {
	After(ctx context.Context, conversation string, after uint64, limit int) ([]*clientpb.Message, bool, error)
	Before(ctx context.Context, conversation string, before uint64, limit int) ([]*clientpb.Message, bool, error)
	Changes(ctx context.Context, conversation string, from, to uint64) (map[uint64]*clientpb.Message, error)
}

// Server implements apipb.PushServer and apipb.DirectoryServer. It is
// safe for concurrent use.
type Server struct {
	apipb.UnimplementedPushServer
	apipb.UnimplementedDirectoryServer
	cfg      Config
	pub      message.Publisher
	presence Presence
	history  History
	comets   CometLister
	dir      Directory // nil: Directory calls refused
	lookup   Lookup    // nil: pushes not checked against the directory
	logger   *slog.Logger
	tls      *tls.Config // nil: plain gRPC
	// revoke: s writes the Redis directory itself, so it publishes the
	// revocations of what it takes away (binlog sync does otherwise).
	revoke  bool
	metrics *metrics // nil: calls not measured
}

// CometLister lists live comets, least loaded first.
type CometLister func(ctx context.Context) ([]discovery.Comet, error)

// PickCometTimeout bounds PickComet's read of etcd.
const PickCometTimeout = 2 * time.Second

// PickComet returns the least loaded live comet; Unavailable within
// PickCometTimeout when etcd does not answer.
func (s *Server) PickComet(ctx context.Context, _ *apipb.PickCometRequest) (*apipb.PickCometReply, error) {
	if s.comets == nil {
		return nil, status.Error(codes.Unavailable, "api: no service discovery (run with --etcd)")
	}
	// Bounded: with etcd away, the client would retry for as long as
	// the caller waits (outside fault check: calls hung for minutes).
	ctx, cancel := context.WithTimeout(ctx, PickCometTimeout)
	defer cancel()
	comets, err := s.comets(ctx)
	if err != nil {
		return nil, status.Errorf(codes.Unavailable, "api: list comets: %v", err)
	}
	if len(comets) == 0 {
		return nil, status.Error(codes.Unavailable, "api: no live comet")
	}
	c := comets[0]
	return &apipb.PickCometReply{CometId: c.ID, Url: c.URL, Connections: uint32(c.Connections)}, nil
}

// History returns a page of a conversation's stored messages; with
// current_state, as they are now (msgstore.Current).
func (s *Server) History(ctx context.Context, req *apipb.HistoryRequest) (*apipb.HistoryReply, error) {
	if s.history == nil {
		return nil, status.Error(codes.Unavailable, "api: this gateway has no history store")
	}
	if req.GetConversation() == "" {
		return nil, status.Error(codes.InvalidArgument, "api: empty conversation")
	}
	if _, err := topics.ParseConversation(req.GetConversation()); err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "api: %v", err)
	}
	var msgs []*clientpb.Message
	var more bool
	var err error
	if req.GetAfterSeq() > 0 {
		msgs, more, err = s.history.After(ctx, req.GetConversation(), req.GetAfterSeq(), int(req.GetLimit()))
	} else {
		msgs, more, err = s.history.Before(ctx, req.GetConversation(), req.GetBeforeSeq(), int(req.GetLimit()))
	}
	if err == nil && req.GetCurrentState() {
		msgs, err = msgstore.Current(ctx, s.history, req.GetConversation(), msgs)
	}
	if err != nil {
		return nil, status.Errorf(codes.Unavailable, "api: history: %v", err)
	}
	reply := &apipb.HistoryReply{HasMore: more}
	for _, m := range msgs {
		reply.Messages = append(reply.Messages, &apipb.HistoryMessage{
			Id: m.GetId(), Conversation: m.GetConversation(), Seq: m.GetSeq(), Sender: m.GetSender(),
			Body: m.GetBody(), ContentType: m.GetContentType(), ServerTimeUnixMs: m.GetServerTimeUnixMs(),
			ClientMsgId: m.GetClientMsgId(), Edits: m.GetEdits(), Recalls: m.GetRecalls(),
			EditedSeq: m.GetEditedSeq(), RecalledSeq: m.GetRecalledSeq(),
		})
	}
	return reply, nil
}

// Optional are the Server's optional dependencies.
type Optional struct {
	// History lets the server answer History; without it History is
	// Unavailable.
	History History
	// Comets lets the server answer PickComet; without it PickComet is
	// Unavailable.
	Comets CometLister
	// Directory lets the server answer the Directory service by changing
	// it directly (the Redis directory), when the Config names no MySQL;
	// without it those calls are Unavailable.
	Directory Directory
	// Lookup lets the server refuse, NotFound, a push to a room or user
	// the directory does not have, which routing would drop; without it
	// such a push is accepted and lost.
	Lookup Lookup
}

// Lookup tells which users and rooms the directory (Redis, as routing
// reads it) has; *directory.Store implements it.
type Lookup interface {
	Users(ctx context.Context, ids ...string) (map[string]directory.User, error)
	Rooms(ctx context.Context, ids ...string) (map[string]directory.Room, error)
}

// New returns a Server publishing with pub and answering online status
// from presence. cfg's zero fields take their defaults; a nil logger
// discards.
func New(cfg Config, pub message.Publisher, presence Presence, opt Optional, logger *slog.Logger) (*Server, error) {
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if pub == nil || presence == nil {
		return nil, errors.New("api: a publisher and a presence source are required")
	}
	logger = pipeline.Logger(logger)
	tc, err := cfg.serverTLS()
	if err != nil {
		return nil, err
	}
	s := &Server{cfg: cfg, pub: pub, presence: presence, history: opt.History, comets: opt.Comets, lookup: opt.Lookup, logger: logger, tls: tc}
	switch {
	case cfg.MySQL != "":
		if s.dir, err = NewMySQLDirectory(cfg.MySQL); err != nil {
			return nil, err
		}
	case !cfg.DirectoryFollowsMySQL && opt.Directory != nil:
		s.dir, s.revoke = opt.Directory, true
	}
	return s, nil
}

// GRPCServer returns a grpc.Server serving s with token authentication,
// over TLS (and mutual TLS) when the Config says so.
//
// The token is checked before a call's request is read (a tap handle,
// which sees only the headers): a caller without it cannot make the
// gateway read, and hold, its messages. A request may be as large as the
// HTTP API's largest body (maxRequestBytes), not gRPC's default of 4 MiB.
func (s *Server) GRPCServer(opts ...grpc.ServerOption) *grpc.Server {
	if s.tls != nil {
		opts = append(opts, grpc.Creds(credentials.NewTLS(s.tls)))
	}
	if s.metrics != nil {
		opts = append(opts, s.metrics.serverOptions()...)
	}
	opts = append(opts,
		grpc.InTapHandle(func(ctx context.Context, info *tap.Info) (context.Context, error) {
			err := s.checkToken(info.Header.Get("authorization"))
			if err != nil && s.metrics != nil {
				// Refused before any interceptor sees the call.
				s.metrics.observe(info.FullMethodName, time.Now(), err)
			}
			return ctx, err
		}),
		grpc.MaxRecvMsgSize(int(s.maxRequestBytes())),
	)
	g := grpc.NewServer(opts...)
	apipb.RegisterPushServer(g, s)
	apipb.RegisterDirectoryServer(g, s)
	// grpcurl and friends list and call the services without the .proto
	// files (with the bearer token, like every call).
	reflection.Register(g)
	return g
}

// checkToken returns Unauthenticated unless one of the authorization
// values is "Bearer <token>" with the configured token, the scheme in any
// case (RFC 9110 11.1).
func (s *Server) checkToken(authorization []string) error {
	for _, v := range authorization {
		scheme, tok, ok := strings.Cut(v, " ")
		if ok && strings.EqualFold(scheme, "Bearer") && subtle.ConstantTimeCompare([]byte(tok), []byte(s.cfg.Token)) == 1 {
			return nil
		}
	}
	return status.Error(codes.Unauthenticated, "api: missing or wrong bearer token")
}

func (s *Server) content(c *apipb.Content) error {
	if len(c.GetBody()) == 0 {
		return status.Error(codes.InvalidArgument, "api: empty body")
	}
	if len(c.GetBody()) > s.cfg.MaxBodyBytes {
		return status.Errorf(codes.InvalidArgument, "api: body of %d bytes exceeds %d", len(c.GetBody()), s.cfg.MaxBodyBytes)
	}
	if n := len(c.GetClientMsgId()); n > topics.MaxClientMsgIDLen {
		return status.Errorf(codes.InvalidArgument, "api: client_msg_id of %d bytes exceeds %d", n, topics.MaxClientMsgIDLen)
	}
	if n := len(c.GetContentType()); n > topics.MaxContentTypeLen {
		return status.Errorf(codes.InvalidArgument, "api: content_type of %d bytes exceeds %d", n, topics.MaxContentTypeLen)
	}
	return nil
}

func msgID(c *apipb.Content, suffix string) string {
	id := c.GetClientMsgId()
	if id == "" {
		return uuid.NewString()
	}
	if suffix != "" {
		return id + ":" + suffix
	}
	return id
}

// sender returns the sender of a push from from: topics.SystemSender when
// from is empty, else from, which must be a valid user id.
func sender(from string) (string, error) {
	if from == "" {
		return topics.SystemSender, nil
	}
	if err := topics.CheckID("sender", from); err != nil {
		return "", status.Errorf(codes.InvalidArgument, "api: %v", err)
	}
	return from, nil
}

// checkIDs returns InvalidArgument when an id breaks the id rule.
func checkIDs(kind string, ids ...string) error {
	for _, id := range ids {
		if err := topics.CheckID(kind, id); err != nil {
			return status.Errorf(codes.InvalidArgument, "api: %v", err)
		}
	}
	return nil
}

// submit publishes trusted submissions, all in one publish: the broker
// takes them in one request or a few, instead of one round trip each.
// On a failure some may have been taken; their client_msg_ids make a
// retry of the whole request idempotent.
func (s *Server) submit(subs []*topicpb.Submitted) (*apipb.PushReply, error) {
	reply := &apipb.PushReply{}
	now := time.Now().UnixMilli()
	msgs := make([]*message.Message, len(subs))
	for i, sub := range subs {
		sub.Trusted, sub.SubmittedUnixMs = true, now
		msg, err := topics.Submitted.Encode(sub)
		if err != nil {
			return nil, status.Errorf(codes.Internal, "api: %v", err)
		}
		msgs[i] = msg
	}
	if err := s.pub.Publish(topics.Submitted.Name, msgs...); err != nil {
		s.logger.Warn("publish push", "messages", len(msgs), "err", err)
		return nil, status.Errorf(codes.Unavailable, "api: pipeline unavailable, some of the %d messages may have been accepted; retry with the same client_msg_id: %v", len(msgs), err)
	}
	for _, sub := range subs {
		reply.Accepted++
		reply.ClientMsgIds = append(reply.ClientMsgIds, sub.GetClientMsgId())
	}
	return reply, nil
}

// known returns NotFound, naming them, if the directory lacks some of
// users or rooms (routing would drop a message to them), Unavailable if
// it cannot tell, and nil without a Lookup.
func (s *Server) known(ctx context.Context, users, rooms []string) error {
	if s.lookup == nil {
		return nil
	}
	var missing []string
	if len(users) > 0 {
		have, err := s.lookup.Users(ctx, users...)
		if err != nil {
			return unavailable(err)
		}
		missing = append(missing, absent("user", users, have)...)
	}
	if len(rooms) > 0 {
		have, err := s.lookup.Rooms(ctx, rooms...)
		if err != nil {
			return unavailable(err)
		}
		missing = append(missing, absent("room", rooms, have)...)
	}
	switch n := len(missing); {
	case n == 0:
		return nil
	case n > maxNamed:
		missing = append(missing[:maxNamed], fmt.Sprintf("and %d more", n-maxNamed))
	}
	return status.Errorf(codes.NotFound, "api: unknown %s: nothing was pushed", strings.Join(missing, ", "))
}

// absent names (kind "id") those of ids that have lacks.
func absent[T any](kind string, ids []string, have map[string]T) []string {
	var out []string
	for _, id := range ids {
		if _, ok := have[id]; !ok {
			out = append(out, fmt.Sprintf("%s %q", kind, id))
		}
	}
	return out
}

// maxNamed is how many unknown users an error names.
const maxNamed = 10

// PushUsers sends a 1:1 message from req.From to each user.
func (s *Server) PushUsers(ctx context.Context, req *apipb.PushUsersRequest) (*apipb.PushReply, error) {
	if len(req.GetUsers()) == 0 || len(req.GetUsers()) > s.cfg.MaxUsers {
		return nil, status.Errorf(codes.InvalidArgument, "api: give 1 to %d users", s.cfg.MaxUsers)
	}
	if err := s.content(req.GetContent()); err != nil {
		return nil, err
	}
	from, err := sender(req.GetFrom())
	if err != nil {
		return nil, err
	}
	if err := checkIDs("user", req.GetUsers()...); err != nil {
		return nil, err
	}
	if err := s.known(ctx, req.GetUsers(), nil); err != nil {
		return nil, err
	}
	subs := make([]*topicpb.Submitted, 0, len(req.GetUsers()))
	for _, u := range req.GetUsers() {
		c := req.GetContent()
		subs = append(subs, &topicpb.Submitted{
			Sender: from, ClientMsgId: msgID(c, u), To: &topicpb.Submitted_User{User: u},
			Body: c.GetBody(), ContentType: c.GetContentType(),
		})
	}
	return s.submit(subs)
}

// PushRoom sends a message to a room.
func (s *Server) PushRoom(ctx context.Context, req *apipb.PushRoomRequest) (*apipb.PushReply, error) {
	if req.GetRoom() == "" {
		return nil, status.Error(codes.InvalidArgument, "api: empty room")
	}
	if err := checkIDs("room", req.GetRoom()); err != nil {
		return nil, err
	}
	if err := s.content(req.GetContent()); err != nil {
		return nil, err
	}
	from, err := sender(req.GetFrom())
	if err != nil {
		return nil, err
	}
	if err := s.known(ctx, nil, []string{req.GetRoom()}); err != nil {
		return nil, err
	}
	c := req.GetContent()
	return s.submit([]*topicpb.Submitted{{
		Sender: from, ClientMsgId: msgID(c, ""), To: &topicpb.Submitted_Room{Room: req.GetRoom()},
		Body: c.GetBody(), ContentType: c.GetContentType(),
	}})
}

// Broadcast sends a message to every logged-in connection.
func (s *Server) Broadcast(_ context.Context, req *apipb.BroadcastRequest) (*apipb.PushReply, error) {
	if err := s.content(req.GetContent()); err != nil {
		return nil, err
	}
	from, err := sender(req.GetFrom())
	if err != nil {
		return nil, err
	}
	c := req.GetContent()
	return s.submit([]*topicpb.Submitted{{
		Sender: from, ClientMsgId: msgID(c, ""), To: &topicpb.Submitted_Broadcast{Broadcast: true},
		Body: c.GetBody(), ContentType: c.GetContentType(),
	}})
}

// OnlineStatus tells which users have a live connection.
func (s *Server) OnlineStatus(ctx context.Context, req *apipb.OnlineStatusRequest) (*apipb.OnlineStatusReply, error) {
	if len(req.GetUsers()) == 0 || len(req.GetUsers()) > s.cfg.MaxUsers {
		return nil, status.Errorf(codes.InvalidArgument, "api: give 1 to %d users", s.cfg.MaxUsers)
	}
	if err := checkIDs("user", req.GetUsers()...); err != nil {
		return nil, err
	}
	on, err := s.presence.Online(ctx, req.GetUsers()...)
	if err != nil {
		return nil, status.Errorf(codes.Unavailable, "api: %v", err)
	}
	return &apipb.OnlineStatusReply{Online: on}, nil
}

// RoomOnline tells how many users and connections are online in a room.
func (s *Server) RoomOnline(ctx context.Context, req *apipb.RoomOnlineRequest) (*apipb.RoomOnlineReply, error) {
	if req.GetRoom() == "" {
		return nil, status.Error(codes.InvalidArgument, "api: empty room")
	}
	if err := checkIDs("room", req.GetRoom()); err != nil {
		return nil, err
	}
	users, conns, err := s.presence.RoomOnline(ctx, req.GetRoom())
	if err != nil {
		return nil, status.Errorf(codes.Unavailable, "api: %v", err)
	}
	return &apipb.RoomOnlineReply{Room: req.GetRoom(), OnlineUsers: uint32(users), Connections: uint32(conns)}, nil
}

// Addr returns the configured listen address.
func (s *Server) Addr() string { return s.cfg.Addr }
