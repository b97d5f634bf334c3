package comet

import (
	"fmt"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// checkWire reports what makes b, a protobuf encoding of a message of
// descriptor md that proto.Unmarshal accepted, a frame docs/protocol.md
// refuses as BAD_FRAME, where protobuf's own rules would serve it:
//
//   - a member of a oneof set twice (two bodies, or both user and room in
//     a Send), which a parser settles by keeping the last one, so that a
//     frame would be served as something other than what it began as;
//   - a known field encoded with a wire type its kind does not take (a
//     request_id sent as bytes, say), which a parser keeps aside as an
//     unknown field, serving the frame as if it were absent.
//
// Fields the descriptor does not know are skipped, as protobuf skips
// them: a newer client's fields do not break a frame. A message field is
// checked inside too, to the depth proto.Unmarshal allowed.
func checkWire(md protoreflect.MessageDescriptor, b []byte) error {
	var seen []protoreflect.OneofDescriptor // few: a message has one oneof at most
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return protowire.ParseError(n)
		}
		b = b[n:]
		n = protowire.ConsumeFieldValue(num, typ, b)
		if n < 0 {
			return protowire.ParseError(n)
		}
		value := b[:n]
		b = b[n:]
		fd := md.Fields().ByNumber(num)
		if fd == nil {
			continue
		}
		if !wireTypeFits(fd, typ) {
			return fmt.Errorf("field %s (%d) of %s sent as wire type %d", fd.Name(), num, md.Name(), typ)
		}
		if od := fd.ContainingOneof(); od != nil && !od.IsSynthetic() {
			for _, s := range seen {
				if s == od {
					return fmt.Errorf("%s of %s set more than once (%s among them)", od.Name(), md.Name(), fd.Name())
				}
			}
			seen = append(seen, od)
		}
		if fd.Kind() == protoreflect.MessageKind {
			v, m := protowire.ConsumeBytes(value)
			if m < 0 {
				return protowire.ParseError(m)
			}
			if err := checkWire(fd.Message(), v); err != nil {
				return err
			}
		}
	}
	return nil
}

// wireTypeFits reports whether a field of fd's kind may arrive as wire
// type typ: its own, or, for a repeated number, also packed.
func wireTypeFits(fd protoreflect.FieldDescriptor, typ protowire.Type) bool {
	var want protowire.Type
	switch fd.Kind() {
	case protoreflect.BoolKind, protoreflect.EnumKind,
		protoreflect.Int32Kind, protoreflect.Sint32Kind, protoreflect.Uint32Kind,
		protoreflect.Int64Kind, protoreflect.Sint64Kind, protoreflect.Uint64Kind:
		want = protowire.VarintType
	case protoreflect.Fixed32Kind, protoreflect.Sfixed32Kind, protoreflect.FloatKind:
		want = protowire.Fixed32Type
	case protoreflect.Fixed64Kind, protoreflect.Sfixed64Kind, protoreflect.DoubleKind:
		want = protowire.Fixed64Type
	case protoreflect.StringKind, protoreflect.BytesKind, protoreflect.MessageKind:
		want = protowire.BytesType
	case protoreflect.GroupKind:
		want = protowire.StartGroupType
	default:
		return false
	}
	if typ == want {
		return true
	}
	return fd.IsList() && want != protowire.BytesType && want != protowire.StartGroupType && typ == protowire.BytesType
}
