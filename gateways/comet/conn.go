package comet

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unicode/utf8"

	"github.com/coder/websocket"
	"golang.org/x/time/rate"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	"github.com/laneim/laneim/proto/clientpb"
	"github.com/laneim/laneim/proto/topicpb"
	"github.com/laneim/laneim/topics"
	"github.com/laneim/laneim/wiring/auth"
)

// conn is one client connection of its comet, which it calls back into
// (publishing, counters, configuration). user and rooms are guarded by
// the comet's mu. Frames reach the client only through the connection's
// queue (writer.go): a writer goroutine runs only while there is
// something to write or a close to perform, so an idle connection costs
// its reader goroutine and nothing else. Login and idle deadlines are
// enforced by the comet's deadline sweep, and every close goes out as a
// proper close frame written by the writer.
type conn struct {
	comet *Comet // set by newConn, never changes
	id    string
	ws    *websocket.Conn // nil for test members without a socket
	net   *socket         // the socket under ws, for batched writes; nil in tests
	json  bool
	// compact is set by a Login asking for compact_batches, before the
	// connection is in any room.
	compact atomic.Bool
	addr    string // the client address as counted (addrlimit.go); "" if not
	// strikes is the key of strikes against its address (strikes.go).
	strikes string
	start   time.Time

	lastRead atomic.Int64 // time.Since(start) of the last client frame
	authed   atomic.Bool  // mirrors user != "" for the deadline sweep

	user  string
	rooms smallSet[string]

	// The highest seq queued per conversation of direct deliveries (to
	// users, connections or everyone; see fresh), made at the first one
	// and holding at most maxSeen conversations; guarded by seenMu.
	seenMu sync.Mutex
	seen   map[string]uint64

	// The outbound queue, guarded by qmu (see writer.go).
	qmu         sync.Mutex
	queue       []*frame
	spare       []*frame // the writer's last batch, reused
	writing     bool     // a writer goroutine is running
	parked      bool     // the writer waits on wake for more frames
	claimed     bool     // on the comet's ready list, for turn (claim); the writer waits
	turn        *frame   // the frame the connection was claimed for, until written
	wake        chan struct{}
	kicked      bool // no more frames are taken
	closeStatus websocket.StatusCode
	closeReason string
	closeFlush  bool // write what is queued before closing

	// Requests waiting for the pipeline's answer (pending.go).
	pmu          sync.Mutex
	pending      map[uint64]time.Time // request id -> when to answer it ourselves
	waiting      atomic.Int32         // len(pending), read without pmu
	loginWaiting bool                 // a Login is forwarded, not yet answered; guarded by pmu
	loginReq     uint64               // its request id, until answered
	reads        map[uint64]struct{}  // pending requests holding one of the comet's read slots; guarded by pmu
	readAt       time.Time            // when a read of it last took or gave back a slot; guarded by pmu

	parkState atomic.Int32 // reading or parked (park.go)
	parkToken uint64       // the connection's key in the comet's parker; reader only

	limiter  *rate.Limiter        // the connection's request budget (limits.go); nil: none
	refusals *rate.Limiter        // RATE_LIMITED answers it may still get (overLimit); nil before the first; reader only
	typed    map[string]time.Time // conversation -> last Typing forwarded; reader only
	qbytes   int                  // bytes queued, guarded by qmu
	wbytes   int                  // bytes taken by the writer, not yet written or dropped; guarded by qmu
}

// newConn returns a connection of c over ws (nil in tests); nc is the
// socket under ws, when known.
func newConn(c *Comet, id string, ws *websocket.Conn, nc *socket, useJSON bool) *conn {
	return &conn{
		comet: c, id: id, ws: ws, net: nc, json: useJSON, start: time.Now(),
		wake:    make(chan struct{}, 1),
		limiter: newLimiter(c.cfg),
	}
}

// enc returns the encoding of the connection's frames.
func (cn *conn) enc() encoding {
	switch compact := cn.compact.Load(); {
	case cn.json && compact:
		return encCompactJSON
	case cn.json:
		return encJSON
	case compact:
		return encCompact
	}
	return encProto
}

var unmarshalJSON = protojson.UnmarshalOptions{DiscardUnknown: true}

// maxSeen bounds the conversations a connection remembers for direct
// deliveries. Forgetting one lets a repeat of it through, which clients
// drop; it never drops a message.
const maxSeen = 64

