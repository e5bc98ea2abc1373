package faults

import (
	"strings"
	"testing"
)

func TestCheckerClassifies(t *testing.T) {
	const ch = "#c"
	acked := func(key, id string, seq uint64) Op {
		return Op{Key: key, Channel: ch, ID: id, Author: "alice", Seq: seq, Acked: true, Via: "n1"}
	}
	unacked := func(key string) Op { return Op{Key: key, Channel: ch, Err: "killed", Via: "n1"} }
	obs := func(key, id string, seq uint64) Obs {
		return Obs{ID: id, Key: key, Channel: ch, Author: "alice", Seq: seq}
	}
	tests := []struct {
		name      string
		ops       []Op
		seen      []Obs
		want      map[Class]int
		reordered int
		ok        bool
		problem   string
	}{
		{"all delivered", []Op{acked("k1", "i1", 1), acked("k2", "i2", 2)},
			[]Obs{obs("k1", "i1", 1), obs("k2", "i2", 2)}, map[Class]int{Delivered: 2}, 0, true, ""},
		{"acked lost", []Op{acked("k1", "i1", 1), acked("k2", "i2", 2)},
			[]Obs{obs("k1", "i1", 1)}, map[Class]int{Delivered: 1, Lost: 1}, 0, false, `lost: key "k2"`},
		{"same id twice", []Op{acked("k1", "i1", 1)},
			[]Obs{obs("k1", "i1", 1), obs("k1", "i1", 1)}, map[Class]int{Delivered: 1, Duplicated: 1}, 1, false, "duplicated: id i1"},
		{"one attempt under two ids", []Op{unacked("k1")},
			[]Obs{obs("k1", "i1", 1), obs("k1", "i9", 2)}, map[Class]int{Duplicated: 1}, 0, false, "stored under 2 ids"},
		{"never sent", []Op{acked("k1", "i1", 1)},
			[]Obs{obs("k1", "i1", 1), obs("zz", "i7", 2)}, map[Class]int{Delivered: 1, Unexpected: 1}, 0, false, "never sent"},
		{"acked under another id", []Op{acked("k1", "i1", 1)},
			[]Obs{obs("k1", "i2", 1)}, map[Class]int{Lost: 1, Unexpected: 1}, 0, false, "acknowledged as i1"},
		{"unacked may or may not arrive", []Op{unacked("k1"), unacked("k2")},
			[]Obs{obs("k1", "i1", 1)}, map[Class]int{Maybe: 1, Absent: 1}, 0, true, ""},
		{"author order broken", []Op{acked("k1", "i1", 1), acked("k2", "i2", 2)},
			[]Obs{obs("k2", "i2", 2), obs("k1", "i1", 1)}, map[Class]int{Delivered: 2}, 1, false, "reordered"},
		{"other channel ignored", []Op{acked("k1", "i1", 1), {Key: "x", Channel: "#other", ID: "ix", Acked: true}},
			[]Obs{obs("k1", "i1", 1)}, map[Class]int{Delivered: 1}, 0, true, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := NewHistory()
			for _, op := range tt.ops {
				h.Record(op)
			}
			h.Observe("n2", ch, tt.seen)
			r := h.Check()
			if len(r.Views) != 1 {
				t.Fatalf("got %d views, want 1", len(r.Views))
			}
			v := r.Views[0]
			for c := range numClasses {
				if got, want := v.Counts[c], tt.want[c]; got != want {
					t.Errorf("%s = %d, want %d\n%s", c, got, want, r)
				}
			}
			if v.Reordered != tt.reordered {
				t.Errorf("reordered = %d, want %d\n%s", v.Reordered, tt.reordered, r)
			}
			if r.OK() != tt.ok {
				t.Errorf("OK() = %v, want %v\n%s", r.OK(), tt.ok, r)
			}
			if s := r.String(); tt.problem != "" && !strings.Contains(s, tt.problem) {
				t.Errorf("summary lacks %q:\n%s", tt.problem, s)
			}
		})
	}
}

func TestCheckerSummary(t *testing.T) {
	h := NewHistory()
	h.Record(Op{Key: "a", Channel: "#c", ID: "ia", Acked: true, Author: "p", Seq: 1})
	h.Record(Op{Key: "b", Channel: "#c", Err: "boom"})
	h.Observe("n2", "#c", []Obs{{ID: "ia", Key: "a", Channel: "#c", Author: "p", Seq: 1}})
	h.Observe("n1", "#c", []Obs{{ID: "ia", Key: "a", Channel: "#c", Author: "p", Seq: 1}, {ID: "ib", Key: "b", Channel: "#c", Author: "p", Seq: 2}})
	got := h.Check().String()
	want := "OK: 2 attempts, 1 acknowledged, 2 node histories checked, delivered 2, lost 0, duplicated 0, unexpected 0, maybe 1, absent 1, reordered 0\n" +
		"  n1 #c: 2 records, delivered 1, maybe 1\n" +
		"  n2 #c: 1 records, delivered 1, absent 1\n"
	if got != want {
		t.Fatalf("summary:\n%s\nwant:\n%s", got, want)
	}
}
