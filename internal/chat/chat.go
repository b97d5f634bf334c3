// Package chat is a line-oriented terminal client for laneIM, on the
// reconnecting client of gateways/comet/client: it stays connected
// (pings), reconnects when its comet goes away and shows what it missed,
// shows a room's recent history when it joins it and the 1:1 messages
// that came while it was away when it logs in.
//
//	hello               a message to the current room (shown in the prompt)
//	/msg bob hi         a 1:1 message (also /dm)
//	/join dev           join a room and make it current
//	/leave [dev]        leave a room (default: the current one)
//	/rooms              the rooms joined and the rooms you belong to
//	/history [n]        the last n messages of the current room (default 10)
//	/who                who is online in the current room
//	/quit               leave
package chat

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/laneim/laneim/gateways/comet/client"
	"github.com/laneim/laneim/proto/apipb"
	"github.com/laneim/laneim/proto/clientpb"
)

// Config says where to connect and as whom.
type Config struct {
	// URL is the comet's WebSocket URL; with Pick, the one used when
	// Pick fails.
	URL string
	// Pick, if set, chooses the comet of each connection (the api
	// gateway's PickComet), so that a reconnect may go to another one.
	Pick  func(ctx context.Context) (string, error)
	Token string
	// Room is joined after login and is where plain lines go; empty joins none.
	Room string
	JSON bool
	// ShowIDs shows each message's id.
	ShowIDs bool
	// History is how many recent messages are shown on joining a room
	// (default 10; negative: none).
	History int
	// StateFile, if set, keeps the last message seen per conversation
	// across runs, so that what came while the chat was not running is
	// shown on login. Without it (or for a 1:1 conversation it does not
	// know) the last few messages of the most recent 1:1 conversations
	// are shown instead.
	StateFile string
	// PingInterval and MaxBackoff tune the client (defaults 20 s, 30 s).
	PingInterval, MaxBackoff time.Duration
}

// PickComet returns a Config.Pick that asks the api gateway's PickComet
// for the least loaded live comet.
func PickComet(pc apipb.PushClient) func(ctx context.Context) (string, error) {
	return func(ctx context.Context) (string, error) {
		r, err := pc.PickComet(ctx, &apipb.PickCometRequest{})
		if err != nil {
			return "", fmt.Errorf("chat: pick a comet: %w", err)
		}
		return r.GetUrl(), nil
	}
}

// recentDirect is how many 1:1 conversations, and messages of each, are
// shown on login when the chat has no position for them.
const recentDirect = 5

// chat is the state of one Run.
type chat struct {
	cfg  Config
	c    *client.Client
	w    *lockedWriter
	user string // set at the first login
	// positions are those of the state file at the start.
	positions map[string]uint64

	mu       sync.Mutex
	room     string                     // current room
	online   map[string]map[string]bool // per joined room, who is online (when listed)
	counts   map[string]uint32          // per joined room, how many are online
	memberOf []string                   // rooms of the last LoginResult
	gaveUp   error                      // why the client stopped (Event.Final)
	// away is set between a disconnection and the next login: lines
	// that need the server are then refused at once, rather than
	// holding the prompt (and /quit) until they time out.
	away bool
}

// Run chats until in ends, /quit is typed or ctx ends; it returns an
// error only when it cannot start (a refused login, say) or when a
// reconnect's login is refused for good (the account was disabled). The
// goroutine reading in may outlive Run until in delivers its next line or
// ends. Output lines are written to out.
func Run(ctx context.Context, cfg Config, in io.Reader, out io.Writer) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	if cfg.History == 0 {
		cfg.History = 10
	}
	positions, err := loadState(cfg.StateFile)
	if err != nil {
		return err
	}
	c, err := client.New(client.Config{
		URL: cfg.URL, Pick: cfg.Pick, Device: "terminal",
		Token:     func(context.Context) (string, error) { return cfg.Token, nil },
		Options:   client.Options{JSON: cfg.JSON},
		Positions: positions, PingInterval: cfg.PingInterval, MaxBackoff: cfg.MaxBackoff,
	})
	if err != nil {
		return fmt.Errorf("chat: %w", err)
	}
	ch := &chat{cfg: cfg, c: c, w: &lockedWriter{w: out}, online: map[string]map[string]bool{}, counts: map[string]uint32{}, positions: positions}
	defer func() {
		c.Close()
		if err := saveState(cfg.StateFile, c.Positions()); err != nil {
			ch.w.printf("! %v\n", err)
		}
	}()

	// Reading in cannot be interrupted, so Run does not wait for this
	// goroutine: it ends when in reaches its end or fails, or at the next
	// line after Run returned.
	lines := make(chan string)
	go func() {
		defer close(lines)
		sc := bufio.NewScanner(in)
		for sc.Scan() {
			select {
			case lines <- sc.Text():
			case <-ctx.Done():
				return
			}
		}
	}()

	// The first connection: a refused login ends Run, and so do /quit
	// and the end of in. Until then a comet that cannot be reached is
	// retried, as after any disconnect.
	if quit, err := ch.start(ctx, lines); quit || err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return err
	}
	if cfg.Room != "" {
		ch.join(ctx, cfg.Room)
	}

	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		ch.receive(ctx)
		cancel() // the client stopped: so does Run
	}()
	defer wg.Wait()
	defer cancel()

	ch.prompt()
	for {
		select {
		case <-ctx.Done():
			ch.mu.Lock()
			defer ch.mu.Unlock()
			return ch.gaveUp
		case line, ok := <-lines:
			if !ok {
				return nil
			}
			line = strings.TrimSpace(line)
			if line == "" {
				ch.prompt()
				continue
			}
			if ch.refusedAway(line) {
				ch.prompt()
				continue
			}
			if quit := ch.command(ctx, line); quit {
				return nil
			}
			ch.prompt()
		}
	}
}

