// Package conformance runs Watermill's universal Pub/Sub suite against laneIM's
// Kafka Publisher and Subscriber (package wiring) over the Kafka protocol.
// It is a package of its own, without goleak: some of the suite's sub-tests
// end their subscriptions by cancelling a context and never close the
// subscriber, whose reconnect goroutines then live until the process ends.
package conformance_test

import (
	"crypto/sha256"
	"encoding/hex"
	"log/slog"
	"testing"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/ThreeDotsLabs/watermill/pubsub/tests"

	"time"

	"github.com/laneim/laneim/internal/testinfra"
	"github.com/laneim/laneim/topics"
	"github.com/laneim/laneim/wiring"
)

// subscriberOnly hides everything of a subscriber but message.Subscriber.
// wiring.NewSubscriber returns Watermill's *kafka.Subscriber, which
// advertises message.SubscribeInitializer but fails it: laneIM creates
// topics with EnsureTopics (partition counts matter) and leaves
// InitializeTopicDetails unset. The suite calls SubscribeInitialize when
// it is there; without it, the broker auto-creates the suite's topics on
// first use, as kfake (testinfra) and Kafka's defaults allow.
type subscriberOnly struct{ message.Subscriber }

// TestPubSubSuite runs Watermill's universal Pub/Sub tests against
// wiring's Publisher and Subscriber on the Kafka protocol.
func TestPubSubSuite(t *testing.T) {
	kcfg := testinfra.Kafka(t)
	// The suite nacks hundreds of messages on purpose; the default pause
	// before each resend would make it take half a minute.
	kcfg.NackResendSleep = 5 * time.Millisecond
	logger := slog.New(slog.DiscardHandler)
	withGroup := func(t *testing.T, group string) (message.Publisher, message.Subscriber) {
		pub, err := wiring.NewPublisher(kcfg)
		if err != nil {
			t.Fatal(err)
		}
		sub, err := wiring.NewSubscriber(kcfg, group, logger)
		if err != nil {
			t.Fatal(err)
		}
		return pub, subscriberOnly{sub}
	}
	// Every subscriber of one sub-test shares a consumer group, as the
	// handlers of a process do; separate groups per sub-test keep the
	// parallel sub-tests from rebalancing one another.
	perTest := func(t *testing.T) (message.Publisher, message.Subscriber) {
		h := sha256.Sum256([]byte(t.Name()))
		return withGroup(t, "suite."+hex.EncodeToString(h[:8]))
	}
	features := tests.Features{
		ConsumerGroups:      true,
		ExactlyOnceDelivery: false, // at-least-once: redelivery after a rebalance or Nack
		// Messages with one key (KeyMetadata; the suite's carry none, so
		// they share the empty key) go to one partition, in order.
		GuaranteedOrder: true,
		Persistent:      true,
		// Within a group a new subscriber resumes from the committed
		// offset; it sees old messages only in a new group.
		NewSubscriberReceivesOldMessages: false,
		RestartServiceCommand:            nil, // kfake in process: no restart
	}
	t.Run("watermill", func(t *testing.T) { tests.TestPubSub(t, features, perTest, withGroup) })

	// The batching subscriber, which wiring.NewSubscriber uses on the
	// topics whose payloads batch, with merging off: the suite's payloads
	// are not protobuf, and a merged message is by design not the one
	// the suite published. Its merging is tested in package wiring.
	batching := func(t *testing.T, group string) (message.Publisher, message.Subscriber) {
		pub, err := wiring.NewPublisher(kcfg)
		if err != nil {
			t.Fatal(err)
		}
		noMerge := func(string) (topics.Spec, bool) { return topics.Spec{}, false }
		sub, err := wiring.NewBatchingSubscriber(kcfg, group, logger, noMerge)
		if err != nil {
			t.Fatal(err)
		}
		return pub, sub
	}
	t.Run("batching", func(t *testing.T) {
		tests.TestPubSub(t, features, func(t *testing.T) (message.Publisher, message.Subscriber) {
			h := sha256.Sum256([]byte(t.Name()))
			return batching(t, "suite."+hex.EncodeToString(h[:8]))
		}, batching)
	})
}