// fresh returns msgs without the messages whose (conversation, seq) is
// at or below the highest seq of that conversation already queued to the
// connection by a direct delivery, and records the others; msgs itself
// when none is dropped. It reports how many it dropped. A message after
// a gap is kept and raises the mark, so one of the missing seqs arriving
// later is dropped: the client saw the gap and Syncs it. Messages without
// a seq are kept.
func (cn *conn) fresh(msgs []*clientpb.Message) (out []*clientpb.Message, dropped int) {
	cn.seenMu.Lock()
	defer cn.seenMu.Unlock()
	for i, m := range msgs {
		if cn.repeatLocked(m) {
			dropped++
			if out == nil {
				out = append(make([]*clientpb.Message, 0, len(msgs)-1), msgs[:i]...)
			}
			continue
		}
		if out != nil {
			out = append(out, m)
		}
	}
	if out == nil {
		return msgs, 0
	}
	return out, dropped
}

// repeatLocked reports whether m repeats a message queued to the
// connection, and otherwise records its seq; cn.seenMu is held.
func (cn *conn) repeatLocked(m *clientpb.Message) bool {
	conv, seq := m.GetConversation(), m.GetSeq()
	if seq == 0 {
		return false
	}
	last, ok := cn.seen[conv]
	if ok && seq <= last {
		return true
	}
	if cn.seen == nil {
		cn.seen = make(map[string]uint64, 1)
	}
	if !ok && len(cn.seen) >= maxSeen {
		for c := range cn.seen { // forget one, any one
			delete(cn.seen, c)
			break
		}
	}
	cn.seen[conv] = seq
	return false
}

// checkDeadlines kicks the connection if it is past its login or idle
// deadline at now.
func (cn *conn) checkDeadlines(now time.Time) {
	cn.answerOverdue(now)
	c := cn.comet
	age := now.Sub(cn.start)
	if time.Duration(cn.lastRead.Load())+c.cfg.IdleTimeout <= age {
		cn.kick(websocket.StatusPolicyViolation, "idle timeout", false)
		return
	}
	if !cn.authed.Load() && age >= c.cfg.LoginTimeout {
		cn.kick(websocket.StatusPolicyViolation, "login timeout", false)
	}
}

// read serves the client's frames until the connection ends, then
// unregisters it and releases the reader's count of the comet's
// WaitGroup; or until the client has sent nothing more for now, when
// the connection is parked (park.go), keeps the count, and read runs
// again, in a new goroutine, once the client sends something.
func (cn *conn) read(resumed bool) {
	if cn.readFrames(resumed) {
		return
	}
	cn.kick(websocket.StatusNormalClosure, "", false)
	cn.comet.unregister(cn)
	cn.comet.wg.Done()
}

// readFrames serves the client's frames. It reports true if it parked
// the connection, false when the connection ended. A reader resumed from
// parking reads at once: what woke it is to be read.
func (cn *conn) readFrames(resumed bool) (parked bool) {
	c := cn.comet
	for ; ; resumed = false {
		if !resumed && cn.park() {
			return true
		}
		typ, data, err := cn.ws.Read(c.ctx)
		if errors.Is(err, websocket.ErrMessageTooBig) {
			// The library has sent the 1009 close frame. Do not wait for
			// the client's answer while reading on: a client flooding big
			// frames would be read, and paid for, for seconds.
			c.strike(cn.strikes)
			cn.ws.CloseNow()
			return false
		}
		if errors.Is(err, errFrameFlood) {
			// Fragments past their budget (of a message that does not
			// end, say): closed as a flood of requests is.
			c.rateLimited.Add(1)
			c.mu.RLock()
			user := cn.user
			c.mu.RUnlock()
			cn.closeOverLimit("its budget of fragments", user, false)
			return false
		}
		if err != nil {
			if protocolError(err) {
				// The library sends no close frame for some of these (an
				// unmasked frame, a bad length): 1002, not 1000.
				c.logger.Debug("websocket protocol error", "conn", cn.id, "err", err)
				cn.kick(websocket.StatusProtocolError, "protocol error", false)
			}
			return false
		}
		cn.lastRead.Store(int64(time.Since(cn.start)))
		f, req, err := decodeFrame(typ == websocket.MessageText, data)
		if err != nil {
			// An undecodable frame costs its sender a request like any
			// other, and is answered under its request id if it has one.
			c.mu.RLock()
			user := cn.user
			c.mu.RUnlock()
			if cn.allow(req, user, false) {
				cn.fail(req, clientpb.Error_BAD_FRAME, "undecodable frame: "+err.Error())
			}
			continue
		}
		cn.serve(f)
	}
}

