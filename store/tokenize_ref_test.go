package store

import (
	"slices"
	"strings"
	"testing"
	"unicode"
	"unicode/utf8"
)

// tokenizeRef is the tokenizer as first written (one rune at a time through
// the unicode tables); tokenize must give exactly its tokens, since the
// postings on disk were written by it.
func tokenizeRef(s string, seen map[string]struct{}, dst []string, limit int) []string {
	var b strings.Builder
	runes := 0
	emit := func() {
		if runes >= minTokenRunes && b.Len() <= maxTokenBytes {
			t := b.String()
			if _, ok := seen[t]; !ok {
				seen[t] = struct{}{}
				dst = append(dst, t)
			}
		}
		b.Reset()
		runes = 0
	}
	for i := 0; i < len(s) && len(dst) < limit; {
		r, n := utf8.DecodeRuneInString(s[i:])
		i += n
		if unicode.IsLetter(r) || unicode.IsDigit(r) {
			if b.Len() <= maxTokenBytes {
				b.WriteRune(unicode.ToLower(r))
			}
			runes++
			continue
		}
		emit()
	}
	if len(dst) < limit {
		emit()
	}
	return dst
}

// checkTokenizeRef fails t if tokenize and tokenizeRef differ on s, with
// every limit up to a few tokens and the default.
func checkTokenizeRef(t *testing.T, s string) {
	t.Helper()
	for _, limit := range []int{1, 2, 3, maxTokensPerEnv} {
		got := tokenize(s, map[string]struct{}{}, nil, limit)
		want := tokenizeRef(s, map[string]struct{}{}, nil, limit)
		if !slices.Equal(got, want) {
			t.Fatalf("tokenize(%q, limit %d) = %q, want %q", trunc(s), limit, got, want)
		}
	}
}

func TestTokenizeMatchesReference(t *testing.T) {
	for _, s := range []string{
		"", "a", "ab", "Hello, WORLD! hello", "café 東京 CAFÉ", "x\xffy\xc3", "İstanbul ǅ ß ΣΑΣ",
		strings.Repeat("a", maxTokenBytes), strings.Repeat("a", maxTokenBytes+1), strings.Repeat("é", 32), strings.Repeat("é", 33),
		strings.Repeat("a", maxTokenBytes-1) + "É", strings.Repeat("a", maxTokenBytes) + "É", "ȺȺȺ" + strings.Repeat("b", 60),
		"abc+def/GHI=jkl_mno-pqr 123 4x 5", "a1 b2 a1 A1 ab AB aB",
	} {
		checkTokenizeRef(t, s)
	}
}
