// Package routing is the pipeline's routing worker: it checks that a
// sender may write where it writes, gives the message its id and its
// sequence number in the conversation, resolves the comets that host its
// recipients and emits the routed message; then it answers the sender.
package routing

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sync/errgroup"

	"github.com/laneim/laneim/proto/clientpb"
	"github.com/laneim/laneim/proto/topicpb"
	"github.com/laneim/laneim/topics"
	"github.com/laneim/laneim/wiring"
	"github.com/laneim/laneim/wiring/directory"
	"github.com/laneim/laneim/wiring/pipeline"
)

// Name is the handler's name; its consumer group is laneim.routing.
const Name = "routing"

// Config configures the routing worker.
type Config struct {
	// MaxBodyBytes is the largest body accepted (default 16 KiB, at most
	// MaxBodyLimit); larger ones are refused with TOO_LARGE.
	MaxBodyBytes int
	// AnswerWithin bounds the routing of a client's message (default
	// 2s): past it, or on any failure of the directory or the broker,
	// the client is answered UNAVAILABLE (see guard.go).
	AnswerWithin time.Duration
	// CoolDown is how long after a failure clients' messages are answered
	// UNAVAILABLE without trying (default 500 ms; negative: never).
	CoolDown time.Duration
	// EditWindow is how long after a message its sender may edit it
	// (default and most: 24 h, directory.DedupTTL, for which the
	// directory remembers who sent what).
	EditWindow time.Duration
	// RecallWindow is how long after a message its sender may recall it
	// (default 2 minutes, at most directory.DedupTTL).
	RecallWindow time.Duration
	// NotifyMembers: the offline members of a room with at most this many
	// members are published as an OfflineNotice (default 200; negative:
	// none). 1:1 recipients always are.
	NotifyMembers int
	// UserSendRate and UserSendBurst bound the messages (sends, edits,
	// recalls) one user's connections submit, all comets together: on
	// average UserSendRate a second (default 50), UserSendBurst at once
	// (default 100). Past them a message is refused RATE_LIMITED with
	// the time to wait. The budget is kept in Redis and shared by every
	// routing worker (directory.TakeSend). Messages of the api gateway
	// are not counted. A negative UserSendRate lifts the bound.
	UserSendRate  float64
	UserSendBurst int
}

// minSendRate is the smallest Config.UserSendRate: the budget counts in
// thousandths of a message a second.
const minSendRate = 0.001

// MaxBodyLimit bounds Config.MaxBodyBytes: a routed message must stay
// below the broker's default limit of about 1 MB per message.
const MaxBodyLimit = 512 << 10

func (c *Config) setDefaults() {
	if c.MaxBodyBytes == 0 {
		c.MaxBodyBytes = 16 << 10
	}
	if c.AnswerWithin == 0 {
		c.AnswerWithin = 2 * time.Second
	}
	if c.CoolDown == 0 {
		c.CoolDown = 500 * time.Millisecond
	}
	if c.EditWindow == 0 {
		c.EditWindow = directory.DedupTTL
	}
	if c.RecallWindow == 0 {
		c.RecallWindow = 2 * time.Minute
	}
	if c.NotifyMembers == 0 {
		c.NotifyMembers = 200
	}
	if c.UserSendRate == 0 {
		c.UserSendRate = 50
	}
	if c.UserSendBurst == 0 {
		c.UserSendBurst = 100
	}
}

// sendRate returns the users' send budget, and false when there is none.
func (c Config) sendRate() (directory.Rate, bool) {
	return directory.Rate{PerSecond: c.UserSendRate, Burst: c.UserSendBurst}, c.UserSendRate > 0
}