// protocolError reports whether err, from reading a client's frame, is
// the client breaking the WebSocket protocol rather than the connection
// ending: not a close frame received, the end of the stream, a reset, a
// closed socket, a deadline or the comet's context.
func protocolError(err error) bool {
	if websocket.CloseStatus(err) != -1 {
		return false
	}
	for _, end := range []error{io.EOF, io.ErrUnexpectedEOF, net.ErrClosed, os.ErrDeadlineExceeded,
		context.Canceled, context.DeadlineExceeded, syscall.ECONNRESET, syscall.EPIPE} {
		if errors.Is(err, end) {
			return false
		}
	}
	return true
}

// decodeFrame decodes one client WebSocket message: a text message as
// JSON (protojson), any other as protobuf, refusing what protobuf would
// settle but docs/protocol.md does not allow (checkWire). A frame that
// does not decode returns its error and the request id it carries, if
// that much of it can be read (requestID), so that the client's request
// gets its answer.
func decodeFrame(text bool, data []byte) (*clientpb.ClientFrame, uint64, error) {
	var f clientpb.ClientFrame
	var err error
	if text {
		err = unmarshalJSON.Unmarshal(data, &f)
	} else if err = proto.Unmarshal(data, &f); err == nil {
		err = checkWire(clientFrameDescriptor, data)
	}
	if err != nil {
		return nil, requestID(text, data), err
	}
	return &f, f.GetRequestId(), nil
}

// clientFrameDescriptor describes the frames checkWire checks.
var clientFrameDescriptor = (&clientpb.ClientFrame{}).ProtoReflect().Descriptor()

// requestID reads a frame's request_id without decoding the rest of it:
// the first field 1 of a protobuf frame, or the first "requestId" (or
// "request_id") member of a JSON object, as a number or a decimal
// string. Either is read up to where the frame breaks, so a frame cut
// short or broken after its id still has it. It returns 0 when the frame
// holds none that can be read.
func requestID(text bool, data []byte) uint64 {
	if text {
		return jsonRequestID(data)
	}
	for len(data) > 0 {
		num, typ, n := protowire.ConsumeTag(data)
		if n < 0 {
			return 0
		}
		data = data[n:]
		if num == 1 && typ == protowire.VarintType {
			id, n := protowire.ConsumeVarint(data)
			if n < 0 {
				return 0
			}
			return id
		}
		if n = protowire.ConsumeFieldValue(num, typ, data); n < 0 {
			return 0
		}
		data = data[n:]
	}
	return 0
}

// jsonRequestID is requestID of a JSON frame: it reads the object's
// members in turn until one is the request id, a value does not parse or
// the object ends.
func jsonRequestID(data []byte) uint64 {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	if t, err := dec.Token(); err != nil || t != json.Delim('{') {
		return 0
	}
	for dec.More() {
		key, err := dec.Token()
		if err != nil {
			return 0
		}
		var v any
		if err := dec.Decode(&v); err != nil {
			return 0
		}
		if key != "requestId" && key != "request_id" {
			continue
		}
		var num string
		switch v := v.(type) {
		case string: // protojson writes 64-bit integers as strings
			num = v
		case json.Number:
			num = v.String()
		default:
			return 0
		}
		id, err := strconv.ParseUint(num, 10, 64)
		if err != nil {
			return 0
		}
		return id
	}
	return 0
}

func (cn *conn) reply(f *clientpb.ServerFrame) { cn.enqueue(newFrame(f)) }

func (cn *conn) fail(req uint64, code clientpb.Error_Code, text string) {
	cn.reply(topics.ErrorFrame(req, code, strings.ToValidUTF8(text, "?")))
}

