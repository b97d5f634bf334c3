package client

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/laneim/laneim/proto/clientpb"
)

// Config configures a Client.
type Config struct {
	// URL is the comet's WebSocket URL (ws://host:port/ws). It is used when
	// Pick is nil or fails.
	URL string
	// Pick, if set, chooses the URL of each connection attempt, for
	// example by asking the api gateway's PickComet, so that a client
	// whose comet went away reconnects to another one.
	Pick func(ctx context.Context) (string, error)
	// Token returns the login token of each connection attempt; it is
	// called again for every reconnect, so it may refresh the token.
	Token func(ctx context.Context) (string, error)
	// Device is the Login device label ("go" when empty).
	Device string
	// Options are those of each connection (Peek is not supported).
	Options Options
	// Positions seeds the last seq the application holds per
	// conversation: after (re)connecting the Client syncs what follows.
	// Without a position, a conversation is taken at its latest seq on
	// the first login (its past is history, not news), and caught up from
	// its start when it first appears on a reconnect (it began while the
	// client was away). A room's conversation is followed only while the
	// room is joined (see Join).
	Positions map[string]uint64
	// Rooms are joined from the first login on, in the Login itself
	// (Login.join, at most 100; the others right after it), and kept
	// joined as Join keeps a room. A room refused (not a member, no such
	// room) is reported as a Left event and forgotten.
	Rooms []string
	// PingInterval is the time between Pings (default 20 s; the server
	// closes a connection silent for 60 s).
	PingInterval time.Duration
	// RequestTimeout bounds each request, Pings and catch-up included
	// (default 10 s).
	RequestTimeout time.Duration
	// MinBackoff and MaxBackoff bound the wait between connection
	// attempts (defaults 250 ms and 30 s): it doubles from MinBackoff
	// after each failed attempt, with jitter, up to MaxBackoff.
	MinBackoff, MaxBackoff time.Duration
	// EventBuffer is the capacity of Events (default 256).
	EventBuffer int
}

func (c *Config) setDefaults() {
	if c.Device == "" {
		c.Device = "go"
	}
	if c.PingInterval <= 0 {
		c.PingInterval = 20 * time.Second
	}
	if c.RequestTimeout <= 0 {
		c.RequestTimeout = 10 * time.Second
	}
	if c.MinBackoff <= 0 {
		c.MinBackoff = 250 * time.Millisecond
	}
	if c.MaxBackoff < c.MinBackoff {
		c.MaxBackoff = max(30*time.Second, c.MinBackoff)
	}
	if c.EventBuffer <= 0 {
		c.EventBuffer = 256
	}
	c.Options.Peek = nil
}

// EventKind says what an Event reports.
type EventKind int

// Event kinds.
const (
	// Connected: a connection is logged in, its rooms joined again;
	// Event.Login is the LoginResult and Event.Reconnect tells whether
	// an earlier connection existed. Caught-up messages follow.
	Connected EventKind = iota + 1
	// Disconnected: the connection ended or an attempt failed
	// (Event.Err says why); the Client tries again after a backoff.
	Disconnected
	// Messages: new messages of one conversation, in seq order, none
	// delivered before (Event.Messages); Event.CatchUp is true for
	// messages fetched with Sync after a (re)connect or a gap.
	Messages
	// Presence: a member of a joined room came or went (Event.Presence).
	Presence
	// Left: the server took the connection out of a room on its own
	// (Event.Room); the Client no longer joins it.
	Left
	// ServerError: an Error frame answering no request, or a failed
	// catch-up or rejoin (Event.Err).
	ServerError
	// Read: a read position moved (Event.Read): the user's own, read on
	// another device, or the other party's (a read receipt).
	Read
	// Typing: someone is typing in a conversation (Event.Typing); show
	// it for about 5 s unless another comes (docs/protocol.md).
	Typing
)

func (k EventKind) String() string {
	switch k {
	case Connected:
		return "connected"
	case Disconnected:
		return "disconnected"
	case Messages:
		return "messages"
	case Presence:
		return "presence"
	case Left:
		return "left"
	case ServerError:
		return "error"
	case Read:
		return "read"
	case Typing:
		return "typing"
	}
	return fmt.Sprintf("EventKind(%d)", int(k))
}