// Validate reports a configuration that cannot work. A zero MaxBodyBytes
// is valid: it means the default.
func (c Config) Validate() error {
	if c.MaxBodyBytes < 0 || c.MaxBodyBytes > MaxBodyLimit {
		return fmt.Errorf("routing: max body of %d bytes is not within 0..%d", c.MaxBodyBytes, MaxBodyLimit)
	}
	if c.AnswerWithin < 0 {
		return fmt.Errorf("routing: negative answer bound %v", c.AnswerWithin)
	}
	if c.EditWindow < 0 || c.EditWindow > directory.DedupTTL || c.RecallWindow < 0 || c.RecallWindow > directory.DedupTTL {
		return fmt.Errorf("routing: edit window %v and recall window %v must be within 0..%v", c.EditWindow, c.RecallWindow, directory.DedupTTL)
	}
	if c.UserSendRate > 0 && c.UserSendRate < minSendRate {
		return fmt.Errorf("routing: a user send rate of %g a second is below %g (negative: no bound)", c.UserSendRate, minSendRate)
	}
	if c.UserSendBurst < 0 {
		return fmt.Errorf("routing: negative user send burst %d", c.UserSendBurst)
	}
	return nil
}

// Store is what routing reads and writes in the directory;
// *directory.Store implements it. It must be safe for concurrent use.
type Store interface {
	Room(ctx context.Context, id string) (directory.Room, bool, error)
	IsMember(ctx context.Context, room, user string) (bool, error)
	User(ctx context.Context, id string) (directory.User, bool, error)
	Blocks(ctx context.Context, user, other string) (bool, error)
	AssignMany(ctx context.Context, conversation string, subs []directory.Submission, newID func() string) ([]directory.Assigned, error)
	AssignRestored(ctx context.Context, conversation string, subs []directory.Submission, newID func() string) ([]directory.Assigned, error)
	MarkRoutedMany(ctx context.Context, conversation string, subs []directory.Submission, as []directory.Assigned) error
	Lookup(ctx context.Context, conversation, sender, clientMsgID string) (directory.Assigned, bool, error)
	// For offline notices (offline.go).
	MemberCount(ctx context.Context, room string) (int, error)
	Members(ctx context.Context, room string) ([]string, error)
	Online(ctx context.Context, users ...string) (map[string]bool, error)
	// For mentions.
	MembersAmong(ctx context.Context, room string, users ...string) ([]string, error)
	AddMentions(ctx context.Context, conversation string, seq uint64, users []string, keep time.Duration) error
	RecallMentions(ctx context.Context, conversation string, seq uint64) error
	RoomComets(ctx context.Context, room string) ([]string, error)
	UserSessions(ctx context.Context, user string) ([]directory.SessionRef, error)
	LiveComets(ctx context.Context, now time.Time) ([]string, error)
	AddConversation(ctx context.Context, user, conversation string) error
	// RaiseRead raises the sender's read position to its own message.
	RaiseRead(ctx context.Context, user, conversation string, seq uint64) (uint64, bool, error)
	// The sequence guard's (guard.go).
	SequencesRestored(ctx context.Context) (bool, error)
	ForgetSequencesRestored(ctx context.Context) error
	RaiseSeq(ctx context.Context, conversation string, seq uint64) error
	Unassign(ctx context.Context, conversation, sender, clientMsgID string) error
	// TakeSend takes a message from a user's cluster-wide budget, or
	// says how long until one may go.
	TakeSend(ctx context.Context, user string, r directory.Rate) (time.Duration, error)
}

// Handler routes submitted messages. It is safe for concurrent use;
// messages of one conversation arrive on one partition, in order, so
// their sequence numbers follow submission order.
type Handler struct {
	cfg     Config
	store   Store
	pub     message.Publisher
	logger  *slog.Logger
	breaker pipeline.Breaker
	sizes   roomSizes

	// rateLimited counts messages refused for the user send rate.
	rateLimited atomic.Int64
	// age is the submissions' age when routing takes them (Ages).
	age prometheus.Histogram
}

// RateLimited returns how many client messages were refused because
// their sender passed Config.UserSendRate.
func (h *Handler) RateLimited() int64 { return h.rateLimited.Load() }

