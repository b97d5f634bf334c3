package pipeline_test

import (
	"testing"
	"time"

	"github.com/laneim/laneim/wiring/pipeline"
)

func TestBreaker(t *testing.T) {
	var zero pipeline.Breaker
	zero.Failed()
	if zero.Open() {
		t.Error("a zero Breaker opened")
	}
	b := pipeline.Breaker{CoolDown: time.Hour}
	if b.Open() {
		t.Fatal("open before any failure")
	}
	b.Failed()
	if !b.Open() {
		t.Fatal("closed right after a failure")
	}
	b.Succeeded()
	if b.Open() {
		t.Fatal("open after a success")
	}
	short := pipeline.Breaker{CoolDown: time.Millisecond}
	short.Failed()
	deadline := time.Now().Add(5 * time.Second)
	for short.Open() {
		if time.Now().After(deadline) {
			t.Fatal("still open 5 s after a 1 ms cool-down")
		}
		time.Sleep(time.Millisecond)
	}
}
