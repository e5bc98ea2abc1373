package store

import (
	"strings"
	"testing"
	"unicode"
	"unicode/utf8"
)

// FuzzParseQuery feeds untrusted query strings (they come from clients
// through the gateway) to the query parser and the tokenizer, and checks
// that every word they produce obeys the tokenizer's rules, and that the
// tokenizer agrees with its reference implementation.
func FuzzParseQuery(f *testing.F) {
	for _, s := range []string{"hello", "hello world*", "Hello, WORLD!", "café 東京", "go*", "a b c", "", "   *", "w1 w2 w3 w4 w5 w6 w7 w8 w9", "x\xffy", strings.Repeat("ab", 40) + "*", "İstanbul ǅ ß"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		check := func(w string) {
			if utf8.RuneCountInString(w) < minTokenRunes || len(w) > maxTokenBytes {
				t.Fatalf("word %q breaks the length rules", w)
			}
			for _, r := range w {
				if !unicode.IsLetter(r) && !unicode.IsDigit(r) {
					t.Fatalf("word %q has %q", w, r)
				}
			}
		}
		checkTokenizeRef(t, s)
		toks := tokenize(s, map[string]struct{}{}, nil, maxTokensPerEnv)
		seen := map[string]bool{}
		for _, w := range toks {
			check(w)
			if seen[w] {
				t.Fatalf("word %q twice", w)
			}
			seen[w] = true
		}
		q, err := parseQuery(s)
		if err != nil {
			return
		}
		if len(q.terms) == 0 && q.prefix == "" || len(q.terms)+min(1, len(q.prefix)) > maxQueryTerms {
			t.Fatalf("parseQuery(%q) = %+v: bad word count", s, q)
		}
		for _, w := range q.terms {
			check(w)
		}
		if q.prefix != "" {
			check(q.prefix)
		}
	})
}