// Event is something a Client reports.
type Event struct {
	Kind      EventKind
	Login     *clientpb.LoginResult // Connected
	Reconnect bool                  // Connected
	Messages  []*clientpb.Message   // Messages
	CatchUp   bool                  // Messages
	Presence  *clientpb.PresenceChange
	Room      string // Left
	Err       error  // Disconnected, ServerError
	// Final (Disconnected) says that the Client gives up: a login was
	// refused for good (see refusedForGood). Err holds the *Error; the
	// Client has stopped, as after Close, and Events is closed after this
	// event.
	Final  bool
	Read   *clientpb.ReadUpdate   // Read
	Typing *clientpb.TypingUpdate // Typing
}

// ErrClosed is returned by a Client's requests after Close, and after the
// Client gave up (Event.Final).
var ErrClosed = errors.New("client: closed")

// Client is a connection that stays up: see the package documentation.
// Its methods are safe for concurrent use. Its one goroutine (and the
// goroutines of its current connection) run from New until Close.
type Client struct {
	cfg    Config
	events chan Event
	ctx    context.Context
	cancel context.CancelFunc
	done   chan struct{}

	// behind takes conversations to catch up on the current connection
	// (a room joined with a position behind its latest seq).
	behind chan string

	mu        sync.Mutex
	conn      *Conn         // nil while disconnected
	up        chan struct{} // closed while conn is set
	rooms     map[string]bool
	known     map[string]uint64
	connected bool // a login succeeded once
}

// New starts a Client: it connects in the background and reports on
// Events. Events must be drained: a Client waits for its reader, and the
// server closes a connection whose frames are not read (the Client then
// reconnects and catches up).
func New(cfg Config) (*Client, error) {
	if cfg.URL == "" && cfg.Pick == nil {
		return nil, errors.New("client: no URL and no Pick")
	}
	if cfg.Token == nil {
		return nil, errors.New("client: no Token")
	}
	cfg.setDefaults()
	ctx, cancel := context.WithCancel(context.Background())
	c := &Client{
		cfg: cfg, events: make(chan Event, cfg.EventBuffer),
		ctx: ctx, cancel: cancel, done: make(chan struct{}),
		up: make(chan struct{}), rooms: map[string]bool{}, behind: make(chan string, 64),
		known: maps.Clone(cfg.Positions),
	}
	if c.known == nil {
		c.known = map[string]uint64{}
	}
	for _, r := range cfg.Rooms {
		c.rooms[r] = true
	}
	go c.run()
	return c, nil
}

// Events reports what happens, in order. It is closed by Close.
func (c *Client) Events() <-chan Event { return c.events }

// Close stops the Client: the connection is closed and every goroutine
// ended before it returns.
func (c *Client) Close() error {
	c.cancel()
	<-c.done
	return nil
}

// Positions returns the last seq delivered per conversation, for an
// application that keeps them across runs (see Config.Positions).
func (c *Client) Positions() map[string]uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return maps.Clone(c.known)
}

// Rooms returns the rooms the Client is in, sorted.
func (c *Client) Rooms() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Sorted(maps.Keys(c.rooms))
}

// Conn waits for a logged-in connection, within ctx. The connection may
// end at any time; the Client then makes another.
func (c *Client) Conn(ctx context.Context) (*Conn, error) {
	for {
		c.mu.Lock()
		conn, up := c.conn, c.up
		c.mu.Unlock()
		if conn != nil {
			return conn, nil
		}
		select {
		case <-up:
		case <-ctx.Done():
			return nil, fmt.Errorf("client: not connected: %w", ctx.Err())
		case <-c.ctx.Done():
			return nil, ErrClosed
		}
	}
}

// do sends a request on the current connection, waiting for one within
// the request timeout.
// A request answered RATE_LIMITED is sent again after the wait the
// answer gives, as docs/protocol.md asks, up to maxRateLimited times,
// each within Config.RequestTimeout.
func (c *Client) do(ctx context.Context, f *clientpb.ClientFrame) (*clientpb.ServerFrame, error) {
	for attempt := 1; ; attempt++ {
		res, err := c.doOnce(ctx, f)
		var e *Error
		if attempt == maxRateLimited || !errors.As(err, &e) || e.Code != clientpb.Error_RATE_LIMITED {
			return res, err
		}
		t := time.NewTimer(min(max(e.RetryAfter, time.Millisecond), 10*time.Second))
		select {
		case <-ctx.Done():
			t.Stop()
			return res, err
		case <-t.C:
		}
	}
}

