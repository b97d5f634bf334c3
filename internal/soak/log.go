package soak

import (
	"fmt"
	"io"
	"sync"
	"time"
)

// maxLines bounds the lines logged per topic (unanswered, lost, ...):
// the rest are only counted.
const maxLines = 30

// logger writes progress lines, prefixed with the time since the run
// started, and bounds repetitive ones.
type logger struct {
	mu    sync.Mutex
	w     io.Writer
	start time.Time
	lines map[string]int
}

func newLogger(w io.Writer) *logger {
	return &logger{w: w, start: time.Now(), lines: map[string]int{}}
}

func (l *logger) printf(format string, args ...any) {
	l.mu.Lock()
	defer l.mu.Unlock()
	fmt.Fprintf(l.w, "%s %7.1fs "+format+"\n", append([]any{time.Now().UTC().Format("15:04:05"), time.Since(l.start).Seconds()}, args...)...)
}

// limited logs at most maxLines lines of one topic.
func (l *logger) limited(topic, format string, args ...any) {
	l.mu.Lock()
	l.lines[topic]++
	n := l.lines[topic]
	l.mu.Unlock()
	switch {
	case n < maxLines:
		l.printf(format, args...)
	case n == maxLines:
		l.printf(format+" (further %s lines are not shown)", append(args, topic)...)
	}
}
