package comet

import (
	"fmt"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/coder/websocket"
	"golang.org/x/time/rate"

	"github.com/laneim/laneim/proto/clientpb"
	"github.com/laneim/laneim/topics"
)

// Limits on what one connection may send, so that one client cannot take
// the cluster's capacity from the others (issue 11). Each refusal is a
// clear Error and is counted (Stats.Refused). docs/security.md lists them.

// Caps on client strings, in bytes. Ids (users, rooms) follow the id rule
// of package topics; these bound the rest.
const (
	maxClientMsgIDBytes    = topics.MaxClientMsgIDLen
	maxContentTypeBytes    = topics.MaxContentTypeLen
	maxDeviceBytes         = 128
	maxConversationBytes   = 256
	maxCursorBytes         = 1024
	maxRoomBytes           = 128
	maxPreLoginFrameBytes  = 8 << 10
	defaultMaxTokenBytes   = 4 << 10
	defaultRequestRate     = 20
	defaultRequestBurst    = 50
	defaultSendBurst       = 5
	defaultSendQueueBytesK = 4 << 10 // KiB
	// defaultMaxConnsPerAddress is well above what a household or office
	// behind one NAT address opens to one comet, and far below the file
	// descriptors a comet has (the issue saw ~17,000 from one address).
	defaultMaxConnsPerAddress = 1000
)

// MaxLoginJoins is the most rooms a Login may ask to join (Login.join);
// more are joined with JoinRoom once logged in.
const MaxLoginJoins = 100

// preLoginFrameBytes is the largest frame read before login: 8 KiB, or
// room for a token of MaxTokenBytes, at most MaxFrameBytes.
func (c Config) preLoginFrameBytes() int {
	return min(max(maxPreLoginFrameBytes, c.MaxTokenBytes+1024), c.MaxFrameBytes)
}

// newLimiter returns the request limiter of a connection, or nil when
// requests are not limited.
func newLimiter(cfg Config) *rate.Limiter {
	if cfg.RequestRate <= 0 {
		return nil
	}
	return rate.NewLimiter(rate.Limit(cfg.RequestRate), cfg.RequestBurst)
}

// allow takes one request from the connection's budget and, once it is
// logged in, from its user's, shared by the user's connections on this
// comet and kept for a while after they close, so that reconnecting does
// not refill it; a message (send) also takes from the user's message
// budget, whose burst is Config.SendBurst. It reports false, having
// answered RATE_LIMITED with the wait, when a budget is spent; a
// connection refused past its budget of refusals (overLimit) is closed
// (1008): it does not wait as told.
func (cn *conn) allow(req uint64, user string, send bool) bool {
	if cn.limiter == nil {
		return true
	}
	d := take(cn.limiter)
	var sends *rate.Limiter // the message budget, when it is the one spent
	if d == 0 && user != "" {
		ul := cn.comet.userLimits.get(user, cn.comet.cfg)
		d = take(ul.Limiter)
		if d == 0 && send && ul.sends != nil {
			d, sends = take(ul.sends), ul.sends
		}
	}
	if d == 0 {
		return true
	}
	what := fmt.Sprintf("more than %g requests a second", float64(cn.limiter.Limit()))
	if sends != nil {
		what = fmt.Sprintf("more than %g messages a second, %d at once", float64(sends.Limit()), sends.Burst())
	}
	return cn.limited(req, user, d, what)
}

// allowLogin takes one request from the budget of user, the verified
// subject of a Login's token, as allow does once a connection is logged
// in: a client reconnecting in a loop with a token its user cannot log
// in with (disabled, deleted) is refused here, before its Login reaches
// the pipeline, instead of on every new connection (outside abuse
// check). It reports false, having answered RATE_LIMITED, when the
// budget is spent.
func (cn *conn) allowLogin(req uint64, user string) bool {
	if cn.limiter == nil {
		return true
	}
	d := take(cn.comet.userLimits.get(user, cn.comet.cfg).Limiter)
	if d == 0 {
		return true
	}
	return cn.limited(req, user, d, fmt.Sprintf("more than %g logins and requests a second for this user", float64(cn.limiter.Limit())))
}

// limited answers a request refused for the rate limit RATE_LIMITED,
// saying what was exceeded and how long to wait (d), unless the refusal
// closes the connection (overLimit). It reports false.
func (cn *conn) limited(req uint64, user string, d time.Duration, what string) bool {
	if cn.overLimit(user) {
		return false
	}
	ms := topics.RetryAfterMs(d)
	cn.reply(&clientpb.ServerFrame{RequestId: req, Body: &clientpb.ServerFrame_Error{Error: &clientpb.Error{
		Code:         clientpb.Error_RATE_LIMITED,
		Text:         fmt.Sprintf("%s; retry after %d ms", what, ms),
		RetryAfterMs: ms,
	}}})
	return false
}

// allowPing takes one request from the connection's budget for a
// WebSocket ping frame (RFC 6455's, not the protocol's Ping), which the
// library answers with a pong unless this reports false. A ping past the
// budget is not answered and counts against the connection's refusals,
// as a refused request does: a flood of pings is closed (1008) as one of requests is,
// instead of taking a core to answer (outside abuse check). The reader
// calls it, as it calls allow.
func (cn *conn) allowPing() bool {
	if cn.limiter == nil {
		return true
	}
	if take(cn.limiter) == 0 {
		return true
	}
	cn.comet.mu.RLock()
	user := cn.user
	cn.comet.mu.RUnlock()
	cn.overLimit(user)
	return false
}

