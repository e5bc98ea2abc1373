package mcpserver

import (
	"fmt"
	"testing"

	"github.com/confabhq/confab/mesh"
)

func rec(i int, ch, name string) mesh.Record {
	return mesh.Record{Env: &mesh.Envelope{Channel: ch, Name: name, Content: fmt.Sprint(i)}, Cursor: fmt.Sprintf("%016x", i)}
}

func TestInboxTake(t *testing.T) {
	b := newInbox(3)
	b.push(rec(1, "#a", "x"))
	b.push(rec(2, "#b", "y"))
	b.push(rec(3, "#a", "y"))
	b.push(rec(4, "#b", "x")) // drops 1
	onlyB := func(e *mesh.Envelope) bool { return e.Channel == "#b" }
	got, remaining, dropped, _ := b.take(onlyB, 1)
	if len(got) != 1 || got[0].Env.Content != "2" || remaining != 2 || dropped != 1 {
		t.Fatalf("take #b max 1 = %v, remaining %d, dropped %d; want [2], 2, 1", got, remaining, dropped)
	}
	all := func(*mesh.Envelope) bool { return true }
	got, remaining, dropped, changed := b.take(all, 10)
	if len(got) != 2 || got[0].Env.Content != "3" || got[1].Env.Content != "4" || remaining != 0 || dropped != 0 {
		t.Fatalf("take all = %v, remaining %d, dropped %d; want [3 4], 0, 0", got, remaining, dropped)
	}
	select {
	case <-changed:
		t.Fatal("changed closed before a push")
	default:
	}
	b.push(rec(5, "#a", "x"))
	select {
	case <-changed:
	default:
		t.Fatal("push did not signal changed")
	}
}