// maxRateLimited bounds the times Client sends a request answered
// RATE_LIMITED.
const maxRateLimited = 10

// maxShedRetries bounds the times in a row catchUp asks again for a page
// refused UNAVAILABLE with a retry_after_ms: the server says when to
// come back, and a crowd catching up after an outage may wait minutes
// for its turn.
const maxShedRetries = 300

func (c *Client) doOnce(ctx context.Context, f *clientpb.ClientFrame) (*clientpb.ServerFrame, error) {
	ctx, cancel := context.WithTimeout(ctx, c.cfg.RequestTimeout)
	defer cancel()
	conn, err := c.Conn(ctx)
	if err != nil {
		return nil, err
	}
	return conn.Do(ctx, f)
}

// Join joins a room and keeps it joined across reconnects. Messages of
// the room after its position are reported: with a position (from
// Config.Positions or an earlier join) what came since is caught up;
// without one, the position is the room's latest seq at the join, and
// earlier messages are history (see Sync).
func (c *Client) Join(ctx context.Context, room string) (*clientpb.Joined, error) {
	res, err := c.do(ctx, &clientpb.ClientFrame{Body: &clientpb.ClientFrame_Join{Join: &clientpb.JoinRoom{Room: room}}})
	if err != nil {
		return nil, err
	}
	j := res.GetJoined()
	conv := j.GetConversation()
	c.mu.Lock()
	c.rooms[room] = true
	k, ok := c.known[conv]
	if !ok || aheadOfServer(k, j.GetLatestSeq()) {
		c.known[conv] = j.GetLatestSeq()
	}
	c.mu.Unlock()
	if ok && k < j.GetLatestSeq() {
		select {
		case c.behind <- conv:
		default: // many joins at once: the next live message fills the gap
		}
	}
	return j, nil
}

// Leave leaves a room; it is no longer joined on reconnects, and its
// position is forgotten.
func (c *Client) Leave(ctx context.Context, room string) error {
	c.mu.Lock()
	delete(c.rooms, room)
	delete(c.known, "room:"+room)
	c.mu.Unlock()
	_, err := c.do(ctx, &clientpb.ClientFrame{Body: &clientpb.ClientFrame_Leave{Leave: &clientpb.LeaveRoom{Room: room}}})
	return err
}

// Send submits a message. A failed Send may be retried with the same
// ClientMsgId: the server gives it the same seq if it went through.
func (c *Client) Send(ctx context.Context, s *clientpb.Send) (*clientpb.SendResult, error) {
	res, err := c.do(ctx, &clientpb.ClientFrame{Body: &clientpb.ClientFrame_Send{Send: s}})
	if err != nil {
		return nil, err
	}
	return res.GetSendResult(), nil
}

// SendRoom sends a text message to a room.
func (c *Client) SendRoom(ctx context.Context, room string, body []byte) (*clientpb.SendResult, error) {
	return c.Send(ctx, &clientpb.Send{ClientMsgId: NewClientMsgID(), To: &clientpb.Send_Room{Room: room}, Body: body, ContentType: "text/plain"})
}

// SendUser sends a text message to a user.
// Ack records that the user has read conversation up to seq; the answer
// is the position now stored (it never goes back). The user's other
// devices, and in a 1:1 conversation the other party, get it as a Read
// event.
func (c *Client) Ack(ctx context.Context, conversation string, seq uint64) (*clientpb.ReadUpdate, error) {
	res, err := c.do(ctx, &clientpb.ClientFrame{Body: &clientpb.ClientFrame_Ack{Ack: &clientpb.Ack{Conversation: conversation, Seq: seq}}})
	if err != nil {
		return nil, err
	}
	return res.GetReadUpdate(), nil
}

// Typing tells conversation's other members that the user is typing.
// It is not answered (unless refused) and not stored; the server relays
// at most one a second per conversation.
func (c *Client) Typing(ctx context.Context, conversation string) error {
	ctx, cancel := context.WithTimeout(ctx, c.cfg.RequestTimeout)
	defer cancel()
	conn, err := c.Conn(ctx)
	if err != nil {
		return err
	}
	return conn.Write(ctx, &clientpb.ClientFrame{Body: &clientpb.ClientFrame_Typing{Typing: &clientpb.Typing{Conversation: conversation}}})
}

