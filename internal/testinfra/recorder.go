package testinfra

import (
	"sync"

	"github.com/ThreeDotsLabs/watermill/message"
)

// Published is one message a Recorder received.
type Published struct {
	Topic string
	Msg   *message.Message
}

// Recorder is a message.Publisher that keeps what is published, for unit
// tests of handlers. Err, when set, is returned by every Publish. It is
// safe for concurrent use.
type Recorder struct {
	mu    sync.Mutex
	msgs  []Published
	calls int
	Err   error
}

// Publish records msgs, or returns r.Err.
func (r *Recorder) Publish(topic string, msgs ...*message.Message) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.calls++
	if r.Err != nil {
		return r.Err
	}
	for _, m := range msgs {
		r.msgs = append(r.msgs, Published{Topic: topic, Msg: m})
	}
	return nil
}

// Close does nothing.
func (r *Recorder) Close() error { return nil }

// Take returns what was published since the last Take, and forgets it.
func (r *Recorder) Take() []Published {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := r.msgs
	r.msgs = nil
	return out
}

// Calls returns how many times Publish was called.
func (r *Recorder) Calls() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.calls
}