// New returns a routing Handler. cfg's zero fields take their defaults;
// a nil logger discards.
func New(cfg Config, store Store, pub message.Publisher, logger *slog.Logger) (*Handler, error) {
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if store == nil || pub == nil {
		return nil, errors.New("routing: a store and a publisher are required")
	}
	return &Handler{cfg: cfg, store: newGuardedStore(store), pub: pub, logger: pipeline.Logger(logger),
		breaker: pipeline.Breaker{CoolDown: cfg.CoolDown},
		age: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "laneim_routing_submission_age_seconds",
			Help:    "Age of a submitted message when routing takes it: from its submission at a comet or the api gateway (Submitted.submitted_unix_ms, millisecond resolution; another machine's clock skew adds to it) to now, retries included.",
			Buckets: wiring.LatencyBuckets,
		})}, nil
}

// Ages returns the histogram of the submissions' age when routing takes
// them, for a metrics registry.
func (h *Handler) Ages() prometheus.Collector { return h.age }

// Pipeline returns the pipeline handler consuming topics.Submitted with
// Handle, bounded and answering UNAVAILABLE on failure (see guard.go).
func (h *Handler) Pipeline() pipeline.Handler { return pipeline.On(Name, topics.Submitted, h.handle) }

// refusal is a reason to refuse a message, told to the sender.
type refusal struct {
	code clientpb.Error_Code
	text string
	// retryAfter is the Error's retry_after_ms, with RATE_LIMITED.
	retryAfter uint32
}

// frame is the Error frame answering request req with r.
func (r *refusal) frame(req uint64) *clientpb.ServerFrame {
	f := topics.ErrorFrame(req, r.code, r.text)
	f.GetError().RetryAfterMs = r.retryAfter
	return f
}

// Handle routes the submissions sub carries: sub, then its more
// (topics.SplitSubmitted), in that order, each as if it came alone. For
// each it publishes a Routed message to topics.Routed (even when no
// comet hosts a recipient: persistence needs every message), records in
// the directory that the message was routed, and answers the origin
// connection, if any, with a SendResult. A refused message is answered
// with an Error frame and nothing is routed for it.
//
// Consecutive plain messages of one conversation are routed together: one
// round trip to the directory for each kind of lookup, one atomic
// assignment of their seqs, one Routed payload carrying them all
// (topics.JoinRouted). An edit or a recall is routed on its own, after
// the messages before it, since it may name one of them.
//
// A repeat of a message routed before (same sender and client_msg_id) is
// answered with the first one's SendResult and not routed again. A repeat
// of a message whose routing never completed (a crash, a failed publish,
// a dead letter sent back) is routed again, with the same id, seq and
// server time; so is a retry. Handle returns nil (the message is acked)
// once the broker has everything; a directory or broker failure is
// returned plainly, to be retried. A Routed may therefore still be
// published twice (a failure after its publish); downstream is idempotent
// on conversation+seq, and comets drop what they already sent.
func (h *Handler) Handle(ctx context.Context, sub *topicpb.Submitted, _ *message.Message) error {
	return h.route(ctx, h.submissions(sub))
}

// submissions takes sub apart (topics.SplitSubmitted) and records the
// age of those that carry their submission time.
func (h *Handler) submissions(sub *topicpb.Submitted) []*topicpb.Submitted {
	subs := topics.SplitSubmitted(sub)
	now := time.Now().UnixMilli()
	for _, s := range subs {
		if t := s.GetSubmittedUnixMs(); t > 0 {
			wiring.ObserveAge(h.age, now, t)
		}
	}
	return subs
}

// route routes subs, in order, in runs (see Handle).
func (h *Handler) route(ctx context.Context, subs []*topicpb.Submitted) error {
	for len(subs) > 0 {
		n := 1
		if !changes(subs[0]) {
			conv := topics.SubmittedConversation(subs[0])
			for n < len(subs) && !changes(subs[n]) && topics.SubmittedConversation(subs[n]) == conv {
				n++
			}
		}
		if err := h.routeRun(ctx, subs[:n]); err != nil {
			return err
		}
		subs = subs[n:]
	}
	return nil
}

// changes reports whether sub edits or recalls a message.
func changes(sub *topicpb.Submitted) bool { return sub.GetEdits() != "" || sub.GetRecalls() != "" }

