package presence

import (
	"context"
	"sync"
	"time"
)

// Presence changes are coalesced per (room, user) (issue 11): a member
// flapping Join/Leave once made every other member receive a
// PresenceChange per flap. The first change of a (room, user) after a
// quiet window is sent at once; changes within Config.PresenceWindow of
// the last one sent wait, and when the window ends only the last state is
// sent, with the room's online count read then, and only if the state or
// the count differs from what was last sent. So each member gets at most
// one PresenceChange per (room, user) per window, and the last one it
// gets is right, count included: a change sent at a window's end may have
// read the count with a later change of the user already in the directory
// (alice offline, but counted online by the join that follows); the
// window after it then sends the state again with the count corrected,
// even though the user is back where it said. A user's events all reach
// one presence worker (session.events is keyed by user), so one worker's
// memory is enough.

type roomUser struct{ room, user string }

type presenceState struct {
	sent       time.Time // when the last change went out
	sentOnline bool      // what it said
	sentCount  int       // and the room's online count it carried
	pending    bool      // a later change waits for the window's end
	online     bool      // what that change says
	timer      *time.Timer
}

// coalescer holds the presence changes of each (room, user) sent within
// the last window, and the timers of those waiting. Its timers are owned
// by it: stop stops them and waits for those running.
type coalescer struct {
	window time.Duration
	count  func(ctx context.Context, room string) (int, error)                  // a room's online users now
	send   func(ctx context.Context, room, user string, online bool, count int) // a change at the window's end

	mu      sync.Mutex
	m       map[roomUser]*presenceState
	stopped bool
	running sync.WaitGroup // timers scheduled or running
}

func newCoalescer(window time.Duration, count func(ctx context.Context, room string) (int, error), send func(ctx context.Context, room, user string, online bool, count int)) *coalescer {
	return &coalescer{window: window, count: count, send: send, m: map[roomUser]*presenceState{}}
}

// now reports whether the change of user in room to online, with count
// users online in the room, goes out at once; otherwise it is kept, to go
// out (if still a change) at the end of the window.
func (co *coalescer) now(room, user string, online bool, count int, at time.Time) bool {
	if co.window <= 0 {
		return true
	}
	k := roomUser{room, user}
	co.mu.Lock()
	defer co.mu.Unlock()
	st := co.m[k]
	if st == nil || (st.timer == nil && at.Sub(st.sent) >= co.window) {
		co.m[k] = &presenceState{sent: at, sentOnline: online, sentCount: count}
		return true
	}
	st.pending, st.online = true, online
	if st.timer == nil && !co.stopped {
		co.running.Add(1)
		st.timer = time.AfterFunc(max(st.sent.Add(co.window).Sub(at), 0), func() { co.flush(k) })
	}
	return false
}

// flush sends the change kept for k, with the room's count read now, if
// the state or the count differs from what was last sent.
func (co *coalescer) flush(k roomUser) {
	defer co.running.Done()
	co.mu.Lock()
	st := co.m[k]
	if co.stopped || st == nil || !st.pending {
		if st != nil {
			st.timer = nil
		}
		co.mu.Unlock()
		return
	}
	co.mu.Unlock()
	// The timer stays set while the count is read: a change coming
	// meanwhile is kept (pending) and taken below.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	count, err := co.count(ctx, k.room)
	co.mu.Lock()
	st.timer = nil
	online := st.online
	changed := err == nil && st.pending && !co.stopped && (online != st.sentOnline || count != st.sentCount)
	if err == nil {
		st.pending = false
	}
	if changed {
		st.sent, st.sentOnline, st.sentCount = time.Now(), online, count
	}
	if err != nil && !co.stopped {
		// Try again at the end of another window.
		co.running.Add(1)
		st.timer = time.AfterFunc(co.window, func() { co.flush(k) })
	}
	co.mu.Unlock()
	if changed {
		co.send(ctx, k.room, k.user, online, count)
	}
}

// prune forgets the (room, user) pairs quiet for a window before now.
func (co *coalescer) prune(now time.Time) {
	co.mu.Lock()
	defer co.mu.Unlock()
	for k, st := range co.m {
		if st.timer == nil && now.Sub(st.sent) >= co.window {
			delete(co.m, k)
		}
	}
}

// stop cancels the changes waiting and waits for those being sent.
func (co *coalescer) stop() {
	co.mu.Lock()
	co.stopped = true
	for _, st := range co.m {
		if st.timer != nil && st.timer.Stop() {
			co.running.Done()
		}
		st.timer = nil
	}
	co.mu.Unlock()
	co.running.Wait()
}
