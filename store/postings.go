package store

import (
	"encoding/binary"
	"fmt"
	"slices"
)

// Postings are packed per indexer transaction: one key per word and
// transaction, s/<word> 0x00 <first offset>, whose value lists the word's
// later offsets of that transaction as uvarint gaps (each > 0). An empty
// value is a list of one offset, so the keys of index version 2 (one nil
// value per word and envelope) read as lists of one. A word's lists cover
// disjoint offset ranges, in key order: the indexer writes offsets in
// increasing order, one transaction after the other, and retention only
// removes offsets from a list (rewriting it under its new first offset).

// encodePostings returns the value of the list offs (ascending, distinct);
// its key holds offs[0].
func encodePostings(offs []uint64) []byte {
	if len(offs) < 2 {
		return nil
	}
	v := make([]byte, 0, 2*(len(offs)-1))
	for i := 1; i < len(offs); i++ {
		v = binary.AppendUvarint(v, offs[i]-offs[i-1])
	}
	return v
}

// decodePostings appends to dst the list with first offset first and value
// v; a gap of 0, an overflow or a truncated varint is corruption.
func decodePostings(first uint64, v []byte, dst []uint64) ([]uint64, error) {
	dst = append(dst, first)
	cur := first
	for len(v) > 0 {
		d, n := binary.Uvarint(v)
		if n <= 0 || d == 0 || cur+d < cur {
			return dst, fmt.Errorf("%w: posting list at %d", ErrCorrupt, first)
		}
		cur += d
		dst = append(dst, cur)
		v = v[n:]
	}
	return dst, nil
}

// postingBatch collects the postings of one indexer transaction, a list per
// word, with estimates of the badger entries and bytes they will take.
type postingBatch struct {
	offs          map[string][]uint64
	words         []string // in first-seen order
	entries, size int64
}

func newPostingBatch() *postingBatch {
	return &postingBatch{offs: make(map[string][]uint64)}
}

// add records word at off; offsets must be added in increasing order.
func (p *postingBatch) add(word string, off uint64) {
	l, ok := p.offs[word]
	if !ok {
		p.words = append(p.words, word)
		p.entries++
		p.size += int64(len(prefixPosting)+len(word)+1+8) + 16
	}
	p.offs[word] = append(l, off)
	p.size += binary.MaxVarintLen64
}

// fits reports whether n more words (of at most maxTokenBytes) may be added
// without passing maxCount entries or maxSize bytes.
func (p *postingBatch) fits(n int, maxCount, maxSize int64) bool {
	return p.entries+int64(n) < maxCount && p.size+int64(n)*(maxTokenBytes+32+binary.MaxVarintLen64) < maxSize
}

func (p *postingBatch) empty() bool { return len(p.words) == 0 }

func (p *postingBatch) reset() {
	clear(p.offs)
	p.words, p.entries, p.size = p.words[:0], 0, 0
}

// set writes the batch's lists with set.
func (p *postingBatch) set(set func(k, v []byte) error) error {
	for _, w := range p.words {
		offs := p.offs[w]
		if err := set(postingKey(w, offs[0]), encodePostings(offs)); err != nil {
			return err
		}
	}
	return nil
}

// removeOffset returns offs without off (offs ascending), and whether it
// was there.
func removeOffset(offs []uint64, off uint64) ([]uint64, bool) {
	i, ok := slices.BinarySearch(offs, off)
	if !ok {
		return offs, false
	}
	return slices.Delete(offs, i, i+1), true
}