// item is one submission of a batch being routed.
type item struct {
	sub *topicpb.Submitted
	// refused, when set, is the answer instead of a SendResult.
	refused *refusal
	// dedup names the sender the message is de-duplicated under: the
	// sender, or the name of its edits (editsSuffix).
	dedup string
	// target is the seq of the message an edit or a recall names.
	target uint64
	a      directory.Assigned
	// m is the message routed, when it is in the batch's Routed
	// payload (not a repeat of a routed one).
	m                                    *clientpb.Message
	mentioned, offline, offlineMentioned []string
}

// submission is how the directory names it.
func (it *item) submission() directory.Submission {
	return directory.Submission{Sender: it.dedup, ClientMsgID: it.sub.GetClientMsgId()}
}

// routeRun routes subs, consecutive submissions to one conversation:
// plain messages, or a single edit or recall.
func (h *Handler) routeRun(ctx context.Context, subs []*topicpb.Submitted) error {
	items := make([]*item, len(subs))
	for i, sub := range subs {
		items[i] = &item{sub: sub, dedup: sub.GetSender()}
	}
	if err := h.check(ctx, items); err != nil {
		return err
	}
	conv := topics.SubmittedConversation(subs[0])
	now := time.Now()
	if it := items[0]; it.refused == nil && changes(it.sub) {
		// An edit or a recall is de-duplicated apart from messages
		// (dedup names the sender's edits), so that it can never be
		// named as the target of another.
		it.dedup = it.sub.GetSender() + editsSuffix
		var err error
		if it.target, it.refused, err = h.target(ctx, it.sub, conv, it.dedup, now); err != nil {
			return err
		}
	}
	var live []*item
	for _, it := range items {
		if it.refused == nil {
			live = append(live, it)
		}
	}
	routed := &topicpb.Routed{}
	if len(live) > 0 {
		// The sequence numbers, the targets and the 1:1 bookkeeping
		// are independent directory round trips: made at once, the
		// batch waits for one of them instead of their sum. Each is
		// idempotent, so a retry after any of them failed routes each
		// message with the seq it got the first time.
		g, gctx := errgroup.WithContext(ctx)
		g.Go(func() error {
			reqs := make([]directory.Submission, len(live))
			for i, it := range live {
				reqs[i] = it.submission()
			}
			as, err := h.store.AssignMany(gctx, conv, reqs, newID)
			for i := range as {
				live[i].a = as[i]
			}
			return err
		})
		g.Go(func() error { return h.targets(gctx, live[0].sub, routed, now) })
		g.Go(func() error { return h.recipients(gctx, live) })
		if a, b, ok := topics.Participants(conv); ok {
			// Both users learn of the conversation at their next login.
			for _, u := range []string{a, b} {
				g.Go(func() error { return h.store.AddConversation(gctx, u, conv) })
			}
		}
		if err := g.Wait(); err != nil {
			return err
		}
	}
	batch := make([]*topicpb.Routed, 0, len(live))
	inBatch := make(map[uint64]bool, len(live))
	for _, it := range live {
		if it.a.Dup {
			h.logger.Debug("duplicate submission", "conversation", conv, "sender", it.sub.GetSender(), "client_msg_id", it.sub.GetClientMsgId(), "seq", it.a.Seq, "routed_before", it.a.Routed)
			if it.a.Routed || inBatch[it.a.Seq] {
				continue // answered below, not routed again
			}
		}
		inBatch[it.a.Seq] = true
		it.m = h.message(it, conv, now)
		batch = append(batch, &topicpb.Routed{Message: it.m, SubmittedUnixMs: it.sub.GetSubmittedUnixMs()})
	}
	if len(batch) > 0 {
		// In seq order: a repeat whose routing never completed keeps
		// the earlier seq it got the first time.
		slices.SortFunc(batch, func(a, b *topicpb.Routed) int {
			return cmp.Compare(a.GetMessage().GetSeq(), b.GetMessage().GetSeq())
		})
		r := topics.JoinRouted(batch)
		r.Comets, r.Room, r.Users, r.Broadcast = routed.GetComets(), routed.GetRoom(), routed.GetUsers(), routed.GetBroadcast()
		out, err := topics.Routed.Encode(r)
		if err != nil {
			return err
		}
		if err := h.pub.Publish(topics.Routed.Name, out); err != nil {
			return fmt.Errorf("routing: publish %d routed in %s from #%d: %w", len(batch), conv, r.GetMessage().GetSeq(), err)
		}
	}
	return h.finish(ctx, conv, items, now)
}