// Edit replaces the body of the user's own message clientMsgID, sent to
// the same room or user as to says, with body: a new message of the
// conversation whose Edits names the edited message's seq. Refused
// TOO_LATE after the server's edit window.
func (c *Client) Edit(ctx context.Context, s *clientpb.Send, clientMsgID string) (*clientpb.SendResult, error) {
	s.Edits = clientMsgID
	if s.ClientMsgId == "" {
		s.ClientMsgId = NewClientMsgID()
	}
	return c.Send(ctx, s)
}

// Recall deletes the user's own message clientMsgID for everyone: a new
// message of the conversation whose Recalls names its seq. to is the
// room or user the message went to. Refused TOO_LATE after the server's
// recall window.
func (c *Client) Recall(ctx context.Context, to *clientpb.Send, clientMsgID string) (*clientpb.SendResult, error) {
	to.Recalls = clientMsgID
	if to.ClientMsgId == "" {
		to.ClientMsgId = NewClientMsgID()
	}
	return c.Send(ctx, to)
}

func (c *Client) SendUser(ctx context.Context, user string, body []byte) (*clientpb.SendResult, error) {
	return c.Send(ctx, &clientpb.Send{ClientMsgId: NewClientMsgID(), To: &clientpb.Send_User{User: user}, Body: body, ContentType: "text/plain"})
}

// Sync returns one page of a conversation's stored messages after seq
// after (see Conn.Sync). It does not report them as Events: it is for
// showing history.
func (c *Client) Sync(ctx context.Context, conversation string, after uint64, limit uint32) (*clientpb.SyncResult, error) {
	return c.SyncWith(ctx, &clientpb.Sync{Conversation: conversation, AfterSeq: after, Limit: limit})
}

// SyncCurrent is Sync asking for the messages as they are now (see
// Conn.SyncCurrent).
func (c *Client) SyncCurrent(ctx context.Context, conversation string, after uint64, limit uint32) (*clientpb.SyncResult, error) {
	return c.SyncWith(ctx, &clientpb.Sync{Conversation: conversation, AfterSeq: after, Limit: limit, CurrentState: true})
}

// SyncWith sends s and returns its SyncResult (see Sync).
func (c *Client) SyncWith(ctx context.Context, s *clientpb.Sync) (*clientpb.SyncResult, error) {
	res, err := c.do(ctx, &clientpb.ClientFrame{Body: &clientpb.ClientFrame_Sync{Sync: s}})
	if err != nil {
		return nil, err
	}
	return res.GetSyncResult(), nil
}

// Conversations returns one page of the conversation list (see
// Conn.Conversations).
func (c *Client) Conversations(ctx context.Context, cursor string, limit uint32) (*clientpb.ConversationsResult, error) {
	res, err := c.do(ctx, &clientpb.ClientFrame{Body: &clientpb.ClientFrame_Conversations{Conversations: &clientpb.Conversations{Cursor: cursor, Limit: limit}}})
	if err != nil {
		return nil, err
	}
	return res.GetConversationsResult(), nil
}

// emit reports an event unless the Client is closing.
func (c *Client) emit(ev Event) bool {
	select {
	case c.events <- ev:
		return true
	case <-c.ctx.Done():
		return false
	}
}

// run connects, serves the connection until it ends, and again, until
// Close.
func (c *Client) run() {
	defer close(c.done)
	defer close(c.events)
	defer c.cancel()
	badTokens := 0 // logins refused BAD_TOKEN in a row
	for attempt := 0; ; attempt++ {
		conn, res, err := c.connect()
		final := false
		if err == nil {
			attempt, badTokens = 0, 0
			err = c.serve(conn, res)
		} else {
			final = refusedForGood(err, &badTokens)
		}
		if c.ctx.Err() != nil {
			return
		}
		if !c.emit(Event{Kind: Disconnected, Err: err, Final: final}) || final {
			return
		}
		select {
		case <-time.After(Backoff(attempt, c.cfg.MinBackoff, c.cfg.MaxBackoff)):
		case <-c.ctx.Done():
			return
		}
	}
}

