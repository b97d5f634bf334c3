package topics

import (
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/laneim/laneim/proto/topicpb"
)

// AppendBatch appends next, the encoded payload of a later message with
// the same key, to payload, the encoded payload of a topic whose
// BatchField is field: the result decodes as payload with next added to
// its "more" field. It is how a consumer merges a run of messages without
// decoding them.
func AppendBatch(payload []byte, field protowire.Number, next []byte) []byte {
	payload = protowire.AppendTag(payload, field, protowire.BytesType)
	return protowire.AppendBytes(payload, next)
}

// SplitSubmitted takes a batch of submissions apart: s, then each of its
// more in order, depth first (a merged submission's more may have more of
// their own). Each returned submission has no more left: s's are cleared.
// It is Split(Submitted, s).
func SplitSubmitted(s *topicpb.Submitted) []*topicpb.Submitted {
	return Split(Submitted, s)
}

// SplitRouted takes a batch of routed messages apart: r, then each of its
// more in order, depth first. Each returned message has no more (r's are
// cleared) and carries its targets (comets, room, users, broadcast): its
// own when it has them (a message merged by a consumer), else those of
// the payload it was joined to (JoinRouted).
func SplitRouted(r *topicpb.Routed) []*topicpb.Routed {
	if len(r.GetMore()) == 0 {
		return []*topicpb.Routed{r}
	}
	return splitRouted(r, r, nil)
}

func splitRouted(parent, r *topicpb.Routed, out []*topicpb.Routed) []*topicpb.Routed {
	more := r.More
	r.More = nil
	if r.GetRoom() == "" && len(r.GetUsers()) == 0 && !r.GetBroadcast() {
		r.Comets, r.Room, r.Users, r.Broadcast = parent.GetComets(), parent.GetRoom(), parent.GetUsers(), parent.GetBroadcast()
	}
	out = append(out, r)
	for _, m := range more {
		out = splitRouted(r, m, out)
	}
	return out
}

// JoinRouted makes one payload of messages of one conversation routed to
// the same targets, in seq order: the first, carrying the targets, with
// the others as its more, each left with its message and
// submitted_unix_ms only. It returns nil for none.
func JoinRouted(rs []*topicpb.Routed) *topicpb.Routed {
	if len(rs) == 0 {
		return nil
	}
	top := rs[0]
	top.More = nil
	for _, r := range rs[1:] {
		top.More = append(top.More, &topicpb.Routed{Message: r.GetMessage(), SubmittedUnixMs: r.GetSubmittedUnixMs()})
	}
	return top
}

// Split takes a batch of t's payloads apart: v, then each element of
// its BatchField in order, depth first (a merged payload's elements may
// have more of their own). Each returned payload has its BatchField
// cleared. A topic with no BatchField has batches of one.
func Split[T proto.Message](t Topic[T], v T) []T {
	if t.BatchField == 0 {
		return []T{v}
	}
	fd := v.ProtoReflect().Descriptor().Fields().ByNumber(t.BatchField)
	if fd == nil || !fd.IsList() {
		return []T{v}
	}
	return split(v, fd, nil)
}

func split[T proto.Message](v T, fd protoreflect.FieldDescriptor, out []T) []T {
	m := v.ProtoReflect()
	list := m.Get(fd).List()
	out = append(out, v)
	if list.Len() == 0 {
		return out
	}
	more := make([]T, list.Len())
	for i := range more {
		more[i] = list.Get(i).Message().Interface().(T)
	}
	m.Clear(fd)
	for _, e := range more {
		out = split(e, fd, out)
	}
	return out
}
