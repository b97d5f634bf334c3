package comet

import (
	"encoding/hex"
	"strings"
	"testing"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/descriptorpb"

	"github.com/laneim/laneim/proto/clientpb"
)

// TestCheckWire: protobuf frames that proto.Unmarshal accepts but
// docs/protocol.md refuses (two bodies, user and room in a Send, a known
// field of another wire type) are refused with their request id; valid
// frames, unknown fields and packed numbers are not. The hex cases came
// from an independent client written from docs/protocol.md.
func TestCheckWire(t *testing.T) {
	marshal := func(f *clientpb.ClientFrame) string {
		b, err := proto.Marshal(f)
		if err != nil {
			t.Fatal(err)
		}
		return hex.EncodeToString(b)
	}
	for _, tt := range []struct {
		name    string
		hex     string
		refused string // in the error; "" accepted
		req     uint64
	}{
		{"ping", marshal(&clientpb.ClientFrame{RequestId: 1, Body: &clientpb.ClientFrame_Ping{Ping: &clientpb.Ping{ClientTimeUnixMs: 5}}}), "", 1},
		{"send to a room", marshal(&clientpb.ClientFrame{RequestId: 2, Body: &clientpb.ClientFrame_Send{Send: &clientpb.Send{ClientMsgId: "m", To: &clientpb.Send_Room{Room: "lobby"}, Body: []byte("hi"), Mentions: []string{"a", "b"}}}}), "", 2},
		{"no body", marshal(&clientpb.ClientFrame{RequestId: 3}), "", 3},
		{"an unknown field", "08047a00a20603010203", "", 4},
		{"ping then join", "082d7a0208015a060a046c6f6279", "body of ClientFrame set more than once (join", 45},
		{"join then ping", "082e5a060a046c6f62797a020801", "body of ClientFrame set more than once (ping", 46},
		{"the same body twice", "082f7a007a00", "body of ClientFrame set more than once (ping", 47},
		{"send to user then room", "08326a0f0a01781203626f621a056c6f626279", "to of Send set more than once (room", 50},
		{"send to room then user", "08356a0f0a0178" + "1a056c6f626279" + "1203626f62", "to of Send set more than once (user", 53},
		{"request id as bytes", "0a01017a00", "field request_id (1) of ClientFrame sent as wire type 2", 0},
		{"a body as a varint", "08367a00800105", "field sync (16) of ClientFrame sent as wire type 0", 54},
		{"ping's time as bytes", "08377a030a0100", "field client_time_unix_ms (1) of Ping sent as wire type 2", 55},
		{"a string as a fixed32", "08386a050d00000000", "field client_msg_id (1) of Send sent as wire type 5", 56},
	} {
		t.Run(tt.name, func(t *testing.T) {
			b, err := hex.DecodeString(tt.hex)
			if err != nil {
				t.Fatal(err)
			}
			if proto.Unmarshal(b, &clientpb.ClientFrame{}) != nil {
				t.Fatal("proto.Unmarshal refuses it: not a case for checkWire")
			}
			_, req, err := decodeFrame(false, b)
			switch {
			case tt.refused == "" && err != nil:
				t.Fatalf("refused: %v", err)
			case tt.refused != "" && (err == nil || !strings.Contains(err.Error(), tt.refused)):
				t.Fatalf("error %v, want one saying %q", err, tt.refused)
			case req != tt.req:
				t.Fatalf("request id %d, want %d", req, tt.req)
			}
		})
	}
}

// TestWireTypeFits: a repeated number may come packed or not, a
// repeated string only as bytes, a single number only as itself.
func TestWireTypeFits(t *testing.T) {
	// The client's messages have no repeated number: descriptor.proto's
	// SourceCodeInfo.Location.path is one.
	path := (&descriptorpb.SourceCodeInfo_Location{}).ProtoReflect().Descriptor().Fields().ByName("path")
	mentions := (&clientpb.Send{}).ProtoReflect().Descriptor().Fields().ByName("mentions")
	seq := (&clientpb.Sync{}).ProtoReflect().Descriptor().Fields().ByName("after_seq")
	for _, tt := range []struct {
		fd   protoreflect.FieldDescriptor
		typ  protowire.Type
		fits bool
	}{
		{path, protowire.VarintType, true},
		{path, protowire.BytesType, true},
		{path, protowire.Fixed32Type, false},
		{mentions, protowire.BytesType, true},
		{mentions, protowire.VarintType, false},
		{seq, protowire.VarintType, true},
		{seq, protowire.BytesType, false},
	} {
		if got := wireTypeFits(tt.fd, tt.typ); got != tt.fits {
			t.Errorf("%s as wire type %d: fits %v, want %v", tt.fd.FullName(), tt.typ, got, tt.fits)
		}
	}
}
