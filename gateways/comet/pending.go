package comet

import (
	"errors"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/laneim/laneim/proto/clientpb"
)

// Every request a connection forwards into the pipeline gets an answer:
// the connection remembers its request id until a frame carrying that id
// comes back (Deliver calls answered), and the deadline sweep answers
// UNAVAILABLE itself for one still waiting after RequestTimeout (a worker
// down, a message lost on the way). The pipeline's answer may still come
// afterwards; docs/protocol.md tells clients to ignore an answer to a
// request they have settled. Request id 0 cannot be told apart and is
// not tracked.
//
// A connection has at most MaxInFlight requests waiting: more are
// answered UNAVAILABLE without being forwarded.

// expect records that req waits for the pipeline's answer. It reports
// false, having answered UNAVAILABLE, when too many requests wait.
func (cn *conn) expect(req uint64) bool {
	if req == 0 {
		return true
	}
	c := cn.comet
	cn.pmu.Lock()
	defer cn.pmu.Unlock()
	if _, again := cn.pending[req]; !again && len(cn.pending) >= c.cfg.MaxInFlight {
		cn.fail(req, clientpb.Error_UNAVAILABLE, "too many requests waiting for an answer; retry when some are answered")
		return false
	}
	if cn.pending == nil {
		cn.pending = make(map[uint64]time.Time, 1)
	}
	cn.pending[req] = time.Now().Add(c.cfg.RequestTimeout)
	cn.waiting.Store(int32(len(cn.pending)))
	return true
}

// deadline returns now and when a request received now is answered
// UNAVAILABLE, if nothing answered it, in Unix milliseconds: a worker
// skips a request it takes up too late (pipeline.Expired).
func (c *Comet) deadline() (received, deadline int64) {
	now := time.Now()
	return now.UnixMilli(), now.Add(c.cfg.RequestTimeout).UnixMilli()
}

// startLogin records a Login being forwarded. It reports false, having
// answered ALREADY_LOGGED_IN, when one is already waiting for its answer:
// two Logins at once would leave two sessions for one connection.
func (cn *conn) startLogin(req uint64) bool {
	cn.pmu.Lock()
	defer cn.pmu.Unlock()
	if cn.loginWaiting {
		cn.comet.refused.Add(1)
		cn.fail(req, clientpb.Error_ALREADY_LOGGED_IN, "a login is already being answered on this connection")
		return false
	}
	cn.loginWaiting, cn.loginReq = true, req
	return true
}

// loginDone forgets the Login req if it is the one being answered: it was
// refused, failed or timed out, so the client may log in again. (A
// LoginResult authenticates the connection, after which Login is refused
// anyway.) It reports whether req was that Login.
func (cn *conn) loginDone(req uint64) (wasLogin bool) {
	cn.pmu.Lock()
	if cn.loginWaiting && cn.loginReq == req {
		cn.loginWaiting, cn.loginReq = false, 0
		wasLogin = true
	}
	cn.pmu.Unlock()
	return wasLogin
}

// answered forgets req, answered or about to be, and reports whether it
// was waiting for the pipeline's answer: false when the deadline sweep
// has answered it already. Request id 0, not tracked, counts as waiting.
func (cn *conn) answered(req uint64) bool {
	if req == 0 {
		return true
	}
	if cn.waiting.Load() == 0 {
		return false
	}
	cn.pmu.Lock()
	defer cn.pmu.Unlock()
	_, waiting := cn.pending[req]
	delete(cn.pending, req)
	cn.releaseReadLocked(req)
	cn.dropEmptyPendingLocked()
	return waiting
}

// dropEmptyPendingLocked updates waiting and, when nothing waits, drops
// the map: an idle connection then holds none (a map keeps its buckets
// when emptied, ~500 bytes once a Login and a Join have gone through);
// cn.pmu is held.
func (cn *conn) dropEmptyPendingLocked() {
	cn.waiting.Store(int32(len(cn.pending)))
	if len(cn.pending) == 0 {
		cn.pending = nil
	}
}

// answerOverdue answers UNAVAILABLE every request waiting past its
// deadline at now.
func (cn *conn) answerOverdue(now time.Time) {
	if cn.waiting.Load() == 0 {
		return
	}
	var overdue []uint64
	cn.pmu.Lock()
	for req, due := range cn.pending {
		if !now.Before(due) {
			overdue = append(overdue, req)
			delete(cn.pending, req)
			cn.releaseReadLocked(req)
		}
	}
	cn.dropEmptyPendingLocked()
	cn.pmu.Unlock()
	if len(overdue) > 0 {
		cn.comet.unanswered.Add(int64(len(overdue)))
	}
	for _, req := range overdue {
		if cn.loginDone(req) {
			cn.fail(req, clientpb.Error_UNAVAILABLE, "no answer in time; log in again")
			continue
		}
		cn.fail(req, clientpb.Error_UNAVAILABLE, "no answer in time; retry (a Send with the same client_msg_id)")
	}
}

// publishRequest publishes a client's request for the pipeline without
// holding the connection's reader longer than RequestTimeout: with the
// broker down, a publish can block for as long as the producer retries,
// and a reader blocked there would read none of the client's next frames
// (a retried Send among them) and answer none. Past the bound the request
// is reported failed (the caller answers UNAVAILABLE); the publish goes
// on in its goroutine, owned by the comet, and may still succeed, which a
// client retrying with the same client_msg_id is safe against. Messages
// of one connection keep their order: each is handed to the producer
// before the next is read.
func (c *Comet) publishRequest(topic string, msg *message.Message) error {
	done := make(chan error, 1)
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		done <- c.pub.Publish(topic, msg)
	}()
	t := time.NewTimer(c.cfg.RequestTimeout)
	defer t.Stop()
	select {
	case err := <-done:
		return err
	case <-t.C:
		return errPublishSlow
	}
}

// errPublishSlow reports a publish still waiting for the broker after
// RequestTimeout.
var errPublishSlow = errors.New("comet: the broker has not taken the request in time")