// refusedForGood reports whether err, a failed login, would be refused
// the same way however often it is tried: UNKNOWN_USER (the account is
// disabled or deleted), or BAD_TOKEN twice in a row (Config.Token was
// asked again after the first and gave no better token). badTokens
// counts the BAD_TOKEN refusals in a row.
func refusedForGood(err error, badTokens *int) bool {
	var e *Error
	if !errors.As(err, &e) {
		*badTokens = 0
		return false
	}
	switch e.Code {
	case clientpb.Error_UNKNOWN_USER:
		return true
	case clientpb.Error_BAD_TOKEN:
		*badTokens++
		return *badTokens >= 2
	}
	*badTokens = 0
	return false
}

// Backoff returns the wait before connection attempt attempt+1 (attempt
// counts the failures so far, from 0): lo doubled attempt times, at most
// hi, less a random part of up to a half (jitter, so that clients cut off
// together do not come back together).
func Backoff(attempt int, lo, hi time.Duration) time.Duration {
	d := hi
	if attempt < 32 && lo<<attempt < hi && lo<<attempt > 0 {
		d = lo << attempt
	}
	return d/2 + rand.N(d/2+1)
}

// connect dials and logs in.
func (c *Client) connect() (*Conn, *clientpb.LoginResult, error) {
	ctx, cancel := context.WithTimeout(c.ctx, 2*c.cfg.RequestTimeout)
	defer cancel()
	url := c.cfg.URL
	if c.cfg.Pick != nil {
		u, err := c.cfg.Pick(ctx)
		switch {
		case err == nil:
			url = u
		case url == "":
			return nil, nil, fmt.Errorf("client: pick a comet: %w", err)
		}
	}
	tok, err := c.cfg.Token(ctx)
	if err != nil {
		return nil, nil, fmt.Errorf("client: token: %w", err)
	}
	conn, err := Dial(ctx, url, c.cfg.Options)
	if err != nil {
		return nil, nil, err
	}
	// The rooms joined so far are joined again with the login, in the
	// same round trip (serve joins any beyond loginJoins).
	c.mu.Lock()
	rooms := slices.Sorted(maps.Keys(c.rooms))
	c.mu.Unlock()
	res, err := conn.Login(ctx, tok, c.cfg.Device, rooms[:min(len(rooms), loginJoins)]...)
	if err != nil {
		conn.Close()
		return nil, nil, fmt.Errorf("client: login at %s: %w", url, err)
	}
	return conn, res, nil
}

// loginJoins is the most rooms a Login may join (docs/protocol.md).
const loginJoins = 100

