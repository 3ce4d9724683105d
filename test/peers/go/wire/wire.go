// Package wire is the helloworld messages' codec for the Go peers.
//
// HelloRequest and HelloReply are both `string field 1`. Debian's
// github.com/golang/protobuf (the codec grpc-go uses) and
// google.golang.org/protobuf are from different generations and the old
// codec panics on the new well-known types, so the peers carry their own
// codec, registered under grpc-go's default name "proto": it writes and
// reads Str by hand and hands every other type (the etcd client's own
// messages) to the codec it replaces.
package wire

import (
	"fmt"

	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/encoding/proto"
)

// Str is HelloRequest / HelloReply: one string in field 1.
type Str struct{ Value string }

type codec struct{ next encoding.Codec }

func (codec) Name() string { return "proto" }

func (c codec) Marshal(v interface{}) ([]byte, error) {
	m, ok := v.(*Str)
	if !ok {
		return c.next.Marshal(v)
	}
	if m.Value == "" {
		return nil, nil
	}
	out := []byte{0x0a}
	out = appendVarint(out, uint64(len(m.Value)))
	return append(out, m.Value...), nil
}

func (c codec) Unmarshal(data []byte, v interface{}) error {
	m, ok := v.(*Str)
	if !ok {
		return c.next.Unmarshal(data, v)
	}
	m.Value = ""
	for i := 0; i < len(data); {
		key, n := readVarint(data[i:])
		if n == 0 {
			return fmt.Errorf("wire: bad varint")
		}
		i += n
		switch key & 7 {
		case 0:
			_, n = readVarint(data[i:])
			if n == 0 {
				return fmt.Errorf("wire: bad varint")
			}
			i += n
		case 1:
			i += 8
		case 5:
			i += 4
		case 2:
			l, n := readVarint(data[i:])
			if n == 0 || i+n+int(l) > len(data) {
				return fmt.Errorf("wire: bad length")
			}
			i += n
			if key>>3 == 1 {
				m.Value = string(data[i : i+int(l)])
			}
			i += int(l)
		default:
			return fmt.Errorf("wire: unsupported wire type %d", key&7)
		}
	}
	return nil
}

func appendVarint(b []byte, v uint64) []byte {
	for v >= 0x80 {
		b = append(b, byte(v)|0x80)
		v >>= 7
	}
	return append(b, byte(v))
}

func readVarint(b []byte) (uint64, int) {
	var v uint64
	for i := 0; i < len(b) && i < 10; i++ {
		v |= uint64(b[i]&0x7f) << (7 * uint(i))
		if b[i] < 0x80 {
			return v, i + 1
		}
	}
	return 0, 0
}

func init() { encoding.RegisterCodec(codec{next: encoding.GetCodec(proto.Name)}) }
