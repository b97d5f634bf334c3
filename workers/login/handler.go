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

// Users looks users up in the directory, many at once; *directory.Store
// implements it. It must be safe for concurrent use.
type Users interface {
	// Users returns the users among ids that exist, by id.
	Users(ctx context.Context, ids ...string) (map[string]directory.User, error)
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

// handle takes apart the batch a consumer may have merged
// (topics.LoginRequests batches across keys) and runs HandleBatch within
// answerWithin. When it fails (the directory or the broker down), every
// client of the batch is answered UNAVAILABLE and the request is acked
// rather than retried while the clients wait; it also never goes to dead
// letters, where its bearer token would be kept (issue 11). Only a
// failure to send those answers is returned, to be retried.
func (h *Handler) handle(ctx context.Context, req *topicpb.LoginRequest, _ *message.Message) error {
	ctx, cancel := context.WithTimeout(ctx, answerWithin)
	defer cancel()
	reqs := topics.Split(topics.LoginRequests, req)
	err := h.HandleBatch(ctx, reqs)
	if err == nil || pipeline.IsPermanent(err) {
		return err
	}
	answers := make([]pipeline.Answer, len(reqs))
	for i, r := range reqs {
		h.logger.Warn("login answered UNAVAILABLE", "session", topics.SessionKey(r.GetSession()), "err", err)
		answers[i] = pipeline.Answer{Session: r.GetSession(), Frame: topics.ErrorFrame(r.GetRequestId(), clientpb.Error_UNAVAILABLE, "login unavailable now; retry")}
	}
	if rerr := pipeline.ReplyAll(h.pub, answers); rerr != nil {
		return errors.Join(err, fmt.Errorf("login: refuse: %w", rerr))
	}
	return nil
}

// Handle processes one LoginRequest, whose claims the comet verified. A
// login accepted is announced as an OPENED SessionEvent, with the rooms
// it asks to join for presence to join; a login refused
// (a token expired since the comet verified it, a subject that is no
// valid user id, an unknown or disabled user) is answered with an Error
// frame on the comet's delivery topic. Either way Handle returns nil once
// the broker has the message, and the request is acked. A directory or
// broker failure is returned plainly, to be retried.
func (h *Handler) Handle(ctx context.Context, req *topicpb.LoginRequest, _ *message.Message) error {
	return h.HandleBatch(ctx, []*topicpb.LoginRequest{req})
}

// HandleBatch processes login requests as Handle processes each: the
// directory is asked about all their users at once, the accepted logins
// are announced in one publish, and each comet's refusals go in one.
func (h *Handler) HandleBatch(ctx context.Context, reqs []*topicpb.LoginRequest) error {
	at := h.now()
	now := at.UnixMilli()
	var answers []pipeline.Answer
	refuse := func(req *topicpb.LoginRequest, code clientpb.Error_Code, text string) {
		h.logger.Debug("login refused", "session", topics.SessionKey(req.GetSession()), "user", req.GetUser(), "reason", text)
		answers = append(answers, pipeline.Answer{Session: req.GetSession(), Frame: topics.ErrorFrame(req.GetRequestId(), code, text)})
	}
	var pending []*topicpb.LoginRequest
	var ids []string
	stale := 0
	for _, req := range reqs {
		if pipeline.LateLogin(req.GetReceivedUnixMs(), req.GetDeadlineUnixMs(), at) {
			stale++ // answered UNAVAILABLE by its comet, or soon will be
			continue
		}
		if exp := req.GetTokenExpiresUnixMs(); exp == 0 {
			// Comets always set it: this request did not come from one.
			refuse(req, clientpb.Error_BAD_TOKEN, "invalid token")
		} else if now > exp {
			refuse(req, clientpb.Error_BAD_TOKEN, "token expired")
		} else if topics.CheckID("user", req.GetUser()) != nil {
			// The comet refuses such a subject; this holds for any
			// writer of the topic (topics.ValidID).
			refuse(req, clientpb.Error_BAD_TOKEN, "token subject is not a valid user id")
		} else {
			pending = append(pending, req)
			ids = append(ids, req.GetUser())
		}
	}
	if stale > 0 {
		h.logger.Info("late logins skipped: past their comets' deadlines (they answer them UNAVAILABLE)", "count", stale)
	}
	var events []*message.Message
	if len(pending) > 0 {
		known, err := h.users.Users(ctx, ids...)
		if err != nil {
			return fmt.Errorf("login: %w", err)
		}
		for _, req := range pending {
			if u, ok := known[req.GetUser()]; !ok || u.Disabled {
				refuse(req, clientpb.Error_UNKNOWN_USER, "unknown or disabled user")
				continue
			}
			out, err := topics.SessionEvents.Encode(&topicpb.SessionEvent{
				Kind:           topicpb.SessionEvent_OPENED,
				Session:        req.GetSession(),
				User:           req.GetUser(),
				Device:         req.GetDevice(),
				RequestId:      req.GetRequestId(),
				TimeUnixMs:     now,
				Join:           req.GetJoin(),
				DeadlineUnixMs: req.GetDeadlineUnixMs(),
			})
			if err != nil {
				return err
			}
			events = append(events, out)
		}
	}
	// Refusals first: if announcing the accepted logins then fails, the
	// UNAVAILABLE every client of the batch gets (handle) comes after a
	// refused client's refusal, and no accepted login was announced.
	if err := pipeline.ReplyAll(h.pub, answers); err != nil {
		return fmt.Errorf("login: refuse: %w", err)
	}
	if len(events) > 0 {
		if err := h.pub.Publish(topics.SessionEvents.Name, events...); err != nil {
			return fmt.Errorf("login: publish %d sessions opened: %w", len(events), err)
		}
	}
	return nil
}
