package soak

import (
	"context"
	"fmt"
	"math/rand/v2"
	"strings"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/laneim/laneim/gateways/comet/client"
	"github.com/laneim/laneim/proto/clientpb"
	"github.com/laneim/laneim/wiring"
	"github.com/laneim/laneim/wiring/directory"
	"github.com/laneim/laneim/workers/login"
)

// member is one soak client: a room member sending to its room, or a
// 1:1 sender sending to its peer. Its connection is used by one goroutine
// at a time: the member's loop while the run sends, then verify.
type member struct {
	r          *run
	idx        int
	user       string
	room, peer string // one of them
	home       int    // index of its comet in Config.Targets
	token      string
	target     string // the comet of its connection

	conn    *client.Conn
	conv    string // its conversation, learned from its first SendResult
	lastSeq uint64
	nmsg    int
}

// plan names the run's clients: even ones are members of a room, odd
// ones send 1:1 to the next odd one; both kinds alternate between comets.
func plan(cfg *Config, runID string) []*member {
	user := func(i int) string { return fmt.Sprintf("soak-%s-%d", runID, i) }
	ms := make([]*member, cfg.Clients)
	for i := range ms {
		m := &member{idx: i, user: user(i), home: (i / 2) % len(cfg.Targets)}
		if i%2 == 0 {
			m.room = roomID(runID, (i/2)%cfg.Rooms)
		} else {
			j := i + 2
			if j >= cfg.Clients {
				j = 1
			}
			if j == i {
				j = 0
			}
			m.peer = user(j)
		}
		ms[i] = m
	}
	return ms
}

func roomID(runID string, k int) string { return fmt.Sprintf("soak-%s-room-%d", runID, k) }

// createDirectory writes the run's users, rooms and memberships into the
// directory, as `laneim bench --target` does, and mints the tokens.
func createDirectory(ctx context.Context, cfg *Config, runID string, ms []*member) error {
	rdb, err := wiring.NewRedis(ctx, wiring.RedisConfig{Addrs: strings.Split(cfg.Redis, ",")})
	if err != nil {
		return fmt.Errorf("soak: directory: %w", err)
	}
	defer rdb.Close()
	store := directory.New(rdb)
	for k := range cfg.Rooms {
		if err := store.PutRoom(ctx, directory.Room{ID: roomID(runID, k), Name: "soak", Kind: "group"}); err != nil {
			return fmt.Errorf("soak: room: %w", err)
		}
	}
	ttl := cfg.Duration + cfg.Drain + cfg.VerifyTimeout + time.Hour
	var g errgroup.Group
	g.SetLimit(32)
	for _, m := range ms {
		tok, err := login.MintToken([]byte(cfg.Secret), m.user, ttl)
		if err != nil {
			return fmt.Errorf("soak: token: %w", err)
		}
		m.token = tok
		g.Go(func() error {
			err := store.PutUser(ctx, directory.User{ID: m.user, Name: m.user})
			if err == nil && m.room != "" {
				err = store.AddMember(ctx, m.room, m.user)
			}
			if err != nil {
				return fmt.Errorf("soak: user %s: %w", m.user, err)
			}
			return nil
		})
	}
	return g.Wait()
}

// connectAll connects every member, DialConcurrency at a time; a member
// that cannot connect keeps a nil conn and tries again in its loop.
func connectAll(ctx context.Context, cfg *Config, ms []*member) {
	var g errgroup.Group
	g.SetLimit(cfg.DialConcurrency)
	for _, m := range ms {
		g.Go(func() error {
			rng := rand.New(rand.NewPCG(cfg.Seed, uint64(m.idx)+1<<32))
			_ = m.connect(ctx, rng)
			return nil
		})
	}
	_ = g.Wait()
}

// peekDiscard consumes, undecoded, the frames the server sends on its own
// that the soak does not look at: message batches and presence changes
// (ServerFrame fields 12 and 13 with no request id before them).
func peekDiscard(data []byte) bool {
	return len(data) > 0 && (data[0] == 12<<3|2 || data[0] == 13<<3|2)
}

