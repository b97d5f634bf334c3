// Package login is the pipeline's login worker: it verifies the token a
// client sent to its comet and the user in the directory, then announces
// the session on session.events (presence answers the client once the
// session is routable) or refuses the login on the comet's delivery topic.
package login

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/laneim/laneim/proto/clientpb"
	"github.com/laneim/laneim/proto/topicpb"
	"github.com/laneim/laneim/topics"
	"github.com/laneim/laneim/wiring/directory"
	"github.com/laneim/laneim/wiring/pipeline"
)

// Name is the handler's name; its consumer group is laneim.login.
const Name = "login"

// Config configures the login worker.
type Config struct {
	// Secret is the HMAC key that signs login tokens. Required, and
	// refused when CheckSecret refuses it (too short, a placeholder).
	Secret []byte
	// Token is what a token must satisfy beyond its signature (issuer,
	// audience, lifetime, clock skew); the zero value is the default.
	Token TokenPolicy
}

// Validate reports a configuration that cannot work or is unsafe.
func (c Config) Validate() error {
	if err := CheckSecret(c.Secret); err != nil {
		return err
	}
	return c.Token.Validate()
}

// Users looks users up in the directory; *directory.Store implements it.
// It must be safe for concurrent use.
type Users interface {
	User(ctx context.Context, id string) (directory.User, bool, error)
}

// Handler handles login requests. It is safe for concurrent use.
type Handler struct {
	cfg    Config
	users  Users
	pub    message.Publisher
	logger *slog.Logger
	now    func() time.Time
}

// New returns a login Handler; it refuses a Config that does not
// Validate. A nil logger discards.
func New(cfg Config, users Users, pub message.Publisher, logger *slog.Logger) (*Handler, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if users == nil || pub == nil {
		return nil, errors.New("login: a user directory and a publisher are required")
	}
	logger = pipeline.Logger(logger)
	return &Handler{cfg: cfg, users: users, pub: pub, logger: logger, now: time.Now}, nil
}

// Pipeline returns the pipeline handler consuming topics.LoginRequests with Handle.
func (h *Handler) Pipeline() pipeline.Handler {
	return pipeline.On(Name, topics.LoginRequests, h.handle)
}

// answerWithin bounds the work on one login.
const answerWithin = 2 * time.Second

// handle runs Handle within answerWithin. When it fails (the directory or
// the broker down), the client is answered UNAVAILABLE and the request is
// acked rather than retried while the client waits; it also never goes to
// dead letters, where its bearer token would be kept (issue 11). Only a
// failure to send that answer is returned, to be retried.
func (h *Handler) handle(ctx context.Context, req *topicpb.LoginRequest, msg *message.Message) error {
	ctx, cancel := context.WithTimeout(ctx, answerWithin)
	defer cancel()
	err := h.Handle(ctx, req, msg)
	if err == nil || pipeline.IsPermanent(err) {
		return err
	}
	h.logger.Warn("login answered UNAVAILABLE", "session", topics.SessionKey(req.GetSession()), "err", err)
	if rerr := h.refuse(req, clientpb.Error_UNAVAILABLE, "login unavailable now; retry"); rerr != nil {
		return errors.Join(err, rerr)
	}
	return nil
}

// Handle processes one LoginRequest. A login accepted is announced as an
// OPENED SessionEvent; a login refused (bad or expired token, a subject
// that is no valid user id, unknown or disabled user) is answered with an Error frame on the comet's delivery
// topic. Either way Handle returns nil once the broker has the message, and
// the request is acked. A directory or broker failure is returned plainly,
// to be retried.
func (h *Handler) Handle(ctx context.Context, req *topicpb.LoginRequest, _ *message.Message) error {
	sess := req.GetSession()
	user, err := VerifyTokenPolicy(h.cfg.Secret, req.GetToken(), h.now(), h.cfg.Token)
	if err != nil {
		h.logger.Debug("login refused", "session", topics.SessionKey(sess), "expired", errors.Is(err, ErrTokenExpired), "err", err)
		text := "invalid token"
		if errors.Is(err, ErrTokenExpired) {
			text = "token expired"
		}
		return h.refuse(req, clientpb.Error_BAD_TOKEN, text)
	}
	if err := topics.CheckID("user", user); err != nil {
		// The token is well signed, but its subject can name no user
		// (topics.ValidID): refused before it reaches the directory.
		h.logger.Debug("login refused", "session", topics.SessionKey(sess), "err", err)
		return h.refuse(req, clientpb.Error_BAD_TOKEN, "token subject is not a valid user id")
	}
	u, ok, err := h.users.User(ctx, user)
	if err != nil {
		return fmt.Errorf("login: %w", err)
	}
	if !ok || u.Disabled {
		h.logger.Debug("login refused", "session", topics.SessionKey(sess), "user", user, "known", ok)
		return h.refuse(req, clientpb.Error_UNKNOWN_USER, "unknown or disabled user")
	}
	out, err := topics.SessionEvents.Encode(&topicpb.SessionEvent{
		Kind:       topicpb.SessionEvent_OPENED,
		Session:    sess,
		User:       user,
		Device:     req.GetDevice(),
		RequestId:  req.GetRequestId(),
		TimeUnixMs: h.now().UnixMilli(),
	})
	if err != nil {
		return err
	}
	if err := h.pub.Publish(topics.SessionEvents.Name, out); err != nil {
		return fmt.Errorf("login: publish session opened: %w", err)
	}
	return nil
}

func (h *Handler) refuse(req *topicpb.LoginRequest, code clientpb.Error_Code, text string) error {
	if err := pipeline.ReplyError(h.pub, req.GetSession(), req.GetRequestId(), code, text); err != nil {
		return fmt.Errorf("login: refuse: %w", err)
	}
	return nil
}