// start waits for the first connection and shows what came meanwhile.
// It reports quit when /quit is typed or lines ends before the client
// logs in (newcomer check: a chat that never connected could be stopped
// only with a signal).
func (ch *chat) start(ctx context.Context, lines <-chan string) (quit bool, err error) {
	for {
		select {
		case <-ctx.Done():
			return false, ctx.Err()
		case line, ok := <-lines:
			switch line = strings.TrimSpace(line); {
			case !ok || line == "/quit":
				return true, nil
			case line != "":
				ch.w.printf("* not connected yet: %q not sent\n", line)
			}
		case ev, ok := <-ch.c.Events():
			if !ok {
				return false, errors.New("chat: client closed")
			}
			var e *client.Error
			switch {
			case ev.Kind == client.Disconnected && errors.As(ev.Err, &e):
				return false, fmt.Errorf("chat: %w", ev.Err)
			case ev.Kind == client.Disconnected:
				ch.w.printf("* cannot connect (%v): retrying; /quit to stop\n", ev.Err)
			case ev.Kind == client.Connected:
				ch.connected(ctx, ev)
				ch.recentDirect(ctx, ev.Login)
				return false, nil
			default:
				ch.show(ev)
			}
		}
	}
}

// refusedAway reports whether line, needing the server, was refused
// because the client is reconnecting (newcomer check: a line typed then
// held the prompt, and /quit, for 12 s). /quit and /rooms need no server.
func (ch *chat) refusedAway(line string) bool {
	ch.mu.Lock()
	away := ch.away
	ch.mu.Unlock()
	if !away {
		return false
	}
	if f := strings.Fields(line); f[0] == "/quit" || f[0] == "/rooms" {
		return false
	}
	ch.w.printf("* not connected (reconnecting): %q not sent; type it again once reconnected\n", line)
	return true
}

// recentDirect shows the last messages of the most recent 1:1
// conversations that the state file did not know (all of them without
// one); the client catches up those it knew.
func (ch *chat) recentDirect(ctx context.Context, res *clientpb.LoginResult) {
	shown := 0
	for _, st := range res.GetConversations() {
		if _, ok := ch.positions[st.GetConversation()]; ok || !strings.HasPrefix(st.GetConversation(), "dm:") {
			continue
		}
		if shown++; shown > recentDirect {
			return
		}
		ch.history(ctx, st.GetConversation(), st.GetLatestSeq(), recentDirect, "recent")
	}
}

// connected notes a login.
func (ch *chat) connected(ctx context.Context, ev client.Event) {
	ch.mu.Lock()
	ch.away = false
	ch.mu.Unlock()
	res := ev.Login
	var rooms []string
	for _, st := range res.GetConversations() {
		if r, ok := strings.CutPrefix(st.GetConversation(), "room:"); ok {
			rooms = append(rooms, r)
		}
	}
	ch.mu.Lock()
	ch.user = res.GetUser()
	ch.memberOf = rooms
	ch.mu.Unlock()
	if ev.Reconnect {
		ch.w.printf("* reconnected as %s (session %s)\n", res.GetUser(), res.GetSession())
		return
	}
	ch.w.printf("* logged in as %s (session %s)\n", res.GetUser(), res.GetSession())
}