// serve handles one client frame.
func (cn *conn) serve(f *clientpb.ClientFrame) {
	c := cn.comet
	req := f.GetRequestId()
	c.mu.RLock()
	user := cn.user
	c.mu.RUnlock()
	_, send := f.GetBody().(*clientpb.ClientFrame_Send)
	if !cn.allow(req, user, send) {
		return
	}
	switch b := f.GetBody().(type) {
	case nil:
		cn.fail(req, clientpb.Error_BAD_FRAME, "frame has no body")
		return
	case *clientpb.ClientFrame_Ping:
		cn.reply(&clientpb.ServerFrame{RequestId: req, Body: &clientpb.ServerFrame_Pong{Pong: &clientpb.Pong{
			ClientTimeUnixMs: b.Ping.GetClientTimeUnixMs(), ServerTimeUnixMs: time.Now().UnixMilli(),
		}}})
		return
	case *clientpb.ClientFrame_Login:
		if user != "" {
			cn.fail(req, clientpb.Error_ALREADY_LOGGED_IN, "already logged in as "+user)
			return
		}
		if len(b.Login.GetToken()) > c.cfg.MaxTokenBytes {
			cn.refuse(req, clientpb.Error_BAD_TOKEN, fmt.Sprintf("token of %d bytes exceeds %d", len(b.Login.GetToken()), c.cfg.MaxTokenBytes))
			return
		}
		if !cn.checkFields(req, field{"device", b.Login.GetDevice(), maxDeviceBytes}) {
			return
		}
		join, ok := cn.loginJoins(req, b.Login.GetJoin())
		if !ok {
			return
		}
		claims, ok := cn.verify(req, b.Login.GetToken())
		if !ok || !cn.allowLogin(req, claims.User) || !cn.startLogin(req) {
			return
		}
		if b.Login.GetCompactBatches() {
			cn.compact.Store(true)
		}
		if !cn.expect(req) {
			cn.loginDone(req)
			return
		}
		// Only the verified claims go to the login worker: no bearer
		// token is readable from login.requests.
		received, deadline := c.deadline()
		if req == 0 {
			deadline = 0 // nothing answers it UNAVAILABLE: never dropped
		}
		msg, err := topics.LoginRequests.Encode(&topicpb.LoginRequest{
			Session: c.session(cn), RequestId: req, User: claims.User, TokenExpiresUnixMs: claims.Expires.UnixMilli(),
			Device: b.Login.GetDevice(), ReceivedUnixMs: received, DeadlineUnixMs: deadline, Join: join,
		})
		if err == nil {
			err = c.publishRequest(topics.LoginRequests.Name, msg)
		}
		if err != nil {
			c.logger.Warn("publish login request", "conn", cn.id, "err", err)
			cn.loginDone(req)
			if cn.answered(req) {
				cn.fail(req, clientpb.Error_UNAVAILABLE, "login unavailable, retry")
			}
		}
		return
	}
	if user == "" {
		cn.fail(req, clientpb.Error_UNAUTHENTICATED, "log in first")
		return
	}
	switch b := f.GetBody().(type) {
	case *clientpb.ClientFrame_Join:
		if !cn.checkRoom(req, "join", b.Join.GetRoom()) {
			return
		}
		if !cn.expect(req) {
			return
		}
		ev := &topicpb.SessionEvent{Kind: topicpb.SessionEvent_JOINED, Session: c.session(cn), User: user, Room: b.Join.GetRoom(), RequestId: req, TimeUnixMs: time.Now().UnixMilli()}
		if c.publishEvent(ev) != nil {
			if cn.answered(req) {
				cn.fail(req, clientpb.Error_UNAVAILABLE, "join unavailable, retry")
			}
		}
	case *clientpb.ClientFrame_Leave:
		room := b.Leave.GetRoom()
		if !cn.checkRoom(req, "leave", room) {
			return
		}
		c.mu.Lock()
		c.leaveLocked(cn, room)
		c.mu.Unlock()
		cn.reply(&clientpb.ServerFrame{RequestId: req, Body: &clientpb.ServerFrame_Left{Left: &clientpb.Left{Room: room}}})
		// The connection left locally in any case; should the event be
		// lost, presence keeps routing the room here and the comet drops
		// those messages, until the session closes.
		_ = c.publishEvent(&topicpb.SessionEvent{Kind: topicpb.SessionEvent_LEFT, Session: c.session(cn), User: user, Room: room, RequestId: req, TimeUnixMs: time.Now().UnixMilli()})
	case *clientpb.ClientFrame_Send:
		cn.submit(req, user, b.Send)
	case *clientpb.ClientFrame_Ack:
		conv := b.Ack.GetConversation()
		if conv == "" {
			cn.fail(req, clientpb.Error_INVALID, "ack needs a conversation")
			return
		}
		if !cn.checkFields(req, field{"conversation", conv, maxConversationBytes}) {
			return
		}
		cn.history(req, &topicpb.HistoryRequest{Session: c.session(cn), RequestId: req, User: user, Ack: b.Ack})
	case *clientpb.ClientFrame_Typing:
		cn.typing(req, user, b.Typing)
	case *clientpb.ClientFrame_Sync:
		cn.sync(req, user, b.Sync)
	case *clientpb.ClientFrame_Conversations:
		if !cn.checkFields(req, field{"cursor", b.Conversations.GetCursor(), maxCursorBytes}) {
			return
		}
		cn.history(req, &topicpb.HistoryRequest{Session: c.session(cn), RequestId: req, User: user, Conversations: b.Conversations})
	default:
		cn.fail(req, clientpb.Error_BAD_FRAME, "unknown frame type")
	}
}

