package comet

import (
	"strings"
	"sync"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/laneim/laneim/proto/clientpb"
)

// frame is a ServerFrame encoded at most once per encoding; the same bytes
// go to every connection that receives it. Safe for concurrent use.
type frame struct {
	msg *clientpb.ServerFrame

	pbOnce, jsonOnce sync.Once
	pb, json         []byte
}

func newFrame(f *clientpb.ServerFrame) *frame { return &frame{msg: f} }

// bytes returns the frame in the connection's encoding. Frames are built
// by laneIM from valid messages; should one not encode (a string that is
// not UTF-8, say), the client gets an Error frame instead of nothing.
func (f *frame) bytes(useJSON bool) []byte {
	if useJSON {
		f.jsonOnce.Do(func() {
			var err error
			if f.json, err = protojson.Marshal(f.msg); err != nil {
				f.json, _ = protojson.Marshal(encodeFailure(f.msg, err))
			}
		})
		return f.json
	}
	f.pbOnce.Do(func() {
		var err error
		if f.pb, err = proto.Marshal(f.msg); err != nil {
			f.pb, _ = proto.Marshal(encodeFailure(f.msg, err))
		}
	})
	return f.pb
}

func encodeFailure(f *clientpb.ServerFrame, err error) *clientpb.ServerFrame {
	return &clientpb.ServerFrame{RequestId: f.GetRequestId(), Body: &clientpb.ServerFrame_Error{Error: &clientpb.Error{
		Code: clientpb.Error_UNAVAILABLE, Text: strings.ToValidUTF8("server could not encode a frame: "+err.Error(), "?"),
	}}}
}