// receive shows what the client reports until ctx ends.
func (ch *chat) receive(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case ev, ok := <-ch.c.Events():
			if !ok {
				return
			}
			switch {
			case ev.Kind == client.Connected:
				ch.connected(ctx, ev)
			case ev.Final:
				ch.w.printf("* disconnected, and the login is refused (%v): giving up\n", ev.Err)
				ch.mu.Lock()
				ch.gaveUp = fmt.Errorf("chat: %w", ev.Err)
				ch.mu.Unlock()
				return
			default:
				ch.show(ev)
			}
			ch.prompt()
		}
	}
}

// show prints one event.
func (ch *chat) show(ev client.Event) {
	switch ev.Kind {
	case client.Disconnected:
		ch.mu.Lock()
		ch.away = true
		ch.mu.Unlock()
		ch.w.printf("* disconnected (%v): reconnecting\n", ev.Err)
	case client.Messages:
		tag := ""
		if ev.CatchUp {
			tag = "missed"
		}
		for _, m := range ev.Messages {
			ch.message(m, tag)
		}
	case client.Presence:
		p := ev.Presence
		ch.mu.Lock()
		if set := ch.online[p.GetRoom()]; set != nil {
			if p.GetOnline() {
				set[p.GetUser()] = true
			} else {
				delete(set, p.GetUser())
			}
		}
		ch.counts[p.GetRoom()] = p.GetOnlineCount()
		ch.mu.Unlock()
		state := "left"
		if p.GetOnline() {
			state = "joined"
		}
		ch.w.printf("* %s %s %s (%d online)\n", p.GetUser(), state, p.GetRoom(), p.GetOnlineCount())
	case client.Left:
		ch.mu.Lock()
		delete(ch.online, ev.Room)
		if ch.room == ev.Room {
			ch.room = ""
		}
		ch.mu.Unlock()
		ch.w.printf("* removed from %s\n", ev.Room)
	case client.ServerError:
		ch.w.printf("! %v\n", ev.Err)
	}
}

// message prints a message, tagged ("missed", "history", ...) if tag is set.
func (ch *chat) message(m *clientpb.Message, tag string) {
	var b strings.Builder
	if tag != "" {
		fmt.Fprintf(&b, "(%s) ", tag)
	}
	fmt.Fprintf(&b, "[%s #%d] %s: %s", m.GetConversation(), m.GetSeq(), m.GetSender(), m.GetBody())
	if ch.cfg.ShowIDs {
		fmt.Fprintf(&b, "  (id %s)", m.GetId())
	}
	ch.w.printf("%s\n", b.String())
}

// prompt shows the current room.
func (ch *chat) prompt() {
	ch.mu.Lock()
	room := ch.room
	ch.mu.Unlock()
	if room == "" {
		room = "no room"
	}
	ch.w.printf("[%s]> ", room)
}

// command runs one typed line; it reports whether to quit.
func (ch *chat) command(ctx context.Context, line string) bool {
	rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	fields := strings.Fields(line)
	ch.mu.Lock()
	room := ch.room
	ch.mu.Unlock()
	switch cmd := fields[0]; {
	case cmd == "/quit":
		return true
	case cmd == "/join" && len(fields) == 2:
		ch.join(rctx, fields[1])
	case cmd == "/leave" && len(fields) <= 2:
		if len(fields) == 2 {
			room = fields[1]
		}
		if room == "" {
			ch.w.printf("! no room to leave\n")
			break
		}
		if err := ch.c.Leave(rctx, room); err != nil {
			ch.w.printf("! leave %s: %v\n", room, err)
			break
		}
		ch.mu.Lock()
		delete(ch.online, room)
		if ch.room == room {
			ch.room = ""
			if rooms := ch.c.Rooms(); len(rooms) > 0 {
				ch.room = rooms[0]
			}
		}
		ch.mu.Unlock()
		ch.w.printf("* left %s\n", room)
	case cmd == "/rooms" && len(fields) == 1:
		joined := ch.c.Rooms()
		ch.mu.Lock()
		others := slices.DeleteFunc(slices.Clone(ch.memberOf), func(r string) bool { return slices.Contains(joined, r) })
		ch.mu.Unlock()
		for i, r := range joined {
			if r == room {
				joined[i] = r + " (current)"
			}
		}
		ch.w.printf("* joined: %s\n", list(joined))
		ch.w.printf("* also member of: %s\n", list(others))
	case cmd == "/history" && len(fields) <= 2:
		n := 10
		if len(fields) == 2 {
			v, err := strconv.Atoi(fields[1])
			if err != nil || v <= 0 || v > 500 {
				ch.w.printf("! /history [n]: n from 1 to 500\n")
				break
			}
			n = v
		}
		if room == "" {
			ch.w.printf("! no room: /join ROOM first\n")
			break
		}
		conv := "room:" + room
		if ch.history(rctx, conv, ch.c.Positions()[conv], n, "history") == 0 {
			ch.w.printf("* no messages in %s yet\n", room)
		}
	case cmd == "/who" && len(fields) == 1:
		if room == "" {
			ch.w.printf("! no room: /join ROOM first\n")
			break
		}
		ch.mu.Lock()
		set, n := ch.online[room], ch.counts[room]
		ch.mu.Unlock()
		if len(set) == 0 && n > 0 {
			ch.w.printf("* %d online in %s (too many to list)\n", n, room)
			break
		}
		ch.w.printf("* online in %s (%d): %s\n", room, len(set), list(slices.Sorted(maps.Keys(set))))
	case (cmd == "/msg" || cmd == "/dm") && len(fields) >= 3:
		text := strings.TrimSpace(strings.TrimPrefix(strings.TrimPrefix(line, cmd), " "+fields[1]))
		if _, err := ch.c.SendUser(rctx, fields[1], []byte(text)); err != nil {
			ch.w.printf("! to %s: %v\n", fields[1], err)
		}
	case strings.HasPrefix(cmd, "/"):
		ch.w.printf("! commands: /join ROOM, /leave [ROOM], /rooms, /history [N], /who, /msg USER TEXT, /quit\n")
	case room == "":
		ch.w.printf("! no room: /join ROOM first, or /msg USER TEXT\n")
	default:
		if _, err := ch.c.SendRoom(rctx, room, []byte(line)); err != nil {
			ch.w.printf("! to %s: %v\n", room, err)
		}
	}
	return false
}

