package bundle

import (
	"bytes"
	"errors"
	"io"
	"strings"
	"testing"
	"testing/iotest"
)

func frame(t testing.TB, v any) []byte {
	t.Helper()
	var b bytes.Buffer
	if err := writeFrame(&b, v); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

func TestFrames(t *testing.T) {
	h := strings.Repeat("ab", 32)
	tests := []struct {
		name    string
		in      []byte
		req     bool
		wantErr error
	}{
		{"request", frame(t, request{Type: reqType, V: 1, Hash: h, Offset: 7}), true, nil},
		{"request bad hash", frame(t, request{Type: reqType, V: 1, Hash: "../x", Offset: 7}), true, ErrProtocol},
		{"request negative offset", frame(t, request{Type: reqType, V: 1, Hash: h, Offset: -1}), true, ErrProtocol},
		{"request wrong version", frame(t, request{Type: reqType, V: 2, Hash: h}), true, ErrProtocol},
		{"request as response", frame(t, request{Type: reqType, V: 1, Hash: h}), false, ErrProtocol},
		{"response", frame(t, response{Type: respType, V: 1, Size: 10, Offset: 3}), false, nil},
		{"response error", frame(t, response{Type: respType, V: 1, Error: codeBusy}), false, nil},
		{"response offset past size", frame(t, response{Type: respType, V: 1, Size: 10, Offset: 11}), false, ErrProtocol},
		{"response too large", frame(t, response{Type: respType, V: 1, Size: MaxBundleSize + 1}), false, ErrProtocol},
		{"zero length", []byte{0, 0, 0, 0}, true, ErrProtocol},
		{"huge length", []byte{0xff, 0xff, 0xff, 0xff, '{'}, true, ErrProtocol},
		{"truncated", frame(t, request{Type: reqType, V: 1, Hash: h})[:20], true, io.ErrUnexpectedEOF},
		{"empty", nil, true, io.EOF},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var err error
			// One byte at a time, as a slow stream delivers it.
			r := iotest.OneByteReader(bytes.NewReader(tt.in))
			if tt.req {
				_, err = decodeRequest(r)
			} else {
				_, err = decodeResponse(r)
			}
			if tt.wantErr == nil && err != nil || tt.wantErr != nil && !errors.Is(err, tt.wantErr) {
				t.Errorf("decode = %v, want %v", err, tt.wantErr)
			}
		})
	}
}

func FuzzDecodeFrame(f *testing.F) {
	h := strings.Repeat("0f", 32)
	f.Add(frame(f, request{Type: reqType, V: 1, Hash: h, Offset: 0}), uint(3))
	f.Add(frame(f, request{Type: reqType, V: 1, Hash: h, Offset: 1 << 20}), uint(0))
	f.Add(frame(f, response{Type: respType, V: 1, Size: 209779449, Offset: 1049353}), uint(10))
	f.Add(frame(f, response{Type: respType, V: 1, Error: codeUnavailable}), uint(4))
	f.Add([]byte{0, 0, 0, 2, '{', '}'}, uint(1))
	f.Fuzz(func(t *testing.T, b []byte, split uint) {
		// Split the input in two reads to exercise partial frames.
		cut := int(split % uint(len(b)+1))
		mk := func() io.Reader { return io.MultiReader(bytes.NewReader(b[:cut]), bytes.NewReader(b[cut:])) }
		if q, err := decodeRequest(mk()); err == nil {
			if !ValidHash(q.Hash) || q.Offset < 0 || q.Offset > MaxBundleSize {
				t.Fatalf("accepted bad request %+v", q)
			}
			if _, err := decodeRequest(bytes.NewReader(frame(t, q))); err != nil {
				t.Fatalf("re-decode request: %v", err)
			}
		}
		if p, err := decodeResponse(mk()); err == nil && p.Error == "" {
			if p.Size <= 0 || p.Size > MaxBundleSize || p.Offset < 0 || p.Offset > p.Size {
				t.Fatalf("accepted bad response %+v", p)
			}
		}
	})
}