// serve runs a logged-in connection until it ends: joins the rooms
// again, catches up, then reports what arrives while a goroutine pings.
func (c *Client) serve(conn *Conn, res *clientpb.LoginResult) error {
	defer conn.Close()
	var wg sync.WaitGroup
	defer wg.Wait()
	ctx, cancel := context.WithCancel(c.ctx)
	defer cancel()
	wg.Add(1)
	go func() {
		defer wg.Done()
		c.ping(ctx, conn)
	}()

	latest := map[string]uint64{}
	for _, st := range res.GetConversations() {
		latest[st.GetConversation()] = st.GetLatestSeq()
	}
	if err := c.moreConversations(ctx, conn, res, latest); err != nil {
		return err
	}
	c.mu.Lock()
	rooms := slices.Sorted(maps.Keys(c.rooms))
	reconnect := c.connected
	c.connected = true
	c.mu.Unlock()
	// The login joined rooms again (connect); the others are joined here.
	answered := map[string]error{}
	for _, j := range res.GetJoined() {
		answered[j.GetRoom()] = nil
		latest[j.GetConversation()] = max(latest[j.GetConversation()], j.GetLatestSeq())
	}
	for _, r := range res.GetJoinRefused() {
		answered[r.GetRoom()] = ErrorOf(r.GetError())
	}
	for _, room := range rooms {
		err, ok := answered[room]
		if !ok {
			rctx, rcancel := context.WithTimeout(ctx, c.cfg.RequestTimeout)
			var j *clientpb.Joined
			j, err = conn.Join(rctx, room)
			rcancel()
			if err == nil {
				latest[j.GetConversation()] = max(latest[j.GetConversation()], j.GetLatestSeq())
			}
		}
		var e *Error
		switch {
		case errors.As(err, &e) && (e.Code == clientpb.Error_NOT_MEMBER || e.Code == clientpb.Error_UNKNOWN_ROOM):
			c.mu.Lock()
			delete(c.rooms, room)
			c.mu.Unlock()
			c.emit(Event{Kind: Left, Room: room, Err: err})
		case err != nil:
			return fmt.Errorf("client: join %s again: %w", room, err)
		}
	}

	// Positions: a conversation new on the first login starts at its
	// latest seq; one new on a reconnect is caught up from its start;
	// one past the server's latest seq takes the server's, and a 1:1
	// conversation the server does not list (it lists every one the
	// user had) is forgotten: both come from another history.
	// Rooms count only while joined: others send nothing live.
	c.mu.Lock()
	for conv := range c.known {
		if _, listed := latest[conv]; !listed && strings.HasPrefix(conv, "dm:") {
			delete(c.known, conv)
		}
	}
	var behind []string
	for conv, seq := range latest {
		if room, ok := strings.CutPrefix(conv, "room:"); ok && !c.rooms[room] {
			continue
		}
		k, ok := c.known[conv]
		if !ok && !reconnect || aheadOfServer(k, seq) {
			c.known[conv] = seq
			continue
		}
		if seq > k {
			behind = append(behind, conv)
		}
	}
	c.conn = conn
	close(c.up)
	c.mu.Unlock()
	defer func() {
		c.mu.Lock()
		c.conn, c.up = nil, make(chan struct{})
		c.mu.Unlock()
	}()
	if !c.emit(Event{Kind: Connected, Login: res, Reconnect: reconnect}) {
		return ErrClosed
	}
	slices.Sort(behind)
	for _, conv := range behind {
		if err := c.catchUp(ctx, conn, conv, 0); err != nil {
			c.emit(Event{Kind: ServerError, Err: err})
		}
	}

	for {
		select {
		case <-ctx.Done():
			return ErrClosed
		case f, ok := <-conn.Frames():
			if !ok {
				return fmt.Errorf("client: connection ended: %w", conn.Err())
			}
			c.handle(ctx, conn, f)
		case conv := <-c.behind:
			if err := c.catchUp(ctx, conn, conv, 0); err != nil {
				c.emit(Event{Kind: ServerError, Err: err})
			}
		}
	}
}

// aheadOfServer reports whether a kept position k is past latest, the
// server's latest seq of its conversation. Seqs only grow in one
// history, so k comes from another one: the deployment was reset (its
// stores wiped) or is another deployment. The server's position is then
// the one to keep; with k, the new messages whose seqs are at most k
// would be dropped as repeats (docs/protocol.md, Conversations and
// order).
func aheadOfServer(k, latest uint64) bool { return k > latest }

// moreConversations pages through the conversation list after the
// LoginResult's first page, into latest.
func (c *Client) moreConversations(ctx context.Context, conn *Conn, res *clientpb.LoginResult, latest map[string]uint64) error {
	more, cursor := res.GetMoreConversations(), res.GetConversationsCursor()
	for page := 0; more && page < 10000; page++ {
		rctx, cancel := context.WithTimeout(ctx, c.cfg.RequestTimeout)
		r, err := conn.Conversations(rctx, cursor, 0)
		cancel()
		if err != nil {
			return fmt.Errorf("client: conversation list: %w", err)
		}
		for _, st := range r.GetConversations() {
			latest[st.GetConversation()] = st.GetLatestSeq()
		}
		more, cursor = r.GetHasMore(), r.GetNextCursor()
	}
	return nil
}

// handle reports one frame the server sent on its own.
func (c *Client) handle(ctx context.Context, conn *Conn, f *clientpb.ServerFrame) {
	switch b := f.GetBody().(type) {
	case *clientpb.ServerFrame_Messages:
		c.live(ctx, conn, b.Messages.GetMessages())
	case *clientpb.ServerFrame_Presence:
		c.emit(Event{Kind: Presence, Presence: b.Presence})
	case *clientpb.ServerFrame_Left:
		c.mu.Lock()
		delete(c.rooms, b.Left.GetRoom())
		c.mu.Unlock()
		c.emit(Event{Kind: Left, Room: b.Left.GetRoom()})
	case *clientpb.ServerFrame_Error:
		c.emit(Event{Kind: ServerError, Err: ErrorOf(b.Error)})
	case *clientpb.ServerFrame_ReadUpdate:
		c.emit(Event{Kind: Read, Read: b.ReadUpdate})
	case *clientpb.ServerFrame_Typing:
		c.emit(Event{Kind: Typing, Typing: b.Typing})
	}
}