// message is the message it routes.
func (h *Handler) message(it *item, conv string, now time.Time) *clientpb.Message {
	sub := it.sub
	m := &clientpb.Message{
		Id:               it.a.ID,
		Conversation:     conv,
		Seq:              it.a.Seq,
		Sender:           sub.GetSender(),
		Body:             sub.GetBody(),
		ContentType:      sub.GetContentType(),
		ServerTimeUnixMs: it.at(now).UnixMilli(),
		ClientMsgId:      sub.GetClientMsgId(),
		Mentions:         it.mentioned,
	}
	if sub.GetEdits() != "" {
		m.Edits = it.target
	} else if sub.GetRecalls() != "" {
		m.Recalls = it.target
	}
	return m
}

// at is the message's server time.
func (it *item) at(now time.Time) time.Time {
	if it.a.Time.IsZero() { // assigned before times were recorded
		return now
	}
	return it.a.Time
}

// finish does what follows the publish of a batch: it marks the routed
// messages routed, raises their senders' read positions, records their
// mentions, publishes their offline notices, and answers every
// submission. The directory's writes go first, all at once, and the
// answers after them: a sender that has its SendResult, or whoever logs
// in after it, reads the state the message left (its read position, its
// mentions). A failed answer or notice is returned, to be retried (a
// marked message is then answered, not routed again). A failed write
// alone is only logged: the message is routed and answered, and a repeat
// of it would be routed again, which comets drop as a repeat.
func (h *Handler) finish(ctx context.Context, conv string, items []*item, now time.Time) error {
	// The directory's failures are logged, not returned.
	var mu sync.Mutex
	var markErr, readErr, mentionErr, recallErr error
	keep := func(to *error, err error) {
		if err != nil {
			mu.Lock()
			*to = err
			mu.Unlock()
		}
	}
	var g errgroup.Group    // the publishes
	var book sync.WaitGroup // the directory's writes, whose errors are kept
	var marked []directory.Submission
	var marks []directory.Assigned
	reads := map[string]uint64{} // sender → its highest seq routed
	answers := make([]pipeline.Answer, len(items))
	for i, it := range items {
		if it.refused != nil {
			answers[i] = pipeline.Answer{Session: it.sub.GetOrigin(), Frame: it.refused.frame(it.sub.GetRequestId())}
			continue
		}
		answers[i] = pipeline.Answer{Session: it.sub.GetOrigin(), Frame: h.result(it, conv, now)}
		if it.m == nil {
			continue
		}
		marked, marks = append(marked, it.submission()), append(marks, it.a)
		if s := it.sub.GetSender(); s != topics.SystemSender {
			// A sender has read its own message: it does not count as unread.
			reads[s] = max(reads[s], it.a.Seq)
		}
		if len(it.offline) > 0 {
			g.Go(func() error { return h.notify(it.m, it.offline, it.offlineMentioned) })
		}
		if len(it.mentioned) > 0 {
			book.Go(func() {
				// Kept a minute past the recall window: a recall is
				// judged against the message's assigned time, routed later.
				keep(&mentionErr, h.store.AddMentions(ctx, conv, it.a.Seq, it.mentioned, h.cfg.RecallWindow+time.Minute))
			})
		}
		if it.target != 0 && it.sub.GetRecalls() != "" {
			// A recalled message's mentions no longer count as unread.
			book.Go(func() { keep(&recallErr, h.store.RecallMentions(ctx, conv, it.target)) })
		}
	}
	if len(marked) > 0 {
		book.Go(func() { keep(&markErr, h.store.MarkRoutedMany(ctx, conv, marked, marks)) })
	}
	for sender, seq := range reads {
		book.Go(func() {
			_, _, err := h.store.RaiseRead(ctx, sender, conv, seq)
			keep(&readErr, err)
		})
	}
	book.Wait()
	g.Go(func() error { return h.answer(answers) })
	if err := g.Wait(); err != nil {
		return err
	}
	if markErr != nil {
		h.logger.Warn("routed and answered but not marked routed", "conversation", conv, "messages", len(marked), "err", markErr)
	}
	if mentionErr != nil {
		h.logger.Warn("routed and answered but a mention not recorded", "conversation", conv, "err", mentionErr)
	}
	if recallErr != nil {
		h.logger.Warn("routed and answered but the recalled message's mentions still count as unread", "conversation", conv, "err", recallErr)
	}
	if readErr != nil {
		h.logger.Warn("routed and answered but a sender's read position not raised", "conversation", conv, "err", readErr)
	}
	return nil
}