// loginJoins checks a Login's join list: at most MaxLoginJoins rooms,
// none empty, each within the cap of a JoinRoom's room. It returns the
// list without repeats, in its order, or answers INVALID and reports
// false.
func (cn *conn) loginJoins(req uint64, rooms []string) ([]string, bool) {
	if len(rooms) > MaxLoginJoins {
		cn.refuse(req, clientpb.Error_INVALID, fmt.Sprintf("login joins %d rooms, more than %d", len(rooms), MaxLoginJoins))
		return nil, false
	}
	out := make([]string, 0, len(rooms))
	for _, r := range rooms {
		// A room id breaking the id rule is refused in the LoginResult's
		// join_refused (INVALID, by presence), not with the whole login:
		// a client reconnecting with one bad room in its list still logs in.
		if !cn.roomGiven(req, "join", r) {
			return nil, false
		}
		if !slices.Contains(out, r) {
			out = append(out, r)
		}
	}
	return out, true
}

// verify checks a Login's token (package auth) and its subject (the id
// rule of package topics). It reports false, having answered BAD_TOKEN
// ("token expired", "invalid token", or a subject no user can have), when
// the token is refused; the token is never logged.
func (cn *conn) verify(req uint64, token string) (auth.Claims, bool) {
	c := cn.comet
	claims, err := auth.Verify([]byte(c.cfg.Secret), token, time.Now(), c.cfg.Token)
	if err != nil {
		c.badTokens.Add(1)
		c.logger.Debug("login refused", "conn", cn.id, "expired", errors.Is(err, auth.ErrTokenExpired), "err", err)
		text := "invalid token"
		if errors.Is(err, auth.ErrTokenExpired) {
			text = "token expired"
		}
		cn.fail(req, clientpb.Error_BAD_TOKEN, text)
		return auth.Claims{}, false
	}
	if err := topics.CheckID("user", claims.User); err != nil {
		c.badTokens.Add(1)
		c.logger.Debug("login refused", "conn", cn.id, "err", err)
		cn.fail(req, clientpb.Error_BAD_TOKEN, "token subject is not a valid user id")
		return auth.Claims{}, false
	}
	return claims, true
}

// submit publishes a Send as a Submitted message.
func (cn *conn) submit(req uint64, user string, s *clientpb.Send) {
	c := cn.comet
	sub := &topicpb.Submitted{
		Origin: c.session(cn), RequestId: req, Sender: user, ClientMsgId: s.GetClientMsgId(),
		Body: s.GetBody(), ContentType: s.GetContentType(), SubmittedUnixMs: time.Now().UnixMilli(),
		Edits: s.GetEdits(), Recalls: s.GetRecalls(), Mentions: s.GetMentions(),
	}
	switch to := s.GetTo().(type) {
	case *clientpb.Send_Room:
		if to.Room != "" {
			sub.To = &topicpb.Submitted_Room{Room: to.Room}
		}
	case *clientpb.Send_User:
		if to.User != "" {
			sub.To = &topicpb.Submitted_User{User: to.User}
		}
	}
	if sub.To == nil || s.GetClientMsgId() == "" {
		cn.fail(req, clientpb.Error_INVALID, "send needs a client_msg_id and a user or room")
		return
	}
	if !cn.checkFields(req,
		field{"client_msg_id", s.GetClientMsgId(), maxClientMsgIDBytes},
		field{"content_type", s.GetContentType(), maxContentTypeBytes},
		field{"room", s.GetRoom(), maxRoomBytes},
		field{"user", s.GetUser(), maxRoomBytes},
		field{"edits", s.GetEdits(), maxClientMsgIDBytes},
		field{"recalls", s.GetRecalls(), maxClientMsgIDBytes},
	) {
		return
	}
	if !cn.expect(req) {
		return
	}
	msg, err := topics.Submitted.Encode(sub)
	if err == nil {
		err = c.publishRequest(topics.Submitted.Name, msg)
	}
	if err != nil {
		c.logger.Warn("publish submitted message", "conn", cn.id, "err", err)
		if cn.answered(req) {
			cn.fail(req, clientpb.Error_UNAVAILABLE, "send unavailable, retry with the same client_msg_id")
		}
	}
}