// overLimit counts a request refused for the rate limit and, when the
// connection's budget of refusals is spent, closes it (1008) and reports
// true. The budget is maxRefusals, one more each second, made at the
// connection's first refusal. Frames allowed in between do not refill
// it: a client that sends a little faster than its budget for ever,
// ignoring retry_after_ms, is closed as one sending far faster is,
// instead of being answered RATE_LIMITED for ever (outside abuse check:
// a frame allowed every 50 ms reset a count of refusals in a row, and
// 100 sockets sent 24 times their budget without being closed).
func (cn *conn) overLimit(user string) bool {
	cn.comet.rateLimited.Add(1)
	if cn.refusals == nil {
		cn.refusals = rate.NewLimiter(1, maxRefusals)
	}
	if cn.refusals.Allow() {
		return false
	}
	// The refusals already queued are written before the close.
	cn.closeOverLimit("its rate limit", user, true)
	return true
}

// closeOverLimit closes the connection (1008 "rate limit exceeded") for a
// budget it did not keep to (what), with a strike against its address,
// once whatever closes it again. With flush, the frames queued to it
// (its refusals) are written first.
func (cn *conn) closeOverLimit(what, user string, flush bool) {
	if cn.kick(websocket.StatusPolicyViolation, "rate limit exceeded", flush) {
		cn.comet.strike(cn.strikes)
		cn.comet.logger.Info("connection closed for exceeding "+what, "conn", cn.id, "user", user)
	}
}

// maxRefusals is how many RATE_LIMITED answers a connection gets at
// once before it is closed; one more is forgiven each second.
const maxRefusals = 100

// take takes one token from l, or reports how long to wait for one.
func take(l *rate.Limiter) time.Duration {
	r := l.Reserve()
	d := r.Delay()
	if d > 0 {
		r.Cancel()
	}
	return d
}

// userLimits holds the request budget of each user with a connection on
// this comet, or one within the last userLimitIdle.
type userLimits struct {
	mu sync.Mutex
	m  map[string]*userLimit
}

type userLimit struct {
	*rate.Limiter               // frames
	sends         *rate.Limiter // messages; nil: frames only
	used          time.Time
}

// userLimitIdle is how long a user's budget is kept after its last use.
const userLimitIdle = time.Minute

// get returns user's budgets, creating them.
func (u *userLimits) get(user string, cfg Config) *userLimit {
	u.mu.Lock()
	defer u.mu.Unlock()
	l := u.m[user]
	if l == nil {
		l = &userLimit{Limiter: rate.NewLimiter(rate.Limit(cfg.RequestRate), cfg.RequestBurst)}
		if cfg.SendBurst > 0 {
			l.sends = rate.NewLimiter(rate.Limit(cfg.RequestRate), cfg.SendBurst)
		}
		u.m[user] = l
	}
	l.used = time.Now()
	return l
}

// prune forgets the budgets unused since userLimitIdle before now.
func (u *userLimits) prune(now time.Time) {
	u.mu.Lock()
	defer u.mu.Unlock()
	for user, l := range u.m {
		if now.Sub(l.used) > userLimitIdle {
			delete(u.m, user)
		}
	}
}

// field is one client string and its cap.
type field struct {
	name  string
	value string
	max   int
}

// checkFields answers INVALID and reports false if a field is longer than
// its cap or not UTF-8 text.
func (cn *conn) checkFields(req uint64, fields ...field) bool {
	for _, f := range fields {
		if len(f.value) > f.max {
			cn.refuse(req, clientpb.Error_INVALID, fmt.Sprintf("%s of %d bytes exceeds %d", f.name, len(f.value), f.max))
			return false
		}
		if !utf8.ValidString(f.value) {
			cn.refuse(req, clientpb.Error_INVALID, f.name+" is not UTF-8 text")
			return false
		}
	}
	return true
}

// roomGiven reports whether a room to join or leave (what) is given and
// within maxRoomBytes; otherwise it answers INVALID and reports false.
func (cn *conn) roomGiven(req uint64, what, room string) bool {
	if room == "" {
		cn.fail(req, clientpb.Error_INVALID, what+" needs a room")
		return false
	}
	return cn.checkFields(req, field{"room", room, maxRoomBytes})
}

// checkRoom is roomGiven, and room follows the id rule (topics.CheckID);
// otherwise it answers INVALID, saying why, and reports false.
func (cn *conn) checkRoom(req uint64, what, room string) bool {
	if !cn.roomGiven(req, what, room) {
		return false
	}
	if err := topics.CheckID("room", room); err != nil {
		cn.refuse(req, clientpb.Error_INVALID, err.Error())
		return false
	}
	return true
}

// refuse answers an Error that a limit caused, and counts it.
func (cn *conn) refuse(req uint64, code clientpb.Error_Code, text string) {
	cn.comet.refused.Add(1)
	cn.fail(req, code, text)
}