// live reports a batch's new messages, conversation by conversation (a
// batch holds one, but a client need not rely on it).
func (c *Client) live(ctx context.Context, conn *Conn, msgs []*clientpb.Message) {
	for len(msgs) > 0 {
		conv := msgs[0].GetConversation()
		n := 1
		for n < len(msgs) && msgs[n].GetConversation() == conv {
			n++
		}
		c.liveRun(ctx, conn, conv, msgs[:n])
		msgs = msgs[n:]
	}
}

// liveRun reports new messages of conv; a gap before them is synced first.
func (c *Client) liveRun(ctx context.Context, conn *Conn, conv string, msgs []*clientpb.Message) {
	c.mu.Lock()
	k, ok := c.known[conv]
	c.mu.Unlock()
	if first := msgs[0].GetSeq(); ok && first > k+1 {
		if err := c.catchUp(ctx, conn, conv, first-1); err != nil {
			c.emit(Event{Kind: ServerError, Err: err})
		}
	}
	c.report(conv, msgs, false)
}

// report emits the messages of conv after the known position, and moves
// the position on.
func (c *Client) report(conv string, msgs []*clientpb.Message, catchUp bool) {
	c.mu.Lock()
	k, ok := c.known[conv]
	var fresh []*clientpb.Message
	for _, m := range msgs {
		if m.GetConversation() != conv || (ok && m.GetSeq() <= k) {
			continue
		}
		fresh = append(fresh, m)
		k, ok = m.GetSeq(), true
	}
	if len(fresh) > 0 {
		c.known[conv] = k
	}
	c.mu.Unlock()
	if len(fresh) > 0 {
		c.emit(Event{Kind: Messages, Messages: fresh, CatchUp: catchUp})
	}
}

// catchUp syncs conv from its known position, page after page, up to
// seq until (0: to the end), and reports what it finds. A page refused
// UNAVAILABLE with a retry_after_ms (a comet with too many catch-up
// reads waiting) is asked again after that wait, up to maxShedRetries
// times in a row.
func (c *Client) catchUp(ctx context.Context, conn *Conn, conv string, until uint64) error {
	shed := 0
	for page := 0; page < 10000; page++ {
		c.mu.Lock()
		after := c.known[conv]
		c.mu.Unlock()
		if until > 0 && after >= until {
			return nil
		}
		rctx, cancel := context.WithTimeout(ctx, c.cfg.RequestTimeout)
		res, err := conn.Sync(rctx, conv, after, 0)
		cancel()
		var e *Error
		if errors.As(err, &e) && e.Code == clientpb.Error_UNAVAILABLE && e.RetryAfter > 0 && shed < maxShedRetries {
			shed++
			t := time.NewTimer(min(e.RetryAfter, 10*time.Second))
			select {
			case <-ctx.Done():
				t.Stop()
				return ctx.Err()
			case <-t.C:
			}
			continue
		}
		if err != nil {
			return fmt.Errorf("client: catch up %s after %d: %w", conv, after, err)
		}
		shed = 0
		msgs := res.GetMessages()
		if until > 0 {
			i := slices.IndexFunc(msgs, func(m *clientpb.Message) bool { return m.GetSeq() > until })
			if i >= 0 {
				msgs = msgs[:i]
			}
		}
		c.report(conv, msgs, true)
		if !res.GetHasMore() || len(res.GetMessages()) == 0 {
			return nil
		}
	}
	return nil
}

// ping sends a Ping every PingInterval; a Ping left unanswered closes the
// connection, which makes the Client reconnect.
func (c *Client) ping(ctx context.Context, conn *Conn) {
	t := time.NewTicker(c.cfg.PingInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-conn.Done():
			return
		case <-t.C:
		}
		pctx, cancel := context.WithTimeout(ctx, c.cfg.RequestTimeout)
		_, err := conn.Ping(pctx)
		cancel()
		var e *Error
		if err != nil && !errors.As(err, &e) && ctx.Err() == nil {
			conn.Close()
			return
		}
	}
}