// result is the SendResult answering it.
func (h *Handler) result(it *item, conv string, now time.Time) *clientpb.ServerFrame {
	return &clientpb.ServerFrame{
		RequestId: it.sub.GetRequestId(),
		Body: &clientpb.ServerFrame_SendResult{SendResult: &clientpb.SendResult{
			ClientMsgId:      it.sub.GetClientMsgId(),
			MessageId:        it.a.ID,
			Conversation:     conv,
			Seq:              it.a.Seq,
			ServerTimeUnixMs: it.at(now).UnixMilli(),
		}},
	}
}

// newID returns a UUIDv7, time-ordered, as a new message's id.
func newID() string {
	id, err := uuid.NewV7()
	if err != nil {
		// NewV7 fails only if the system's random source does.
		return uuid.NewString()
	}
	return id.String()
}

// check sets, for each item, why it may not be routed, if it may not. A
// client's message (not trusted) is refused UNKNOWN_USER when its sender
// is unknown to the directory or disabled: a ban holds for connections
// still open; and RATE_LIMITED when its sender has no send budget left.
// The directory is asked once per distinct question of the batch (a
// sender, a room, a membership, a block), all at once, with one budget
// take per message; the answers are judged in a fixed order (sender,
// budget, room or recipient, membership, block). So every client message
// that passes validate takes from its sender's budget, whatever the
// answer, except those refused RATE_LIMITED.
func (h *Handler) check(ctx context.Context, items []*item) error {
	type user struct {
		u  directory.User
		ok bool
	}
	var (
		users   = map[string]*user{}
		rooms   = map[string]*bool{}
		members = map[[2]string]*bool{} // room, user
		blocks  = map[[2]string]*bool{} // recipient, sender
		waits   = make([]time.Duration, len(items))
	)
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(64)
	for i, it := range items {
		sub := it.sub
		if it.refused = h.validate(sub); it.refused != nil {
			continue
		}
		trusted := sub.GetTrusted()
		if !trusted {
			users[sub.GetSender()] = &user{}
			if r, ok := h.cfg.sendRate(); ok {
				g.Go(func() (err error) {
					waits[i], err = h.store.TakeSend(gctx, sub.GetSender(), r)
					return err
				})
			}
		}
		switch to := sub.GetTo().(type) {
		case *topicpb.Submitted_Room:
			rooms[to.Room] = new(bool)
			if !trusted {
				members[[2]string{to.Room, sub.GetSender()}] = new(bool)
			}
		case *topicpb.Submitted_User:
			users[to.User] = &user{}
			if !trusted {
				blocks[[2]string{to.User, sub.GetSender()}] = new(bool)
			}
		}
	}
	for id, u := range users {
		g.Go(func() (err error) {
			u.u, u.ok, err = h.store.User(gctx, id)
			return err
		})
	}
	for id, ok := range rooms {
		g.Go(func() (err error) {
			_, *ok, err = h.store.Room(gctx, id)
			return err
		})
	}
	for k, member := range members {
		g.Go(func() (err error) {
			*member, err = h.store.IsMember(gctx, k[0], k[1])
			return err
		})
	}
	for k, blocked := range blocks {
		g.Go(func() (err error) {
			*blocked, err = h.store.Blocks(gctx, k[0], k[1])
			return err
		})
	}
	if err := g.Wait(); err != nil {
		return err
	}
	for i, it := range items {
		if it.refused != nil {
			continue
		}
		sub, trusted := it.sub, it.sub.GetTrusted()
		if !trusted {
			if s := users[sub.GetSender()]; !s.ok || s.u.Disabled {
				it.refused = &refusal{code: clientpb.Error_UNKNOWN_USER, text: "sender " + sub.GetSender() + " is unknown or disabled"}
				continue
			}
		}
		if wait := waits[i]; wait > 0 {
			h.rateLimited.Add(1)
			ms := topics.RetryAfterMs(wait)
			it.refused = &refusal{code: clientpb.Error_RATE_LIMITED, retryAfter: ms,
				text: fmt.Sprintf("more than %g messages a second from this user across the servers; retry after %d ms", h.cfg.UserSendRate, ms)}
			continue
		}
		switch to := sub.GetTo().(type) {
		case *topicpb.Submitted_Room:
			switch {
			case !*rooms[to.Room]:
				it.refused = &refusal{code: clientpb.Error_UNKNOWN_ROOM, text: "no room " + to.Room}
			case !trusted && !*members[[2]string{to.Room, sub.GetSender()}]:
				it.refused = &refusal{code: clientpb.Error_NOT_MEMBER, text: "not a member of " + to.Room}
			}
		case *topicpb.Submitted_User:
			switch r := users[to.User]; {
			case !r.ok || r.u.Disabled:
				it.refused = &refusal{code: clientpb.Error_UNKNOWN_USER, text: "no user " + to.User}
			case !trusted && *blocks[[2]string{to.User, sub.GetSender()}]:
				it.refused = &refusal{code: clientpb.Error_BLOCKED, text: to.User + " does not accept your messages"}
			}
		}
	}
	return nil
}