// connect dials, logs in and joins, trying up to 30 times with backoff
// (100ms doubling to 5s), starting with the member's own comet and
// alternating.
func (m *member) connect(ctx context.Context, rng *rand.Rand) error {
	backoff := 100 * time.Millisecond
	var err error
	for attempt := range 30 {
		target := m.r.cfg.Targets[(m.home+attempt)%len(m.r.cfg.Targets)]
		if err = m.dialOnce(ctx, target); err == nil {
			return nil
		}
		if !sleep(ctx, jitter(rng, backoff)) {
			return ctx.Err()
		}
		backoff = min(2*backoff, 5*time.Second)
	}
	m.r.gaveUp.Add(1)
	m.r.progress.printf("soak: %s gave up connecting after 30 attempts: %v", m.user, err)
	return fmt.Errorf("soak: %s connects: %w", m.user, err)
}

// dialOnce makes one connection, logs in and joins; on success it is the
// member's conn.
func (m *member) dialOnce(ctx context.Context, target string) error {
	m.target = target
	dctx, cancel := context.WithTimeout(ctx, m.r.cfg.RequestTimeout)
	c, err := client.Dial(dctx, target, client.Options{Peek: peekDiscard, FrameBuffer: 64})
	cancel()
	if err != nil {
		return fmt.Errorf("soak: dial: %w", err)
	}
	m.r.conns.Add(1)
	go func() { // pongs and anything else not peeked; ends with the connection
		defer m.r.conns.Done()
		for range c.Frames() {
		}
	}()
	if _, err := m.do(ctx, c, KindLogin, func(rctx context.Context) error {
		_, err := c.Login(rctx, m.token, "soak")
		return err
	}); err != nil {
		c.Close()
		return fmt.Errorf("soak: login %s: %w", m.user, err)
	}
	if m.room != "" {
		if _, err := m.do(ctx, c, KindJoin, func(rctx context.Context) error {
			_, err := c.Join(rctx, m.room)
			return err
		}); err != nil {
			c.Close()
			return fmt.Errorf("soak: %s joins %s: %w", m.user, m.room, err)
		}
	}
	m.conn = c
	return nil
}

// do runs one request on c within the request bound, classifies and
// counts its outcome, and reports an unanswered one.
func (m *member) do(ctx context.Context, c *client.Conn, kind string, req func(context.Context) error) (Outcome, error) {
	start := time.Now()
	rctx, cancel := context.WithTimeout(ctx, m.r.cfg.RequestTimeout)
	err := req(rctx)
	cancel()
	closed := false
	if err != nil && errorCode(err) == "" && ctx.Err() == nil {
		// A connection that ends as the bound runs out (the server's
		// own login timeout, a write that timed out) ends within a
		// moment: that is a dropped connection, not an unanswered request.
		closed = waitClosed(c, time.Second)
	}
	o := Classify(err, ctx.Err(), closed)
	m.r.tally.Add(kind, o, errorCode(err))
	if o == Unanswered {
		m.r.progress.limited("unanswered", "soak: UNANSWERED %s by %s after %.1fs on an open connection (%s)", kind, m.user, time.Since(start).Seconds(), m.target)
	}
	if err != nil {
		return o, fmt.Errorf("%s %s: %w", kind, o, err)
	}
	return o, nil
}

// waitClosed reports whether c ends within d.
func waitClosed(c *client.Conn, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-c.Done():
		return true
	case <-t.C:
		return false
	}
}

// loop sends a message every interval (jittered) until soft ends; a
// message in flight then is still retried until hard ends. A connection
// that ends is made again at once.
func (m *member) loop(soft, hard context.Context, interval time.Duration, rng *rand.Rand) {
	next := time.NewTimer(time.Duration(rng.Int64N(int64(interval))) + 1)
	defer next.Stop()
	ping := time.NewTicker(20*time.Second + time.Duration(rng.Int64N(int64(5*time.Second))))
	defer ping.Stop()
	for range 1_000_000 { // at least one iteration per message or reconnect
		if m.conn == nil {
			if m.connect(soft, rng) != nil {
				return
			}
			m.reconnected(soft)
		}
		select {
		case <-soft.Done():
			return
		case <-m.conn.Done():
			m.r.disconnects.Add(1)
			m.dropConn()
			continue
		case <-ping.C:
			wctx, cancel := context.WithTimeout(soft, 5*time.Second)
			_ = m.conn.Write(wctx, &clientpb.ClientFrame{Body: &clientpb.ClientFrame_Ping{Ping: &clientpb.Ping{ClientTimeUnixMs: time.Now().UnixMilli()}}})
			cancel()
			continue
		case <-next.C:
		}
		m.sendOne(hard, rng)
		next.Reset(jitter(rng, interval))
	}
}