// typingEvery is how often a connection may say it is typing in one
// conversation; more Typing frames are dropped.
const typingEvery = time.Second

// maxTyping bounds the conversations a connection remembers Typing in.
const maxTyping = 64

// typing forwards a Typing to the history worker, which relays it, unless
// the connection sent one for the conversation less than typingEvery
// ago: that one is dropped silently. It is never answered but for a
// missing or oversized conversation (INVALID).
func (cn *conn) typing(req uint64, user string, t *clientpb.Typing) {
	c := cn.comet
	conv := t.GetConversation()
	if conv == "" {
		cn.fail(req, clientpb.Error_INVALID, "typing needs a conversation")
		return
	}
	if !cn.checkFields(req, field{"conversation", conv, maxConversationBytes}) {
		return
	}
	now := time.Now()
	if last, ok := cn.typed[conv]; ok && now.Sub(last) < typingEvery {
		return
	}
	if cn.typed == nil || len(cn.typed) >= maxTyping {
		cn.typed = make(map[string]time.Time, 1)
	}
	cn.typed[conv] = now
	msg, err := topics.HistoryRequests.Encode(&topicpb.HistoryRequest{Session: c.session(cn), User: user, Typing: t})
	if err == nil {
		err = c.publishRequest(topics.HistoryRequests.Name, msg)
	}
	if err != nil {
		c.logger.Debug("publish typing", "conn", cn.id, "err", err)
	}
}

// sync answers a catch-up request from a room's recent messages when it
// can (recent.go), and otherwise forwards it to the history worker, which
// answers on this comet's delivery topic.
func (cn *conn) sync(req uint64, user string, s *clientpb.Sync) {
	c := cn.comet
	if s.GetConversation() == "" {
		cn.fail(req, clientpb.Error_INVALID, "sync needs a conversation")
		return
	}
	if !cn.checkFields(req, field{"conversation", s.GetConversation(), maxConversationBytes}) {
		return
	}
	if cn.syncRecent(req, s) {
		return
	}
	cn.history(req, &topicpb.HistoryRequest{
		Session: c.session(cn), RequestId: req, User: user,
		Conversation: s.GetConversation(), AfterSeq: s.GetAfterSeq(), Limit: s.GetLimit(),
		CurrentState: s.GetCurrentState(),
	})
}

// history forwards a Sync or Conversations request to the history
// worker, which answers on this comet's delivery topic.
func (cn *conn) history(req uint64, r *topicpb.HistoryRequest) {
	c := cn.comet
	if !cn.expect(req) {
		return
	}
	if r.GetAck() == nil && !cn.startRead(req) {
		return
	}
	if req != 0 {
		// Nothing waits for the answer to a request without an id (an
		// Ack sent with 0): it has no deadline, and is never dropped.
		r.ReceivedUnixMs, r.DeadlineUnixMs = c.deadline()
	}
	msg, err := topics.HistoryRequests.Encode(r)
	if err == nil {
		err = c.publishRequest(topics.HistoryRequests.Name, msg)
	}
	if err != nil {
		c.logger.Warn("publish history request", "err", err)
		if cn.answered(req) {
			cn.fail(req, clientpb.Error_UNAVAILABLE, "history unavailable, retry")
		}
	}
}

// closeReason fits s into a close frame (123 bytes) without splitting a
// UTF-8 sequence.
func closeReason(s string) string {
	const max = 123
	s = strings.ToValidUTF8(s, "?")
	if len(s) <= max {
		return s
	}
	s = s[:max]
	for len(s) > 0 && !utf8.ValidString(s) {
		s = s[:len(s)-1]
	}
	return s
}