// validate returns why sub may not be routed whatever the directory
// holds, or nil: its size, and ids that break the id rule
// (topics.ValidID). Only a trusted message may come from
// topics.SystemSender.
func (h *Handler) validate(sub *topicpb.Submitted) *refusal {
	if len(sub.GetBody()) > h.cfg.MaxBodyBytes {
		return &refusal{code: clientpb.Error_TOO_LARGE, text: fmt.Sprintf("body of %d bytes exceeds %d", len(sub.GetBody()), h.cfg.MaxBodyBytes)}
	}
	switch s := sub.GetSender(); {
	case s == "":
		return &refusal{code: clientpb.Error_INVALID, text: "no sender"}
	case s == topics.SystemSender && sub.GetTrusted():
	case !topics.ValidID(s):
		return &refusal{code: clientpb.Error_INVALID, text: topics.CheckID("sender", s).Error()}
	}
	switch to := sub.GetTo().(type) {
	case *topicpb.Submitted_Room:
		if to.Room == "" {
			return &refusal{code: clientpb.Error_INVALID, text: "empty room"}
		}
		if err := topics.CheckID("room", to.Room); err != nil {
			return &refusal{code: clientpb.Error_INVALID, text: err.Error()}
		}
	case *topicpb.Submitted_User:
		if to.User == "" {
			return &refusal{code: clientpb.Error_INVALID, text: "empty recipient"}
		}
		if err := topics.CheckID("user", to.User); err != nil {
			return &refusal{code: clientpb.Error_INVALID, text: err.Error()}
		}
	case *topicpb.Submitted_Broadcast:
		if !sub.GetTrusted() {
			return &refusal{code: clientpb.Error_INVALID, text: "only the api gateway may broadcast"}
		}
	default:
		return &refusal{code: clientpb.Error_INVALID, text: "no recipient"}
	}
	switch {
	case sub.GetEdits() != "" && sub.GetRecalls() != "":
		return &refusal{code: clientpb.Error_INVALID, text: "a message may edit or recall, not both"}
	case (sub.GetEdits() != "" || sub.GetRecalls() != "") && (sub.GetTrusted() || sub.GetBroadcast()):
		return &refusal{code: clientpb.Error_INVALID, text: "only a user's own messages may be edited or recalled"}
	case sub.GetRecalls() != "" && len(sub.GetBody()) > 0:
		return &refusal{code: clientpb.Error_INVALID, text: "a recall has no body"}
	case len(sub.GetMentions()) > MaxMentions:
		return &refusal{code: clientpb.Error_INVALID, text: fmt.Sprintf("%d mentions, at most %d", len(sub.GetMentions()), MaxMentions)}
	}
	for _, u := range sub.GetMentions() {
		if err := topics.CheckID("mentioned user", u); err != nil {
			return &refusal{code: clientpb.Error_INVALID, text: err.Error()}
		}
	}
	return nil
}

