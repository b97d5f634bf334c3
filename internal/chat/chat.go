// Package chat is a line-oriented terminal client for laneIM: it logs in,
// joins a room, prints what arrives and sends what is typed.
//
//	hello               a message to the current room
//	/dm bob hi          a 1:1 message
//	/join dev           join a room and make it current
//	/leave dev          leave a room
//	/quit               leave
package chat

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"strings"
	"sync"
	"time"

	"github.com/laneim/laneim/gateways/comet/client"
	"github.com/laneim/laneim/proto/clientpb"
)

// Config says where to connect and as whom.
type Config struct {
	URL   string
	Token string
	// Room is joined after login and is where plain lines go; empty joins none.
	Room string
	JSON bool
}

// Run chats until in ends, /quit is typed, ctx ends or the server closes
// the connection. The goroutine reading in may outlive Run until in
// delivers its next line or ends. Output lines are written to out; it is safe for the
// receiving and sending sides to share out.
func Run(ctx context.Context, cfg Config, in io.Reader, out io.Writer) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	conn, err := client.Dial(ctx, cfg.URL, client.Options{JSON: cfg.JSON})
	if err != nil {
		return fmt.Errorf("chat: connect %s: %w", cfg.URL, err)
	}
	defer conn.Close()
	w := &lockedWriter{w: out}

	res, err := conn.Login(ctx, cfg.Token, "terminal")
	if err != nil {
		return fmt.Errorf("chat: login: %w", err)
	}
	w.printf("* logged in as %s (session %s)\n", res.GetUser(), res.GetSession())
	room := cfg.Room
	if room != "" {
		if err := join(ctx, conn, w, room); err != nil {
			return err
		}
	}

	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		defer cancel()
		receive(ctx, conn, w)
	}()
	defer wg.Wait()

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

	for {
		var line string
		var ok bool
		select {
		case <-ctx.Done():
			return connErr(conn)
		case line, ok = <-lines:
			if !ok {
				cancel()
				return nil
			}
		}
		line = strings.TrimSpace(line)
		if line == "" {
			continue
		}
		if quit := command(ctx, conn, w, &room, line); quit {
			cancel()
			return nil
		}
	}
}

func connErr(conn *client.Conn) error {
	select {
	case <-conn.Done():
		if err := conn.Err(); err != nil {
			return fmt.Errorf("chat: connection closed: %w", err)
		}
	default:
	}
	return nil
}

// command runs one typed line; it reports whether to quit.
func command(ctx context.Context, conn *client.Conn, w *lockedWriter, room *string, line string) bool {
	rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	fields := strings.Fields(line)
	switch {
	case fields[0] == "/quit":
		return true
	case fields[0] == "/join" && len(fields) == 2:
		if join(rctx, conn, w, fields[1]) == nil {
			*room = fields[1]
		}
	case fields[0] == "/leave" && len(fields) == 2:
		if err := conn.Leave(rctx, fields[1]); err != nil {
			w.printf("! leave %s: %v\n", fields[1], err)
		} else {
			w.printf("* left %s\n", fields[1])
			if *room == fields[1] {
				*room = ""
			}
		}
	case fields[0] == "/dm" && len(fields) >= 3:
		text := strings.TrimSpace(strings.TrimPrefix(strings.TrimPrefix(line, "/dm"), " "+fields[1]))
		if _, err := conn.SendUser(rctx, fields[1], []byte(text)); err != nil {
			w.printf("! to %s: %v\n", fields[1], err)
		}
	case strings.HasPrefix(fields[0], "/"):
		w.printf("! commands: /dm USER TEXT, /join ROOM, /leave ROOM, /quit\n")
	case *room == "":
		w.printf("! no room: /join ROOM first, or /dm USER TEXT\n")
	default:
		if _, err := conn.SendRoom(rctx, *room, []byte(line)); err != nil {
			w.printf("! to %s: %v\n", *room, err)
		}
	}
	return false
}

func join(ctx context.Context, conn *client.Conn, w *lockedWriter, room string) error {
	j, err := conn.Join(ctx, room)
	if err != nil {
		w.printf("! join %s: %v\n", room, err)
		return fmt.Errorf("chat: join %s: %w", room, err)
	}
	w.printf("* joined %s (%d online, latest #%d)\n", room, j.GetOnlineCount(), j.GetLatestSeq())
	return nil
}

// receive prints frames the server sends on its own.
func receive(ctx context.Context, conn *client.Conn, w *lockedWriter) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-conn.Done():
			w.printf("* disconnected: %v\n", conn.Err())
			return
		case f, ok := <-conn.Frames():
			if !ok {
				return
			}
			print(w, f)
		}
	}
}

func print(w *lockedWriter, f *clientpb.ServerFrame) {
	switch b := f.GetBody().(type) {
	case *clientpb.ServerFrame_Messages:
		for _, m := range b.Messages.GetMessages() {
			w.printf("[%s #%d] %s: %s\n", m.GetConversation(), m.GetSeq(), m.GetSender(), m.GetBody())
		}
	case *clientpb.ServerFrame_Presence:
		state := "left"
		if b.Presence.GetOnline() {
			state = "joined"
		}
		w.printf("* %s %s %s (%d online)\n", b.Presence.GetUser(), state, b.Presence.GetRoom(), b.Presence.GetOnlineCount())
	case *clientpb.ServerFrame_Error:
		w.printf("! %s: %s\n", b.Error.GetCode(), b.Error.GetText())
	}
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
