package main

// A minimal proto3 reader/writer on protowire, enough for the two schemas of
// docs/protocol.md (proto/tunnel.proto, proto/records.proto). Hand-written so
// that every decoding rule the document states is visible here:
//   * fields in any order; unknown fields (and known numbers with another wire
//     type, as protobuf runtimes do) are skipped;
//   * a scalar seen twice keeps the last value; an embedded message seen twice
//     is merged (its occurrences concatenated, as protobuf merges them);
//   * strings must be valid UTF-8.

import (
	"errors"
	"fmt"
	"unicode/utf8"

	"google.golang.org/protobuf/encoding/protowire"
)

var errMalformed = errors.New("malformed protobuf")

// pbField is one field occurrence: varint value for VarintType, bytes for BytesType.
type pbField struct {
	num    protowire.Number
	typ    protowire.Type
	varint uint64
	bytes  []byte
}

// pbWalk calls fn for every field of b in order, or fails on malformed wire data.
func pbWalk(b []byte, fn func(f pbField) error) error {
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return errMalformed
		}
		b = b[n:]
		f := pbField{num: num, typ: typ}
		switch typ {
		case protowire.VarintType:
			v, m := protowire.ConsumeVarint(b)
			if m < 0 {
				return errMalformed
			}
			f.varint, b = v, b[m:]
		case protowire.BytesType:
			v, m := protowire.ConsumeBytes(b)
			if m < 0 {
				return errMalformed
			}
			f.bytes, b = v, b[m:]
		default:
			m := protowire.ConsumeFieldValue(num, typ, b)
			if m < 0 {
				return errMalformed
			}
			b = b[m:]
		}
		if err := fn(f); err != nil {
			return err
		}
	}
	return nil
}

func pbString(what string, v []byte) (string, error) {
	if !utf8.Valid(v) {
		return "", fmt.Errorf("%s is not valid UTF-8", what)
	}
	return string(v), nil
}

// pbWriter appends fields in the order called; zero scalars are omitted like proto3 does.
type pbWriter struct{ b []byte }

func (w *pbWriter) varint(num protowire.Number, v uint64) {
	if v == 0 {
		return
	}
	w.b = protowire.AppendTag(w.b, num, protowire.VarintType)
	w.b = protowire.AppendVarint(w.b, v)
}

func (w *pbWriter) bool(num protowire.Number, v bool) {
	if v {
		w.varint(num, 1)
	}
}

// bytes writes a singular bytes/string field (omitted when empty).
func (w *pbWriter) bytes(num protowire.Number, v []byte) {
	if len(v) == 0 {
		return
	}
	w.repeated(num, v)
}

// repeated writes one element of a repeated bytes/string field, or an embedded message that is present.
func (w *pbWriter) repeated(num protowire.Number, v []byte) {
	w.b = protowire.AppendTag(w.b, num, protowire.BytesType)
	w.b = protowire.AppendBytes(w.b, v)
}
