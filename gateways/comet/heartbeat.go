package comet

import (
	"fmt"
	"time"

	"github.com/laneim/laneim/proto/topicpb"
	"github.com/laneim/laneim/topics"
)

// heartbeatChunk is the most live sessions one heartbeat event carries.
const heartbeatChunk = 1000

// heartbeats reports the live sessions every HeartbeatInterval until Close.
func (c *Comet) heartbeats() {
	defer c.wg.Done()
	t := time.NewTicker(c.cfg.HeartbeatInterval)
	defer t.Stop()
	for {
		select {
		case <-c.stop:
			return
		case <-t.C:
			c.Heartbeat()
		}
	}
}

// Heartbeat publishes the comet's logged-in sessions now, at most 1,000
// per SessionEvent; with none it publishes one empty heartbeat, which
// still tells presence the comet is alive. Failures are logged.
func (c *Comet) Heartbeat() {
	c.mu.RLock()
	live := make([]*topicpb.LiveSession, 0, len(c.conns))
	for _, cn := range c.conns {
		if cn.user != "" {
			live = append(live, &topicpb.LiveSession{Conn: cn.id, User: cn.user})
		}
	}
	c.mu.RUnlock()
	for start := 0; start == 0 || start < len(live); start += heartbeatChunk {
		end := min(start+heartbeatChunk, len(live))
		_ = c.publishEvent(&topicpb.SessionEvent{
			Kind: topicpb.SessionEvent_HEARTBEAT, Session: &topicpb.Session{Comet: c.cfg.ID},
			Live: live[start:end], TimeUnixMs: time.Now().UnixMilli(),
		})
	}
}

// publishEvent publishes a session event; a failure is logged and returned.
func (c *Comet) publishEvent(ev *topicpb.SessionEvent) error {
	msg, err := topics.SessionEvents.Encode(ev)
	if err == nil {
		err = c.publishRequest(topics.SessionEvents.Name, msg)
	}
	if err != nil {
		c.logger.Warn("publish session event", "kind", ev.GetKind(), "err", err)
		return fmt.Errorf("comet: publish %s: %w", ev.GetKind(), err)
	}
	return nil
}
