package wiring_test

import (
	"context"
	"testing"

	"github.com/laneim/laneim/internal/testinfra"
	"github.com/laneim/laneim/wiring"
)

// TestGroupProgressOfATopicNotCreated: a topic that does not exist has
// nothing to wait for.
func TestGroupProgressOfATopicNotCreated(t *testing.T) {
	ctx := context.Background()
	g := wiring.NewGroupProgress(testinfra.Kafka(t), "laneim.nobody", "no.such.topic")
	defer g.Close()
	ends, err := g.Ends(ctx)
	if err != nil || len(ends) != 0 {
		t.Fatalf("Ends = %v, %v; want none", ends, err)
	}
	if ok, err := g.Reached(ctx, ends); err != nil || !ok {
		t.Fatalf("Reached = %v, %v; want true", ok, err)
	}
}