func list(s []string) string {
	if len(s) == 0 {
		return "none"
	}
	return strings.Join(s, ", ")
}

// join joins a room, makes it current, and shows who is online and its
// recent history.
func (ch *chat) join(ctx context.Context, room string) {
	// With a position (the state file's) the client shows what came
	// after it as missed: history ends there.
	pos, known := ch.c.Positions()["room:"+room]
	j, err := ch.c.Join(ctx, room)
	if err != nil {
		ch.w.printf("! join %s: %v\n", room, err)
		return
	}
	set := map[string]bool{}
	for _, u := range j.GetOnlineUsers() {
		set[u] = true
	}
	ch.mu.Lock()
	ch.room = room
	ch.online[room] = set
	ch.counts[room] = j.GetOnlineCount()
	ch.mu.Unlock()
	who := ""
	if len(set) > 0 {
		who = ": " + strings.Join(j.GetOnlineUsers(), ", ")
	}
	ch.w.printf("* joined %s (%d online%s; latest #%d)\n", room, j.GetOnlineCount(), who, j.GetLatestSeq())
	until := j.GetLatestSeq()
	if known {
		until = min(until, pos)
	}
	if ch.cfg.History > 0 {
		ch.history(ctx, j.GetConversation(), until, ch.cfg.History, "history")
	}
}

// history shows the last n messages of conv up to seq until, and
// reports how many it showed.
func (ch *chat) history(ctx context.Context, conv string, until uint64, n int, tag string) (shown int) {
	if until == 0 {
		return 0
	}
	after := uint64(0)
	if until > uint64(n) {
		after = until - uint64(n)
	}
	for after < until {
		res, err := ch.c.Sync(ctx, conv, after, uint32(min(n, 500)))
		if err != nil {
			ch.w.printf("! history of %s: %v\n", conv, err)
			return shown
		}
		for _, m := range res.GetMessages() {
			if m.GetSeq() <= until {
				ch.message(m, tag)
				shown++
			}
			after = max(after, m.GetSeq())
		}
		if !res.GetHasMore() || len(res.GetMessages()) == 0 {
			return shown
		}
	}
	return shown
}

// loadState reads the positions a StateFile keeps; a missing file holds none.
func loadState(path string) (map[string]uint64, error) {
	if path == "" {
		return nil, nil
	}
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("chat: state: %w", err)
	}
	var p map[string]uint64
	if err := json.Unmarshal(b, &p); err != nil {
		return nil, fmt.Errorf("chat: state %s: %w", path, err)
	}
	return p, nil
}

// saveState writes positions to a StateFile, replacing it whole.
func saveState(path string, p map[string]uint64) error {
	if path == "" {
		return nil
	}
	b, err := json.Marshal(p)
	if err != nil {
		return fmt.Errorf("chat: state: %w", err)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return fmt.Errorf("chat: state: %w", err)
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return fmt.Errorf("chat: state: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("chat: state: %w", err)
	}
	return nil
}

type lockedWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) printf(format string, args ...any) {
	l.mu.Lock()
	defer l.mu.Unlock()
	fmt.Fprintf(l.w, format, args...)
}
