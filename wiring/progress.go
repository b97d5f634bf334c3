package wiring

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/IBM/sarama"
)

// GroupProgress compares a consumer group's committed offsets on a topic
// with the topic's ends, to learn when the group has handled everything
// published up to a moment: take Ends then, and wait for Reached. It
// connects at its first use and is safe for concurrent use. Sarama takes
// no contexts: its own timeouts bound each call, and a call returns
// ctx's error if ctx has ended before it starts.
type GroupProgress struct {
	lazyAdmin    // Close releases it
	group, topic string
}

// NewGroupProgress returns a GroupProgress of group on topic.
func NewGroupProgress(cfg KafkaConfig, group, topic string) *GroupProgress {
	return &GroupProgress{lazyAdmin: lazyAdmin{cfg: cfg}, group: group, topic: topic}
}

// Ends returns the end offset of each of the topic's partitions: the
// offset its next message will have; none if the topic does not exist.
func (g *GroupProgress) Ends(ctx context.Context) (map[int32]int64, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if err := g.connect(); err != nil {
		return nil, err
	}
	parts, err := g.client.Partitions(g.topic)
	if errors.Is(err, sarama.ErrUnknownTopicOrPartition) {
		return map[int32]int64{}, nil // no topic yet: nothing was published
	}
	if err != nil {
		return nil, fmt.Errorf("partitions of %s: %w", g.topic, err)
	}
	ends := make(map[int32]int64, len(parts))
	for _, p := range parts {
		if ends[p], err = g.client.GetOffset(g.topic, p, sarama.OffsetNewest); err != nil {
			return nil, fmt.Errorf("end of %s/%d: %w", g.topic, p, err)
		}
	}
	return ends, nil
}

// Reached reports whether the group has committed at least ends on every
// partition of ends (a partition whose messages before its end have all
// been removed by retention, or were never written, counts as reached).
func (g *GroupProgress) Reached(ctx context.Context, ends map[int32]int64) (bool, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if err := ctx.Err(); err != nil {
		return false, err
	}
	if err := g.connect(); err != nil {
		return false, err
	}
	parts := make([]int32, 0, len(ends))
	for p := range ends {
		parts = append(parts, p)
	}
	committed, err := committedOffsets(g.admin, g.group, g.topic, parts)
	if err != nil {
		return false, err
	}
	for p, end := range ends {
		at, ok := committed[p]
		if !ok {
			return false, fmt.Errorf("committed offset of %s on %s/%d: not answered", g.group, g.topic, p)
		}
		if at >= end {
			continue
		}
		oldest, err := g.client.GetOffset(g.topic, p, sarama.OffsetOldest)
		if err != nil {
			return false, fmt.Errorf("start of %s/%d: %w", g.topic, p, err)
		}
		if max(at, oldest) < end {
			return false, nil
		}
	}
	return true, nil
}

// lazyAdmin is a Kafka client and a cluster admin on it, created at
// their first use (connect) and released by Close. Its users hold mu
// while they use them.
type lazyAdmin struct {
	cfg KafkaConfig

	mu     sync.Mutex
	client sarama.Client
	admin  sarama.ClusterAdmin // owns client
	closed bool                // by Close: no more connections
}

// connect creates the client and the cluster admin, once. a.mu is held.
func (a *lazyAdmin) connect() error {
	if a.closed {
		return errors.New("kafka admin closed")
	}
	if a.admin != nil {
		return nil
	}
	c, ad, err := newAdmin(a.cfg)
	if err != nil {
		return err
	}
	a.client, a.admin = c, ad
	return nil
}

// Close releases the cluster admin and its Kafka client; later uses fail.
func (a *lazyAdmin) Close() error {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.closed = true
	if a.admin == nil {
		return nil
	}
	err := a.admin.Close()
	a.client, a.admin = nil, nil
	return err
}

// newAdmin returns a Kafka client and a cluster admin that owns it.
func newAdmin(cfg KafkaConfig) (sarama.Client, sarama.ClusterAdmin, error) {
	sc, err := cfg.Sarama()
	if err != nil {
		return nil, nil, err
	}
	sc.Metadata.AllowAutoTopicCreation = false // reading offsets creates nothing
	c, err := sarama.NewClient(cfg.Brokers, sc)
	if err != nil {
		return nil, nil, fmt.Errorf("kafka client: %w", err)
	}
	a, err := sarama.NewClusterAdminFromClient(c)
	if err != nil {
		c.Close()
		return nil, nil, fmt.Errorf("kafka admin: %w", err)
	}
	return c, a, nil
}

// committedOffsets returns group's committed offset on each of topic's
// parts, -1 where it has committed none. A partition whose answer carries
// an error is left out.
func committedOffsets(admin sarama.ClusterAdmin, group, topic string, parts []int32) (map[int32]int64, error) {
	resp, err := admin.ListConsumerGroupOffsets(group, map[string][]int32{topic: parts})
	// Kafka answers offset -1 for a group it does not know; some brokers
	// (kfake) answer GROUP_ID_NOT_FOUND instead.
	unknown := errors.Is(err, sarama.ErrGroupIDNotFound)
	if err != nil && !unknown {
		return nil, fmt.Errorf("offsets of group %s: %w", group, err)
	}
	out := make(map[int32]int64, len(parts))
	for _, p := range parts {
		if unknown {
			out[p] = -1
			continue
		}
		b := resp.GetBlock(topic, p)
		if b == nil || b.Err != sarama.ErrNoError {
			continue
		}
		out[p] = b.Offset
	}
	return out, nil
}
