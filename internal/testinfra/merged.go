package testinfra

import (
	"testing"

	"github.com/ThreeDotsLabs/watermill/message"
	"google.golang.org/protobuf/proto"

	"github.com/laneim/laneim/topics"
)

// Merged returns the message a consumer hands a handler of topic when it
// merges a run of payloads (wiring.BatchingSubscriber): the first payload
// with the others' encodings appended to its BatchField
// (topics.AppendBatch). The payloads are not changed.
func Merged[T proto.Message](t testing.TB, topic topics.Topic[T], payloads ...T) *message.Message {
	t.Helper()
	if topic.BatchField == 0 {
		t.Fatalf("topic %s does not batch", topic.Name)
	}
	var merged []byte
	for i, v := range payloads {
		b, err := proto.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		if i == 0 {
			merged = b
		} else {
			merged = topics.AppendBatch(merged, topic.BatchField, b)
		}
	}
	return message.NewMessage("merged", merged)
}
