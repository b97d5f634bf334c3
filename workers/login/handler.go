// Package login is the pipeline's login worker: it checks the user of a
// login in the directory, then announces the session on session.events
// (presence answers the client once the session is routable) or refuses
// the login on the comet's delivery topic.
//
// The comet has verified the client's token (package wiring/auth) and
// forwards only its claims: the worker trusts them, as it trusts whoever
// may write to login.requests (docs/security.md, "Topic write access is a
// trust boundary"), and no bearer token crosses the topic.
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

// Users looks users up in the directory; *directory.Store implements it.
// It must be safe for concurrent use.
type Users interface {
	User(ctx context.Context, id string) (directory.User, bool, error)
}

// Handler handles login requests. It is safe for concurrent use.
type Handler struct {
	users  Users
	pub    message.Publisher
	logger *slog.Logger
	now    func() time.Time
}

// New returns a login Handler. A nil logger discards.
func New(users Users, pub message.Publisher, logger *slog.Logger) (*Handler, error) {
	if users == nil || pub == nil {
		return nil, errors.New("login: a user directory and a publisher are required")
	}
	logger = pipeline.Logger(logger)
	return &Handler{users: users, pub: pub, logger: logger, now: time.Now}, nil
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

// Handle processes one LoginRequest, whose claims the comet verified. A
// login accepted is announced as an OPENED SessionEvent; a login refused
// (a token expired since the comet verified it, a subject that is no
// valid user id, an unknown or disabled user) is answered with an Error
// frame on the comet's delivery topic. Either way Handle returns nil once
// the broker has the message, and the request is acked. A directory or
// broker failure is returned plainly, to be retried.
func (h *Handler) Handle(ctx context.Context, req *topicpb.LoginRequest, _ *message.Message) error {
	sess := req.GetSession()
	user := req.GetUser()
	if exp := req.GetTokenExpiresUnixMs(); exp == 0 {
		// Comets always set it: this request did not come from one.
		h.logger.Debug("login refused: no token expiry", "session", topics.SessionKey(sess))
		return h.refuse(req, clientpb.Error_BAD_TOKEN, "invalid token")
	} else if h.now().UnixMilli() > exp {
		h.logger.Debug("login refused: token expired", "session", topics.SessionKey(sess))
		return h.refuse(req, clientpb.Error_BAD_TOKEN, "token expired")
	}
	if err := topics.CheckID("user", user); err != nil {
		// The comet refuses such a subject; this holds for any writer
		// of the topic (topics.ValidID).
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