// reconnected counts a reconnect and catches up with one Sync page of the
// member's conversation, as a client does after a reconnect.
func (m *member) reconnected(ctx context.Context) {
	m.r.reconnects.Add(1)
	if m.conv == "" {
		return
	}
	c := m.conn
	o, _ := m.do(ctx, c, KindSync, func(rctx context.Context) error {
		_, err := c.Do(rctx, &clientpb.ClientFrame{Body: &clientpb.ClientFrame_Sync{Sync: &clientpb.Sync{Conversation: m.conv, AfterSeq: m.lastSeq, Limit: 100}}})
		return err
	})
	if o == Dropped {
		m.dropConn()
	}
}

// sendOne sends one new message and retries it with the same
// client_msg_id on UNAVAILABLE, after no answer within the bound, or
// after a reconnect, up to SendAttempts attempts, backing off from 200ms
// to 5s.
func (m *member) sendOne(ctx context.Context, rng *rand.Rand) {
	m.nmsg++
	s := &clientpb.Send{ClientMsgId: fmt.Sprintf("%s-m%d", m.user, m.nmsg), Body: fmt.Appendf(nil, "soak %s %d", m.user, m.nmsg), ContentType: "text/plain"}
	if m.room != "" {
		s.To = &clientpb.Send_Room{Room: m.room}
	} else {
		s.To = &clientpb.Send_User{User: m.peer}
	}
	m.r.sent.Add(1)
	start := time.Now()
	backoff := 200 * time.Millisecond
	for range m.r.cfg.SendAttempts {
		if m.conn == nil {
			if m.connect(ctx, rng) != nil {
				break
			}
			m.reconnected(ctx)
			if m.conn == nil {
				continue
			}
		}
		c := m.conn
		var res *clientpb.SendResult
		o, err := m.do(ctx, c, KindSend, func(rctx context.Context) error {
			var err error
			res, err = c.Send(rctx, s)
			return err
		})
		switch o {
		case Answered:
			m.r.ledger.Record(m.user, m.idx, Ack{Conversation: res.GetConversation(), Seq: res.GetSeq(), MessageID: res.GetMessageId(), ClientMsgID: s.GetClientMsgId()})
			m.r.lat.add(time.Since(start))
			m.conv = res.GetConversation()
			m.lastSeq = max(m.lastSeq, res.GetSeq())
			return
		case Refused:
			m.r.progress.limited("refused", "soak: %s: %v", m.user, err)
			return
		case Aborted:
			m.r.abandoned.Add(1)
			return
		case Dropped:
			m.r.disconnects.Add(1)
			m.dropConn()
		case Unavailable, Unanswered:
			if !sleep(ctx, jitter(rng, backoff)) {
				m.r.abandoned.Add(1)
				return
			}
			backoff = min(2*backoff, 5*time.Second)
		}
	}
	m.r.abandoned.Add(1)
	m.r.progress.limited("abandoned", "soak: %s abandoned message %s after %d attempts (%.1fs)", m.user, s.GetClientMsgId(), m.r.cfg.SendAttempts, time.Since(start).Seconds())
}

// dropConn closes the member's connection (it ended or is to be replaced).
func (m *member) dropConn() {
	if m.conn != nil {
		m.conn.Close()
		m.conn = nil
	}
}

// close ends the member's connection at the end of the run.
func (m *member) close() { m.dropConn() }

// jitter returns d scaled by a random factor in [0.5, 1.5).
func jitter(rng *rand.Rand, d time.Duration) time.Duration {
	return time.Duration(float64(d) * (0.5 + rng.Float64()))
}

// sleep waits d or until ctx ends; it reports whether d passed.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
