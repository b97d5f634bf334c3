package comet

import (
	"bufio"
	"context"
	"errors"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/coder/websocket"
	"golang.org/x/time/rate"

	"github.com/laneim/laneim/proto/topicpb"
)

// The WebSocket subprotocols of version 1 of the client protocol.
const (
	SubprotocolProto = "laneim.v1.proto"
	SubprotocolJSON  = "laneim.v1.json"
)

// ServeHTTP upgrades a request to a WebSocket connection, which the comet
// then serves until it ends. Requests that cannot be upgraded get a 4xx
// answer.
func (c *Comet) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	offered := r.Header.Values("Sec-WebSocket-Protocol")
	ours := offeredOurs(offered)
	if len(offered) > 0 && len(ours) == 0 {
		http.Error(w, "laneim: unsupported WebSocket subprotocol; offer "+SubprotocolProto+" (binary protobuf) or "+SubprotocolJSON+" (JSON text)", http.StatusBadRequest)
		return
	}
	c.mu.RLock()
	closed := c.closed
	c.mu.RUnlock()
	if closed {
		http.Error(w, "laneim: comet shutting down", http.StatusServiceUnavailable)
		return
	}
	strikes := c.strikeKey(r.RemoteAddr)
	if c.struckOut(strikes) {
		c.refuseStruckOut(w, r)
		return
	}
	addr := c.addressKey(r.RemoteAddr)
	if !c.takeAddress(addr) {
		c.refuseAddress(w, r)
		return
	}
	hj := &hijackCapture{ResponseWriter: w, writeTimeout: c.cfg.WriteTimeout, frames: newFrameLimiter(c.cfg)}
	var cn *conn // set before its reader starts, the only caller of OnPingReceived
	ws, err := websocket.Accept(hj, r, &websocket.AcceptOptions{
		// The library takes the first of these: the client's order
		// (RFC 6455: by preference) decides.
		Subprotocols: ours,
		// Any origin: no cookie is involved, a connection is
		// authenticated by the token of its Login frame.
		InsecureSkipVerify: true,
		OnPingReceived:     func(context.Context, []byte) bool { return cn == nil || cn.allowPing() },
	})
	if err != nil {
		// Accept has written an HTTP error (426 for a plain request).
		c.logger.Debug("websocket accept", "remote", r.RemoteAddr, "err", err)
		c.releaseAddress(addr)
		return
	}
	// Until login, a frame may carry little more than a token.
	ws.SetReadLimit(int64(c.cfg.preLoginFrameBytes()))
	cn = c.register(ws, hj.conn, !strings.EqualFold(ws.Subprotocol(), SubprotocolProto), addr)
	if cn != nil {
		cn.strikes = strikes
	}
	if cn == nil {
		c.releaseAddress(addr)
		ws.Close(websocket.StatusGoingAway, "server shutting down")
		return
	}
	// The reader runs in a goroutine of its own, owned by the comet, so
	// that this handler returns: the HTTP server then drops its request,
	// response and 8 KiB of buffers, which it keeps while a handler of a
	// hijacked connection runs.
	go cn.read(false) // with the count of c.wg register took
}

// offeredOurs returns the subprotocols of version 1 that the client
// offered (its header values), in its order, without repeats.
func offeredOurs(values []string) []string {
	var out []string
	for _, v := range values {
		for _, p := range strings.Split(v, ",") {
			for _, ours := range [...]string{SubprotocolProto, SubprotocolJSON} {
				if strings.EqualFold(strings.TrimSpace(p), ours) && !slices.Contains(out, ours) {
					out = append(out, ours)
				}
			}
		}
	}
	return out
}

// hijackCapture puts a socket (socket.go) under the connection that the
// WebSocket library hijacks and keeps it, so that the writer can send a
// batch in one write call bounded by the socket's deadline, rather than
// by a context and a timer per write.
type hijackCapture struct {
	http.ResponseWriter
	writeTimeout time.Duration // the socket's, for writes outside a batch
	frames       *rate.Limiter // the socket's budget of the client's fragments
	conn         *socket
}

func (h *hijackCapture) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	hj, ok := h.ResponseWriter.(http.Hijacker)
	if !ok {
		return nil, nil, errors.New("comet: the ResponseWriter cannot be hijacked")
	}
	nc, brw, err := hj.Hijack()
	if err != nil {
		return nil, nil, err
	}
	s, brw, err := newSocketBuffers(nc, brw)
	if err != nil {
		nc.Close()
		return nil, nil, err
	}
	s.writeTimeout, s.frames = h.writeTimeout, h.frames
	h.conn = s
	return s, brw, nil
}

// register adds a new connection. It returns nil if the comet is closed;
// otherwise the caller owns one count of c.wg for the reader. The first
// connection starts the comet's deadline sweep.
func (c *Comet) register(ws *websocket.Conn, nc *socket, useJSON bool, addr string) *conn {
	cn := newConn(c, c.bootID+"."+strconv.FormatUint(c.next.Add(1), 10), ws, nc, useJSON)
	cn.addr = addr
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return nil
	}
	c.conns[cn.id] = cn
	c.wg.Add(1)
	c.startSweepLocked()
	c.startParkerLocked()
	return cn
}

// startSweepLocked starts the deadline sweep once; c.mu is held and the
// comet is not closed.
func (c *Comet) startSweepLocked() {
	if c.sweeping {
		return
	}
	c.sweeping = true
	c.wg.Add(1)
	go c.sweepDeadlines()
}

// sweepDeadlines closes, until Close, the connections past their login or
// idle deadline: one goroutine and one ticker for all of them instead of
// a timer per connection. Its period is a quarter of the shorter
// timeout, between 10 ms and 1 s.
func (c *Comet) sweepDeadlines() {
	defer c.wg.Done()
	period := min(max(min(c.cfg.LoginTimeout, c.cfg.IdleTimeout, c.cfg.RequestTimeout)/4, 10*time.Millisecond), time.Second)
	t := time.NewTicker(period)
	defer t.Stop()
	var conns []*conn
	for {
		select {
		case <-c.stop:
			return
		case <-c.shedNow:
			c.shed()
		case now := <-t.C:
			c.mu.RLock()
			for _, cn := range c.conns {
				conns = append(conns, cn)
			}
			c.mu.RUnlock()
			for i, cn := range conns {
				cn.checkDeadlines(now)
				conns[i] = nil
			}
			conns = conns[:0]
			c.userLimits.prune(now)
			c.pruneStrikes(now)
		}
	}
}

// unregister forgets a connection that ended, gives back its read slots
// and, if it was logged in, publishes CLOSED.
func (c *Comet) unregister(cn *conn) {
	cn.releaseReads()
	if c.parker != nil {
		c.parker.forget(cn)
	}
	c.mu.Lock()
	delete(c.conns, cn.id)
	c.releaseAddressLocked(cn.addr)
	user := cn.user
	if user != "" {
		if set := c.users[user]; set != nil {
			set.remove(cn)
			if set.len() == 0 {
				delete(c.users, user)
			}
		}
	}
	for _, r := range cn.rooms.appendTo(nil) {
		c.leaveLocked(cn, r)
	}
	c.mu.Unlock()
	if user == "" {
		return
	}
	// Best effort: if this fails, the session expires without heartbeats.
	_ = c.publishEvent(&topicpb.SessionEvent{
		Kind: topicpb.SessionEvent_CLOSED, Session: c.session(cn), User: user, TimeUnixMs: time.Now().UnixMilli(),
	})
}

func (c *Comet) session(cn *conn) *topicpb.Session {
	return &topicpb.Session{Comet: c.cfg.ID, Conn: cn.id}
}