// editsSuffix turns a sender into the name its edits and recalls are
// de-duplicated under: no user id holds ':', so it names no sender.
const editsSuffix = ":edits"

// target returns the seq of the message sub edits or recalls: a message
// of its sender in conv, found by its client_msg_id (dedup, the name of
// the sender's edits, is checked first, so that a retry of an edit
// already made is answered as a repeat even once the window passed).
// It is refused UNKNOWN_MESSAGE when the sender sent no such message
// (within directory.DedupTTL) and TOO_LATE past the window.
func (h *Handler) target(ctx context.Context, sub *topicpb.Submitted, conv, dedup string, now time.Time) (uint64, *refusal, error) {
	_, again, err := h.store.Lookup(ctx, conv, dedup, sub.GetClientMsgId())
	if err != nil {
		return 0, nil, err
	}
	name, window, what := sub.GetEdits(), h.cfg.EditWindow, "edit"
	if sub.GetRecalls() != "" {
		name, window, what = sub.GetRecalls(), h.cfg.RecallWindow, "recall"
	}
	orig, ok, err := h.store.Lookup(ctx, conv, sub.GetSender(), name)
	if err != nil {
		return 0, nil, err
	}
	if !ok {
		return 0, &refusal{code: clientpb.Error_UNKNOWN_MESSAGE, text: "no message of yours with client_msg_id " + name + " in " + conv}, nil
	}
	if !again && !orig.Time.IsZero() && now.Sub(orig.Time) > window {
		return 0, &refusal{code: clientpb.Error_TOO_LATE, text: fmt.Sprintf("the %s window of %v has passed", what, window)}, nil
	}
	return orig.Seq, nil, nil
}

// targets fills in where routed goes.
func (h *Handler) targets(ctx context.Context, sub *topicpb.Submitted, routed *topicpb.Routed, now time.Time) error {
	switch to := sub.GetTo().(type) {
	case *topicpb.Submitted_Room:
		comets, err := h.store.RoomComets(ctx, to.Room)
		if err != nil {
			return err
		}
		routed.Room, routed.Comets = to.Room, comets
	case *topicpb.Submitted_User:
		users := []string{to.User, sub.GetSender()}
		refs := make([][]directory.SessionRef, len(users))
		g, gctx := errgroup.WithContext(ctx)
		for i, u := range users {
			g.Go(func() (err error) {
				refs[i], err = h.store.UserSessions(gctx, u)
				return err
			})
		}
		if err := g.Wait(); err != nil {
			return err
		}
		seen := map[string]bool{}
		for _, rs := range refs {
			for _, r := range rs {
				if !seen[r.Comet] {
					seen[r.Comet] = true
					routed.Comets = append(routed.Comets, r.Comet)
				}
			}
		}
		routed.Users = []string{sub.GetSender(), to.User}
	case *topicpb.Submitted_Broadcast:
		comets, err := h.store.LiveComets(ctx, now)
		if err != nil {
			return err
		}
		routed.Broadcast, routed.Comets = true, comets
	}
	return nil
}

// answer sends each answer to its submission's connection, if it has
// one. The answers to one comet go in one publish, in the order given,
// so a sender hears of its messages in the order it sent them.
func (h *Handler) answer(answers []pipeline.Answer) error {
	if err := pipeline.ReplyAll(h.pub, answers); err != nil {
		return fmt.Errorf("routing: answer senders: %w", err)
	}
	return nil
}
